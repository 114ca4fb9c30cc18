"""Smoke test of the SenseVoice bench row (bench_sensevoice.py) on the tiny test model: every runtime
(served, AutoModel, funasr-onnx) measured on the same weights, and the rows rendered."""
from __future__ import annotations

import pytest


def test_bench_sensevoice_smoke(tmp_path):
    pytest.importorskip("funasr_onnx")
    from funasr_triton_tools.bench_sensevoice import rows, run

    result = run("test", seconds=4.0, n_clips=1, concurrencies=[1], work=tmp_path)
    served = result["served"]["concurrency"]["1"]
    for m in (served, result["automodel"], result["funasr_onnx"]):
        assert m["requests"] == 1 and m["audio_s"] > 3 and m["throughput_x"] > 0
    assert served["segments_per_request"] >= 1
    table = rows(result)
    assert len(table) == 2 + 3 and "served sensevoice (cpu)" in table[2] and "funasr-onnx" in table[-1]
