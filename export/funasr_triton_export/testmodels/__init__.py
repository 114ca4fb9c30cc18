"""Deterministic tiny random-weight FunASR models in hub layout, built from funasr's own classes.

They go through exactly the export path real checkpoints use; only their weights are random.
"""
