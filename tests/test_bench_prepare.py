"""The bench reuses its exported repository only while it matches what the bench would export now."""
from __future__ import annotations

import json
from pathlib import Path

from funasr_triton_tools.bench_prepare import ASR_ORIGIN, STREAMING_ORIGIN, _requests, _stages_to_export
from funasr_triton_export.repository import STAGE_GRAPH_OUTPUTS


def _repo(tmp_path: Path, asr_outputs, requests: dict | None = None) -> Path:
    for rel in ("vad/1/model.onnx", "streaming_asr/1/vad/model.onnx", "paraformer/1/model_quant.onnx",
                "punc/1/model.onnx", "streaming_asr/1/paraformer/encoder_quant.onnx"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    stages = {"vad": {"quantize": True}, "punc": {"quantize": True},
              "asr": {"quantize": True, "origin": ASR_ORIGIN, "graph_outputs": asr_outputs},
              "streaming": {"quantize": True, "origin": STREAMING_ORIGIN}}
    for stage, request in (_requests(list(stages)) if requests is None else requests).items():
        stages[stage]["request"] = request
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"stages": stages}))
    return tmp_path


def test_current_export_is_reused(tmp_path):
    assert _stages_to_export(_repo(tmp_path, STAGE_GRAPH_OUTPUTS["asr"])) == []


def test_export_without_todays_graph_outputs_is_redone(tmp_path):
    """An asr exported before the graph gained token_logprobs made Triton refuse to load the bench repository."""
    old = [o for o in STAGE_GRAPH_OUTPUTS["asr"] if o != "token_logprobs"]
    assert _stages_to_export(_repo(tmp_path, old)) == ["asr"]
    assert _stages_to_export(_repo(tmp_path, None)) == ["asr"]


def test_weights_of_an_older_test_model_builder_are_redone(tmp_path):
    """The bench's test-large weights are exported again when their builder's VERSION moved on (SenseVoice's
    test BPE did), or when the export did not record it."""
    requests = _requests(["vad", "asr", "punc", "streaming"])
    assert "test_version" not in requests["vad"] and requests["asr"]["test_version"] >= 2
    requests["asr"] = {**requests["asr"], "test_version": requests["asr"]["test_version"] - 1}
    assert _stages_to_export(_repo(tmp_path, STAGE_GRAPH_OUTPUTS["asr"], requests)) == ["asr"]
    assert _stages_to_export(_repo(tmp_path, STAGE_GRAPH_OUTPUTS["asr"], {})) == ["asr", "punc", "streaming"]
