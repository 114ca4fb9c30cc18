"""DashScope async transcription driven by the official, unmodified `dashscope` SDK (base URL pointed at the
real frontend) against real Triton: Transcription.async_call, wait, fetch; the transcription_url document;
a task with a failing file; errors in DashScope's shape."""
from __future__ import annotations

import contextlib
import json

import httpx
import pytest

from tests.conftest import start_frontend
from tests.test_jobs import audio_host, job_env  # noqa: F401  (audio_host: a fixture)

dashscope = pytest.importorskip("dashscope")
from dashscope.audio.asr import Transcription  # noqa: E402

KEY = "dashscope-test-key"


@contextlib.contextmanager
def sdk_pointed_at(fe, key: str = KEY):
    """The unmodified dashscope SDK talking to `fe` (its module-level base URL and key), restored afterwards;
    the frontend is stopped on the way out."""
    old = dashscope.base_http_api_url
    dashscope.base_http_api_url = f"{fe.base_url}/api/v1"
    dashscope.api_key = key
    try:
        yield fe
    finally:
        dashscope.base_http_api_url = old
        fe.stop()


@pytest.fixture(scope="module")
def ds_frontend(triton, tmp_path_factory, audio_host):
    with sdk_pointed_at(start_frontend(triton.grpc_url, tmp_path_factory.mktemp("dashscope"),
                                       **job_env(audio_host, FUNASR_TRITON_AUTH__API_KEYS=json.dumps([KEY])))) as fe:
        yield fe


def test_async_call_wait_fetch_with_the_official_sdk(ds_frontend, audio_host):
    submitted = Transcription.async_call(model="paraformer-v2", file_urls=[f"{audio_host.url}/speech.wav"],
                                         language_hints=["zh"])
    assert submitted.status_code == 200, submitted
    task_id = submitted.output.task_id
    assert submitted.output.task_status == "PENDING"
    done = Transcription.wait(task=task_id)
    assert done.status_code == 200 and done.output.task_status == "SUCCEEDED", done
    fetched = Transcription.fetch(task=task_id)
    assert fetched.output.task_status == "SUCCEEDED"
    (result,) = fetched.output["results"]
    assert result["subtask_status"] == "SUCCEEDED" and result["file_url"] == f"{audio_host.url}/speech.wav"
    # the transcription_url is signed: a plain GET (no header), as clients fetch DashScope's result URLs
    doc = httpx.get(result["transcription_url"], timeout=30).json()
    assert doc["properties"]["original_duration_in_milliseconds"] > 8000
    (channel,) = doc["transcripts"]
    assert channel["channel_id"] == 0 and channel["text"]
    sentences = channel["sentences"]
    assert [s["sentence_id"] for s in sentences] == list(range(1, len(sentences) + 1))
    assert all(s["begin_time"] < s["end_time"] and s["words"] for s in sentences)
    assert sentences[-1]["words"][-1]["punctuation"]  # the sentence's closing punctuation on its last word
    unsigned = httpx.get(result["transcription_url"].split("?")[0], timeout=30)
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "InvalidApiKey"


def test_a_failing_file_fails_alone(ds_frontend, audio_host):
    submitted = Transcription.async_call(model="paraformer-v2", file_urls=[
        f"{audio_host.url}/missing.wav", f"{audio_host.url}/speech.wav"])
    done = Transcription.wait(task=submitted.output.task_id)
    assert done.output.task_status == "SUCCEEDED"
    bad, good = done.output["results"]
    assert bad["subtask_status"] == "FAILED" and bad["code"] and "transcription_url" not in bad
    assert good["subtask_status"] == "SUCCEEDED"
    assert done.output["task_metrics"] == {"TOTAL": 2, "SUCCEEDED": 1, "FAILED": 1}
    only_bad = Transcription.async_call(model="paraformer-v2", file_urls=[f"{audio_host.url}/missing.wav"])
    assert Transcription.wait(task=only_bad.output.task_id).output.task_status == "FAILED"


def test_errors_in_dashscope_shape(ds_frontend, audio_host):
    wrong = Transcription.async_call(model="paraformer-v2", file_urls=[f"{audio_host.url}/speech.wav"],
                                     api_key="wrong")
    assert wrong.status_code == 401 and wrong.code == "InvalidApiKey"
    unknown = Transcription.async_call(model="whisper-large", file_urls=[f"{audio_host.url}/speech.wav"])
    assert unknown.status_code == 400 and unknown.code == "InvalidParameter"
    assert Transcription.fetch(task="0" * 32).status_code == 404
    base = ds_frontend.base_url + "/api/v1/services/audio/asr/transcription"
    headers = {"Authorization": f"Bearer {KEY}"}
    sync = httpx.post(base, headers=headers, json={"model": "paraformer-v2", "input": {"file_urls": ["http://x/a"]}})
    assert sync.status_code == 400 and set(sync.json()) == {"request_id", "code", "message"}
    empty = httpx.post(base, headers={**headers, "X-DashScope-Async": "enable"},
                       json={"model": "paraformer-v2", "input": {"file_urls": []}})
    assert empty.status_code == 400 and empty.json()["code"] == "InvalidParameter"
