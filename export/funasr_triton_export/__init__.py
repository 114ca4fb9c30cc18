"""Turns FunASR checkpoints into the Triton model repository (needs the `export` extra: torch, funasr)."""
