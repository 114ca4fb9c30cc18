"""/ready requires exactly the models the settings use: against a real Triton serving a repository without
`streaming_asr` and `speaker_embedding`, with streaming and diarization on and off."""
from __future__ import annotations

import shutil

import httpx
import pytest

from tests.conftest import start_frontend, start_triton


@pytest.fixture(scope="module")
def partial_triton(repository, tmp_path_factory):
    """The exported test repository without `streaming_asr` and `speaker_embedding`."""
    repo = tmp_path_factory.mktemp("partial") / "model_repository"
    shutil.copytree(repository, repo, symlinks=True,
                    ignore=lambda d, names: [n for n in names if d == str(repository)
                                             and n in ("streaming_asr", "speaker_embedding")])
    handle = start_triton(repo, tmp_path_factory.mktemp("partial-logs"))
    yield handle
    handle.server.stop()


@pytest.mark.parametrize("streaming, diarization, missing", [
    ("true", "true", ["streaming_asr", "speaker_embedding"]),
    ("false", "true", ["speaker_embedding"]),
    ("true", "false", ["streaming_asr"]),
    ("false", "false", []),
])
def test_ready_names_the_missing_models(partial_triton, tmp_path, speech_wav, streaming, diarization, missing):
    fe = start_frontend(partial_triton.grpc_url, tmp_path, FUNASR_TRITON_STREAMING__ENABLED=streaming,
                        FUNASR_TRITON_DIARIZATION__ENABLED=diarization)
    try:
        r = httpx.get(fe.base_url + "/ready", timeout=30)
        body = r.json()
        assert r.status_code == (503 if missing else 200), body
        assert body.get("missing", []) == missing
        assert "pipeline" not in body["models"], "the frontend does not call `pipeline`"
        assert ("streaming_asr" in body["models"]) == (streaming == "true")
        assert ("speaker_embedding" in body["models"]) == (diarization == "true")
        if not missing:  # ready means it serves: a recording, and diarization refused as a parameter error
            with httpx.Client(base_url=fe.base_url, timeout=120) as c:
                wav = speech_wav.read_bytes()
                r = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav)}, data={"model": "whisper-1"})
                assert r.status_code == 200 and r.json()["text"], r.text
                r = c.post("/api", files={"audio": ("a.wav", wav)})
                assert r.status_code == 200 and r.json()["data"], r.text
                r = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav)},
                           data={"model": "whisper-1", "response_format": "diarized_json"})
                assert r.status_code == 400 and r.json()["error"]["code"] == "diarization_disabled", r.text
    finally:
        fe.stop()


def test_ready_with_every_model(frontend):
    r = httpx.get(frontend.base_url + "/ready", timeout=30)
    assert r.status_code == 200 and "missing" not in r.json()
    assert {"transcribe", "streaming_asr", "speaker_embedding"} <= set(r.json()["models"])
