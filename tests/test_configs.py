"""Every config parses into Triton's ModelConfig protobuf and matches the ONNX graph it serves."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.conftest import ROOT

REPO = ROOT / "model_repository"
CONFIGS = sorted([*REPO.glob("*/config.pbtxt"), *REPO.glob("*/configs/*.pbtxt")])
ONNX_DTYPES = {onnx.TensorProto.FLOAT: mc.TYPE_FP32, onnx.TensorProto.INT32: mc.TYPE_INT32,
               onnx.TensorProto.INT64: mc.TYPE_INT64}
PROFILES = ("cpu-int8", "gpu-6gb", "gpu-8gb", "gpu-12gb", "gpu-16gb")


def parse(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_parses(path):
    cfg = parse(path)
    model_dir = path.parent if path.name == "config.pbtxt" else path.parent.parent
    assert cfg.name == model_dir.name
    assert cfg.backend in ("python", "onnxruntime") or cfg.platform == "ensemble"
    if cfg.backend == "python":
        assert (model_dir / "1" / "model.py").exists()
    for t in [*cfg.input, *cfg.output]:
        assert t.name and t.data_type != mc.TYPE_INVALID and len(t.dims) > 0


def test_every_profile_is_covered():
    """A profile name that exists for one model exists only where that model needs it;
    the others fall back to config.pbtxt (Triton's --model-config-name rule)."""
    names = {p.stem for p in REPO.glob("*/configs/*.pbtxt")}
    assert names <= set(PROFILES)
    for profile in PROFILES:
        assert (REPO / "paraformer" / "configs" / f"{profile}.pbtxt").exists()


def _onnx_tensors(graph_tensors):
    out = {}
    for t in graph_tensors:
        tt = t.type.tensor_type
        out[t.name] = (ONNX_DTYPES[tt.elem_type], len(tt.shape.dim))
    return out


@pytest.mark.parametrize("config_path", [REPO / "paraformer" / "config.pbtxt", *sorted((REPO / "paraformer" / "configs").glob("*.pbtxt"))],
                         ids=lambda p: p.name)
def test_paraformer_configs_match_onnx(repository, config_path):
    cfg = parse(config_path)
    filename = cfg.default_model_filename or next(
        (p.string_value for k, p in cfg.parameters.items() if k == "model_file"), "model.onnx")
    graph = onnx.load(str(repository / "paraformer" / "1" / filename), load_external_data=False).graph
    inputs, outputs = _onnx_tensors(graph.input), _onnx_tensors(graph.output)
    for tensors, graph_side in ((cfg.input, inputs), (cfg.output, outputs)):
        assert {t.name for t in tensors} == set(graph_side)
        for t in tensors:
            dtype, rank = graph_side[t.name]
            assert t.data_type == dtype, t.name
            # Triton rank = batch dim + dims (after reshape, when given)
            dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            assert len(dims) + (1 if cfg.max_batch_size > 0 else 0) == rank, t.name
    if cfg.backend == "onnxruntime":
        for w in cfg.model_warmup:
            for name, data in w.inputs.items():
                if data.input_data_file:
                    assert (config_path.parents[1] / "warmup" / data.input_data_file).exists()


@pytest.mark.parametrize("model,filename", [("punc", "model.onnx"), ("speaker_embedding", "model.onnx"), ("vad", "model.onnx")])
def test_python_stage_onnx_files_exist(repository, model, filename):
    assert (repository / model / "1" / filename).exists()


def test_ensemble_steps_match_composing_models():
    ens = parse(REPO / "asr" / "config.pbtxt")
    for step in ens.ensemble_scheduling.step:
        cfg = parse(REPO / step.model_name / "config.pbtxt")
        assert set(step.input_map) == {t.name for t in cfg.input}
        assert set(step.output_map) <= {t.name for t in cfg.output}
