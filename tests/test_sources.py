"""Model sources: ModelScope path up to the network call, local dirs, clear refusals."""
from __future__ import annotations

import subprocess

import pytest

from funasr_triton_export.sources import HF_IDS, MODELSCOPE_IDS, SPEAKER_MODELS, SourceError, download, resolve
from tests.conftest import BIN, ROOT


def test_default_ids_are_funasr_names():
    assert MODELSCOPE_IDS["paraformer-zh"] == "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch"
    assert set(MODELSCOPE_IDS) >= {"paraformer-zh", "fsmn-vad", "ct-punc", "ct-punc-c", "cam++"}


def test_modelscope_download_is_attempted_and_refused_clearly(tmp_path):
    """The real ModelScope client is called; on these offline machines it fails with our advice."""
    with pytest.raises(SourceError, match=r"--model-dir fsmn-vad=/path/to/dir") as info:
        download("fsmn-vad", tmp_path)
    assert MODELSCOPE_IDS["fsmn-vad"] in str(info.value)


def test_local_dir_without_config_is_refused(tmp_path):
    with pytest.raises(SourceError, match="config.yaml"):
        resolve("modelscope", ["asr"], {"asr": tmp_path}, tmp_path)


def test_export_cli_names_the_fix(tmp_path):
    out = subprocess.run([str(BIN / "funasr-triton"), "export", "--stages", "asr", "--model-dir", f"paraformer-zh={tmp_path}",
                          "--repository", str(tmp_path / "repo")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "config.yaml" in out.stderr


def test_pyannote_download_is_attempted_and_refused_clearly(tmp_path):
    """--speaker-model pyannote without --model-dir: the real huggingface_hub client is called."""
    with pytest.raises(SourceError, match=r"--model-dir speaker=/path/to/dir") as info:
        resolve("modelscope", ["speaker"], {}, tmp_path, {"speaker": SPEAKER_MODELS["pyannote"]})
    assert HF_IDS["pyannote"] == "pyannote/wespeaker-voxceleb-resnet34-LM"
    assert HF_IDS["pyannote"] in str(info.value) and "Hugging Face" in str(info.value)


def test_pyannote_local_dir_needs_the_checkpoint(tmp_path):
    (tmp_path / "config.yaml").write_text("model: {}\n")
    with pytest.raises(SourceError, match="pytorch_model.bin"):
        resolve("modelscope", ["speaker"], {"speaker": tmp_path}, tmp_path, {"speaker": "pyannote"})


def test_cached_test_model_is_rebuilt_when_its_builder_version_changes(tmp_path, monkeypatch):
    """build_test_model keys its cache on the builder's VERSION (no stamp: version 1)."""
    import json

    from funasr_triton_export import sources
    from funasr_triton_export.testmodels import ct_punc

    builds = []

    def fake_build(target, **kwargs):
        builds.append(target)
        (target / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
        (target / "config.yaml").write_text("model: {}\n")

    monkeypatch.setattr(ct_punc, "build", fake_build)
    (tmp_path / "punc").mkdir()
    (tmp_path / "punc" / "config.yaml").write_text("model: {}\n")  # built before stamps existed
    sources.build_test_model("punc", tmp_path)
    assert builds == []
    monkeypatch.setattr(ct_punc, "VERSION", 2, raising=False)
    sources.build_test_model("punc", tmp_path)
    assert builds == [tmp_path / "punc"]
    assert json.loads((tmp_path / "punc" / sources.BUILD_STAMP).read_text())["version"] == 2
    sources.build_test_model("punc", tmp_path)
    assert len(builds) == 1
