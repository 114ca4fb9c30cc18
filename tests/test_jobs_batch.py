"""Several files per request against the real frontend and Triton: seed 003's `POST /transcribe` (files, keys,
lang; a failed file fails alone) and the OpenAI route's `audio_address` (a URL instead of `file`, through the
SSRF guard)."""
from __future__ import annotations

import httpx
import pytest

from tests.conftest import start_frontend
from tests.test_jobs import audio_host, job_env  # noqa: F401  (audio_host: a fixture)


@pytest.fixture(scope="module")
def batch_frontend(triton, tmp_path_factory, audio_host):
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("batch"),
                        **job_env(audio_host, FUNASR_TRITON_JOBS__MAX_FILES="3"))
    yield fe
    fe.stop()


def test_transcribe_several_files_in_order_one_failing_alone(batch_frontend, speech_wav):
    wav = speech_wav.read_bytes()
    files = [("files", ("a.wav", wav, "audio/wav")), ("files", ("broken.wav", b"RIFF nonsense" * 50, "audio/wav")),
             ("files", ("c.wav", wav, "audio/wav"))]
    with httpx.Client(base_url=batch_frontend.base_url, timeout=300) as c:
        direct = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav)}).json()["text"]
        r = c.post("/transcribe", files=files, data={"keys": "first,second,third", "lang": "zh"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"message", "processing_time", "results"} and body["processing_time"] > 0
        assert body["message"] == "1 of 3 files failed"
        first, second, third = body["results"]
        assert [x["key"] for x in body["results"]] == ["first", "second", "third"]
        assert first["status"] == third["status"] == "success" and first["text"] == third["text"] == direct
        assert first["language"] == "zh" and first["duration"] > 8 and first["segments"]
        assert all(s["start"] < s["end"] for s in first["segments"])
        assert second["status"] == "failed" and second["error"] and second["code"] == "bad_audio"
        # without keys the file names are the keys; lang defaults to auto
        named = c.post("/transcribe", files=files[:1]).json()
        assert named["message"] == "success" and named["results"][0]["key"] == "a.wav"


def test_transcribe_request_errors(batch_frontend, speech_wav):
    wav = speech_wav.read_bytes()
    with httpx.Client(base_url=batch_frontend.base_url, timeout=60) as c:
        def error(r, status):
            assert r.status_code == status, r.text
            body = r.json()
            assert body["results"] == [] and body["message"], body

        error(c.post("/transcribe", data={"lang": "zh"}, files={"other": ("x.txt", b"x")}), 400)
        error(c.post("/transcribe", files=[("files", ("a.wav", wav))], data={"keys": "a,b"}), 400)
        error(c.post("/transcribe", files=[("files", ("a.wav", wav))], data={"lang": "fr"}), 400)
        error(c.post("/transcribe", files=[("files", (f"{i}.wav", wav)) for i in range(4)]), 400)  # max_files 3


def test_openai_audio_address(batch_frontend, audio_host, speech_wav):
    with httpx.Client(base_url=batch_frontend.base_url, timeout=120) as c:
        direct = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", speech_wav.read_bytes())}).json()
        by_url = c.post("/v1/audio/transcriptions", data={"audio_address": f"{audio_host.url}/speech.wav"})
        assert by_url.status_code == 200, by_url.text
        assert by_url.json()["text"] == direct["text"]
        refused = c.post("/v1/audio/transcriptions", data={"audio_address": "http://10.0.0.1/a.wav"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "forbidden_url"
        missing = c.post("/v1/audio/transcriptions", data={"audio_address": f"{audio_host.url}/missing.wav"})
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "fetch_failed"
