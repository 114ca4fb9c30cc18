"""Model sources: ModelScope path up to the network call, local dirs, clear refusals."""
from __future__ import annotations

import subprocess

import pytest

from funasr_triton_export.sources import HF_IDS, MODELSCOPE_IDS, SourceError, resolve
from tests.conftest import BIN, ROOT


def test_default_ids_are_funasr_names():
    assert MODELSCOPE_IDS["paraformer-zh"] == "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch"
    assert set(MODELSCOPE_IDS) >= {"paraformer-zh", "fsmn-vad", "ct-punc", "ct-punc-c", "cam++"}


class DeadHub:
    """A TCP server on loopback that records each connection and closes it unanswered: the hub endpoints
    (MODELSCOPE_DOMAIN, HF_ENDPOINT) and every proxy variable point here, so the download fails the same way
    whether or not this machine has internet, and nothing leaves it."""

    def __init__(self):
        import socket
        import threading

        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def env(self) -> dict:
        import os

        hub = f"127.0.0.1:{self.port}"
        proxy = f"http://{hub}"
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "hf_hub_offline", "modelscope_domain")}
        env.update(MODELSCOPE_DOMAIN=hub, HF_ENDPOINT=f"http://{hub}", HF_HUB_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1",
                   HTTP_PROXY=proxy, HTTPS_PROXY=proxy, ALL_PROXY=proxy, http_proxy=proxy, https_proxy=proxy,
                   all_proxy=proxy, NO_PROXY="", no_proxy="")
        return env

    def close(self):
        self.sock.close()


@pytest.fixture()
def dead_hub():
    hub = DeadHub()
    yield hub
    hub.close()


def _download_error(code: str, env: dict) -> str:
    """Run a download in a fresh interpreter (the hub clients read their endpoints at import) -> the SourceError."""
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert out.returncode == 3, out.stdout + out.stderr[-3000:]
    return out.stdout


def test_modelscope_download_is_attempted_and_refused_clearly(tmp_path, dead_hub):
    """The real ModelScope client is called against a hub that fails; the error carries our advice."""
    message = _download_error(
        "import sys; from pathlib import Path; from funasr_triton_export.sources import download, SourceError\n"
        f"try: download('fsmn-vad', Path({str(tmp_path)!r}))\n"
        "except SourceError as e: print(e); sys.exit(3)", dead_hub.env())
    assert "--model-dir fsmn-vad=/path/to/dir" in message and MODELSCOPE_IDS["fsmn-vad"] in message
    assert dead_hub.connections > 0, "the download did not go to the stubbed hub"


def test_local_dir_without_config_is_refused(tmp_path):
    with pytest.raises(SourceError, match="config.yaml"):
        resolve("modelscope", ["asr"], {"asr": tmp_path}, tmp_path)


def test_export_cli_names_the_fix(tmp_path):
    out = subprocess.run([str(BIN / "funasr-triton"), "export", "--stages", "asr", "--model-dir", f"paraformer-zh={tmp_path}",
                          "--repository", str(tmp_path / "repo")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "config.yaml" in out.stderr


def test_pyannote_download_is_attempted_and_refused_clearly(tmp_path, dead_hub):
    """--speaker-model pyannote without --model-dir: the real huggingface_hub client is called (stubbed hub)."""
    message = _download_error(
        "import sys; from pathlib import Path; from funasr_triton_export.sources import resolve, SourceError, "
        "SPEAKER_MODELS\n"
        f"try: resolve('modelscope', ['speaker'], {{}}, Path({str(tmp_path)!r}), {{'speaker': SPEAKER_MODELS['pyannote']}})\n"
        "except SourceError as e: print(e); sys.exit(3)", dead_hub.env())
    assert HF_IDS["pyannote"] == "pyannote/wespeaker-voxceleb-resnet34-LM"
    assert "--model-dir speaker=/path/to/dir" in message
    assert HF_IDS["pyannote"] in message and "Hugging Face" in message
    assert dead_hub.connections > 0, "the download did not go to the stubbed hub"


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
