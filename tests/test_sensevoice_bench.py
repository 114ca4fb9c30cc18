"""Smoke test of the SenseVoice bench row (bench_sensevoice.py) on the tiny test model: every runtime
(served, AutoModel, funasr-onnx) measured on the same weights, decoding the same VAD segments and counting
the same units, and the rows rendered."""
from __future__ import annotations

import pytest


def test_bench_sensevoice_smoke(tmp_path):
    pytest.importorskip("funasr_onnx")
    from funasr_triton_tools.bench_sensevoice import rows, run

    result = run("test", seconds=8.0, n_clips=2, concurrencies=[1], work=tmp_path)
    served = result["served"]["concurrency"]["1"]
    for m in (served, result["automodel"], result["funasr_onnx"]):
        assert m["requests"] == 2 and m["audio_s"] > 7 and m["throughput_x"] > 0
    # like for like: the same segments decoded, the same units counted (tags out of every text)
    same = result["like_for_like"]
    assert same["served"]["segments_per_request"] >= 1
    assert same["served"]["segments_per_request"] == same["automodel"]["segments_per_request"] \
        == same["funasr_onnx"]["segments_per_request"], same
    units = same["served"]["units_per_request"]
    assert units > 0
    # the same units: equal but for a rare argmax near-tie between torch and onnxruntime (random weights)
    for name in ("automodel", "funasr_onnx"):
        assert abs(same[name]["units_per_request"] - units) <= max(2.0, 0.02 * units), same
    assert "<|" not in result["automodel"]["sample_text"] + result["funasr_onnx"]["sample_text"]
    assert result["machine"]["cpu"] and len(result["load_average_at_start"]) == 3
    table = rows(result)
    assert len(table) == 2 + 3 and "served sensevoice (cpu)" in table[2] and "funasr-onnx" in table[-1]
