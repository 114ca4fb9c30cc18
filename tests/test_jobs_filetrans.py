"""Alibaba FileTrans (录音文件识别) driven by the official, unmodified `aliyun-python-sdk-core` (`AcsClient` +
`CommonRequest`, domain = the real frontend, http) against real Triton: SubmitTask, GetTaskResult until
SUCCESS, Sentences/Words in ms, a download failure, the callback through the SSRF guard, bad tasks, and
the demo page and FunASR WebSocket on `/` still working."""
from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import start_frontend
from tests.test_jobs import audio_host, job_env  # noqa: F401  (audio_host: a fixture)

aliyunsdkcore = pytest.importorskip("aliyunsdkcore")
from aliyunsdkcore.acs_exception.exceptions import ServerException  # noqa: E402
from aliyunsdkcore.client import AcsClient  # noqa: E402
from aliyunsdkcore.request import CommonRequest  # noqa: E402

KEY = "filetrans-test-key"


@pytest.fixture(scope="module")
def filetrans_frontend(triton, tmp_path_factory, audio_host):
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("filetrans"),
                        **job_env(audio_host, FUNASR_TRITON_AUTH__API_KEYS=json.dumps([KEY])))
    yield fe
    fe.stop()


def acs(fe, key: str = KEY) -> AcsClient:
    return AcsClient(key, "any-secret", "cn-shanghai", port=urlsplit(fe.base_url).port, auto_retry=False, timeout=60)


def request(fe, action: str, method: str) -> CommonRequest:
    r = CommonRequest()
    r.set_domain("127.0.0.1")
    r.set_version("2018-08-17")
    r.set_product("nls-filetrans")
    r.set_action_name(action)
    r.set_method(method)
    return r


def submit(fe, task: dict, key: str = KEY) -> dict:
    r = request(fe, "SubmitTask", "POST")
    r.add_body_params("Task", json.dumps(task))
    return json.loads(acs(fe, key).do_action_with_exception(r))


def get_result(fe, task_id: str) -> dict:
    r = request(fe, "GetTaskResult", "GET")
    r.add_query_param("TaskId", task_id)
    return json.loads(acs(fe).do_action_with_exception(r))


def wait_result(fe, task_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    seen = set()
    while True:
        body = get_result(fe, task_id)
        seen.add(body["StatusText"])
        if body["StatusText"] not in ("RUNNING", "QUEUEING"):
            body["_seen"] = seen
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.3)


def task(audio_host, path="/speech.wav", **extra) -> dict:
    return {"appkey": "test-appkey", "file_link": f"{audio_host.url}{path}", "version": "4.0", **extra}


def test_submit_and_get_result_with_the_official_sdk(filetrans_frontend, audio_host):
    reply = submit(filetrans_frontend, task(audio_host, enable_words=True))
    assert reply["StatusCode"] == 21050000 and reply["StatusText"] == "SUCCESS"
    assert len(reply["TaskId"]) == 32 and reply["RequestId"]
    body = wait_result(filetrans_frontend, reply["TaskId"])
    assert body["StatusCode"] == 21050000 and body["StatusText"] == "SUCCESS", body
    assert body["TaskId"] == reply["TaskId"] and body["BizDuration"] > 8000
    sentences = body["Result"]["Sentences"]
    assert len(sentences) >= 2 and all(s["Text"] for s in sentences)
    assert all(0 <= s["BeginTime"] < s["EndTime"] <= body["BizDuration"] for s in sentences)
    assert [s["BeginTime"] for s in sentences] == sorted(s["BeginTime"] for s in sentences)
    assert all(s["ChannelId"] == 0 and s["SpeechRate"] > 0 for s in sentences)
    words = body["Result"]["Words"]
    assert words and all(w["Word"] and w["BeginTime"] <= w["EndTime"] for w in words)
    assert sentences[0]["BeginTime"] <= words[0]["BeginTime"] < sentences[0]["EndTime"]
    # without enable_words there is no Words list
    plain = wait_result(filetrans_frontend, submit(filetrans_frontend, task(audio_host))["TaskId"])
    assert plain["StatusText"] == "SUCCESS" and "Words" not in plain["Result"]
    assert [s["Text"] for s in plain["Result"]["Sentences"]] == [s["Text"] for s in sentences]


def test_download_failure_is_41050002(filetrans_frontend, audio_host):
    reply = submit(filetrans_frontend, task(audio_host, "/missing.wav"))
    body = wait_result(filetrans_frontend, reply["TaskId"])
    assert body["StatusCode"] == 41050002 and body["StatusText"] == "FILE_DOWNLOAD_FAILED", body
    bad = wait_result(filetrans_frontend, submit(filetrans_frontend, task(audio_host, "/noise.wav"))["TaskId"])
    assert bad["StatusCode"] == 41050006, bad


def test_callback_posts_the_result(filetrans_frontend, audio_host):
    audio_host.posts.clear()
    reply = submit(filetrans_frontend, task(audio_host, enable_callback=True,
                                            callback_url=f"{audio_host.url}/callback?x=1"))
    body = wait_result(filetrans_frontend, reply["TaskId"])
    deadline = time.monotonic() + 30
    while not audio_host.posts:
        assert time.monotonic() < deadline, "no callback"
        time.sleep(0.2)
    path, headers, raw = audio_host.posts[0]
    posted = json.loads(raw)
    assert path == "/callback?x=1" and headers["Content-Type"] == "application/json"
    assert posted["TaskId"] == reply["TaskId"] and posted["StatusCode"] == 21050000
    assert posted["Result"] == body["Result"] and posted["RequestTime"] > 0


def test_bad_tasks_and_keys_raise_server_exceptions(filetrans_frontend, audio_host):
    def refused(task_: dict, code: str, key: str = KEY):
        with pytest.raises(ServerException) as exc:
            submit(filetrans_frontend, task_, key)
        assert exc.value.get_error_code() == code, exc.value

    refused(task(audio_host), "INVALID_ACCESS_KEY", key="wrong-key")
    refused({**task(audio_host), "appkey": ""}, "REQUEST_EMPTY_APPKEY_VALUE")
    refused({**task(audio_host), "file_link": "ftp://x/a.wav"}, "REQUEST_INVALID_FILE_URL_VALUE")
    # the callback goes through the SSRF guard: a private address that is not allow-listed is refused
    refused(task(audio_host, enable_callback=True, callback_url="http://10.1.2.3/cb"), "REQUEST_INVALID_CALLBACK_VALUE")
    refused(task(audio_host, enable_callback=True), "REQUEST_INVALID_CALLBACK_VALUE")
    with pytest.raises(ServerException) as exc:
        get_result(filetrans_frontend, "0" * 32)
    assert exc.value.get_http_status() == 404


def test_root_still_serves_the_demo_and_the_funasr_websocket(filetrans_frontend):
    page = httpx.get(filetrans_frontend.base_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert httpx.post(filetrans_frontend.base_url + "/", params={"Action": "SubmitTask"}).status_code == 401
    import asyncio

    import websockets

    async def ws():
        url = filetrans_frontend.base_url.replace("http", "ws") + f"/?token={KEY}"
        async with websockets.connect(url) as conn:
            await conn.send(json.dumps({"mode": "offline", "wav_name": "x", "is_speaking": True}))
            await conn.send(json.dumps({"is_speaking": False}))
            return json.loads(await asyncio.wait_for(conn.recv(), 60))

    assert asyncio.run(ws())["wav_name"] == "x"


def test_word_times_asked_for_only_with_enable_words():
    """The job asks Triton for word timestamps only when the result will list Words (a long recording's words are
    its O(length) part); the seed's /transcribe, whose results have segments only, never asks for them."""
    import asyncio
    from types import SimpleNamespace

    from funasr_triton.app.config import Settings
    from funasr_triton.filetrans_api.serving import job_of
    from funasr_triton.seed_api.serving import batch_options

    settings = Settings.model_validate({"audio": {"url_fetch_enabled": True}})
    service = SimpleNamespace(settings=settings, merged_hotwords=lambda words: words,
                              check_model=lambda name: "paraformer")
    for enable_words in (True, False):
        raw = json.dumps({"appkey": "k", "file_link": "https://example.com/a.wav", "enable_words": enable_words})
        params, _ = asyncio.run(job_of(SimpleNamespace(state=SimpleNamespace()), service, raw))
        assert params["options"]["timestamps"] is enable_words

    async def require_model(model, name):
        return None

    service.require_model = require_model
    options, _ = asyncio.run(batch_options(service, None, "auto", None))
    assert options.timestamps is False
