"""Hotword vocabularies stored on the server (`/v1/vocabularies`, in the job store) and named by `vocabulary_id`,
against the real frontend and Triton: CRUD, the hotword limits, an unknown id in each API's own error shape,
and the vocabulary's words reaching Triton as hotwords on every surface that resolves `vocabulary_id`.

Hotwords are proven applied as the other hotword tests do: the random-weight SeACo's bias branch changes the
text, so a request with the vocabulary gives the text of the same words given inline, not the plain text."""
from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from websockets.sync.client import connect

from tests.conftest import start_frontend
from tests.test_aliyun_api import assert_nls_error, assert_success, post
from tests.test_jobs import audio_host, job_env  # noqa: F401  (audio_host: a fixture)
from tests.test_jobs_dashscope import sdk_pointed_at
from tests.test_jobs_filetrans import ServerException, request, task
from tests.test_nls_ws import Speech, expect_task_failed, run_transcriber, start_message
from tests.test_openai_api import sdk
from tests.synth import SENTENCES

dashscope = pytest.importorskip("dashscope")
from aliyunsdkcore.client import AcsClient  # noqa: E402
from dashscope.audio.asr import Transcription  # noqa: E402

KEY = "vocab-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
WORDS = ["今天", "阿里巴巴"]
MAX_VOCABULARIES = 10
UNKNOWN = "vocab-" + "0" * 32


@pytest.fixture(scope="module")
def fe(triton, tmp_path_factory, audio_host):
    handle = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("vocabularies"),
                            **job_env(audio_host, FUNASR_TRITON_AUTH__API_KEYS=json.dumps([KEY]),
                                      FUNASR_TRITON_JOBS__MAX_VOCABULARIES=str(MAX_VOCABULARIES)))
    with sdk_pointed_at(handle, KEY):
        yield handle


@pytest.fixture(scope="module")
def http(fe):
    with httpx.Client(base_url=fe.base_url, headers=AUTH, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def vocab(http) -> str:
    """A stored vocabulary holding WORDS."""
    r = http.post("/v1/vocabularies", json={"name": "test", "prefix": "asr",
                                            "words": [{"text": w, "weight": 4, "lang": "zh"} for w in WORDS]})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def openai_error(r: httpx.Response, status: int, code: str, param: str | None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["param"] == param and err["message"], err
    return err


# ---- the registry -----------------------------------------------------------------------------------------------

def test_create_get_list_replace_delete(http):
    words = [{"text": "达摩院", "weight": 5, "lang": "zh"}, {"text": " 通义 ", "weight": -6}]
    r = http.post("/v1/vocabularies", json={"name": "crud", "prefix": "crud", "words": words})
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["id"].startswith("vocab-crud-") and len(v["id"]) == len("vocab-crud-") + 32
    assert v["object"] == "vocabulary" and v["name"] == "crud" and v["created_at"] == v["updated_at"] > 0
    assert v["words"] == [{"text": "达摩院", "weight": 5, "lang": "zh"}, {"text": "通义", "weight": -6, "lang": None}]
    assert http.get(f"/v1/vocabularies/{v['id']}").json() == v
    listed = http.get("/v1/vocabularies", params={"prefix": "crud"}).json()
    assert listed["object"] == "list" and [x["id"] for x in listed["data"]] == [v["id"]]
    assert v["id"] in [x["id"] for x in http.get("/v1/vocabularies").json()["data"]]

    replaced = http.put(f"/v1/vocabularies/{v['id']}", json={"words": [{"text": "魔搭"}, {"text": "魔搭"}]})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["words"] == [{"text": "魔搭", "weight": 4, "lang": None}]  # repeats dropped
    assert replaced.json()["name"] is None and replaced.json()["created_at"] == v["created_at"]
    assert http.get(f"/v1/vocabularies/{v['id']}").json()["words"] == replaced.json()["words"]

    gone = http.delete(f"/v1/vocabularies/{v['id']}")
    assert gone.status_code == 200 and gone.json() == {"id": v["id"], "object": "vocabulary.deleted", "deleted": True}
    for method in ("GET", "DELETE"):
        openai_error(http.request(method, f"/v1/vocabularies/{v['id']}"), 404, "vocabulary_not_found", "vocabulary_id")
    openai_error(http.put(f"/v1/vocabularies/{v['id']}", json={"words": [{"text": "x"}]}), 404,
                 "vocabulary_not_found", "vocabulary_id")
    assert http.get("/v1/vocabularies", params={"prefix": "crud"}).json()["data"] == []


def test_the_key_is_required(fe):
    r = httpx.post(fe.base_url + "/v1/vocabularies", json={"words": [{"text": "词"}]})
    openai_error(r, 401, "invalid_api_key", None)
    r = httpx.get(fe.base_url + "/v1/vocabularies", headers={"Authorization": "Bearer wrong"})
    openai_error(r, 401, "invalid_api_key", None)


@pytest.mark.parametrize("body, code, param", [
    ({"words": [{"text": f"词{i}"} for i in range(51)]}, "too_many_hotwords", "words"),  # limits.max_hotwords: 50
    ({"words": [{"text": "很" * 33}]}, "hotword_too_long", "words"),  # limits.max_hotword_chars: 32
    ({"words": []}, "invalid_request", "words"),
    ({"words": [{"text": "   "}]}, "invalid_request", "text"),
    ({"words": [{"text": "词", "weight": 6}]}, "invalid_request", "weight"),
    ({"words": [{"text": "词", "lang": "x" * 17}]}, "invalid_request", "lang"),
    ({"words": [{"text": "词", "boost": 1}]}, "invalid_request", "boost"),
    ({"words": [{"text": "词"}], "prefix": "Not-OK"}, "invalid_request", "prefix"),
], ids=["too-many", "too-long", "empty", "blank", "weight", "lang", "unknown-field", "prefix"])
def test_limits_and_bad_bodies(http, vocab, body, code, param):
    openai_error(http.post("/v1/vocabularies", json=body), 400, code, param)
    if "prefix" not in body:  # the same rules when replacing
        openai_error(http.put(f"/v1/vocabularies/{vocab}", json=body), 400, code, param)
    assert [w["text"] for w in http.get(f"/v1/vocabularies/{vocab}").json()["words"]] == WORDS


def test_fifty_words_of_32_characters_fit(http):
    words = [{"text": f"{i:02d}" + "词" * 30} for i in range(50)]
    r = http.post("/v1/vocabularies", json={"words": words})
    assert r.status_code == 201, r.text
    assert len(r.json()["words"]) == 50
    assert http.delete(f"/v1/vocabularies/{r.json()['id']}").status_code == 200


def test_the_number_of_vocabularies_is_capped(http, vocab):
    made = []
    try:
        while True:
            r = http.post("/v1/vocabularies", json={"words": [{"text": "词"}]})
            if r.status_code != 201:
                break
            made.append(r.json()["id"])
            assert len(made) <= MAX_VOCABULARIES, "jobs.max_vocabularies is not enforced"
        openai_error(r, 429, "too_many_vocabularies", None)
        assert len(http.get("/v1/vocabularies", params={"limit": 100}).json()["data"]) == MAX_VOCABULARIES
    finally:
        for vid in made:
            http.delete(f"/v1/vocabularies/{vid}")


# ---- Aliyun NLS REST ---------------------------------------------------------------------------------------------

def test_aliyun_rest_vocabulary_reaches_the_model(fe, vocab, speech_wav):
    wav = speech_wav.read_bytes()
    token = {"X-NLS-Token": KEY}
    plain = assert_success(post(fe.base_url, wav, token, format="wav"))
    inline = assert_success(post(fe.base_url, wav, token, format="wav", vocabulary_id="今天 20 阿里巴巴 15"))
    by_id = assert_success(post(fe.base_url, wav, token, format="wav", vocabulary_id=vocab))
    assert by_id["result"] == inline["result"] != plain["result"]


def test_aliyun_rest_unknown_id(fe, speech_wav):
    body = assert_nls_error(post(fe.base_url, speech_wav.read_bytes(), {"X-NLS-Token": KEY}, format="wav",
                                 vocabulary_id=UNKNOWN), 400, 40000003)
    assert UNKNOWN in body["message"]


# ---- NLS WebSocket ------------------------------------------------------------------------------------------------

def test_nls_websocket_vocabulary_reaches_the_model(fe, vocab):
    speech = Speech(0.5, SENTENCES[0], 1.6, SENTENCES[8], 1.2)
    url = fe.base_url.replace("http://", "ws://") + "/ws/v1"

    def finals(**ex) -> list[str]:
        rec = run_transcriber(url, speech.pcm, token=KEY, aformat="pcm", sample_rate=16000, ex=ex or None)
        assert not rec.of("TaskFailed"), rec.events
        return [m["payload"]["result"] for m in rec.of("SentenceEnd")]

    plain = finals()
    inline = finals(vocabulary_id=" ".join(WORDS))
    by_id = finals(vocabulary_id=vocab)
    assert by_id == inline != plain


def test_nls_websocket_unknown_id(fe):
    url = fe.base_url.replace("http://", "ws://") + "/ws/v1"
    with connect(url, additional_headers={"X-NLS-Token": KEY}) as ws:
        ws.send(start_message(vocabulary_id=UNKNOWN))
        message = expect_task_failed(ws, 40000003)
    assert UNKNOWN in message["header"]["status_text"]


# ---- OpenAI -------------------------------------------------------------------------------------------------------

def test_openai_vocabulary_reaches_the_model(fe, vocab, speech_wav):
    oai = sdk(fe.base_url, KEY)
    wav = speech_wav.read_bytes()
    plain = oai.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav))
    inline = oai.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), prompt=" ".join(WORDS))
    by_id = oai.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), extra_body={"vocabulary_id": vocab})
    assert by_id.text == inline.text != plain.text
    # both: the vocabulary's words, then the inline ones (repeats dropped) -> the same hotword list here
    both = oai.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), prompt="阿里巴巴",
                                           extra_body={"vocabulary_id": vocab})
    assert both.text == inline.text
    with pytest.raises(openai.BadRequestError) as exc:
        oai.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), extra_body={"vocabulary_id": UNKNOWN})
    assert exc.value.body["code"] == "vocabulary_not_found" and exc.value.body["param"] == "vocabulary_id"
    oai.close()


def test_openai_union_over_the_limit_is_400(fe, http, speech_wav):
    r = http.post("/v1/vocabularies", json={"words": [{"text": f"词{i}"} for i in range(30)]})
    assert r.status_code == 201, r.text
    try:
        files = {"file": ("a.wav", speech_wav.read_bytes(), "audio/wav")}
        data = {"model": "whisper-1", "vocabulary_id": r.json()["id"], "prompt": " ".join(f"字{i}" for i in range(30))}
        openai_error(http.post("/v1/audio/transcriptions", files=files, data=data), 400, "too_many_hotwords",
                     "hotwords")
    finally:
        http.delete(f"/v1/vocabularies/{r.json()['id']}")


def test_native_job_unknown_id(http, speech_wav):
    files = {"file": ("a.wav", speech_wav.read_bytes(), "audio/wav")}
    openai_error(http.post("/v1/jobs", files=files, data={"vocabulary_id": UNKNOWN}), 400, "vocabulary_not_found",
                 "vocabulary_id")


# ---- Alibaba FileTrans and DashScope jobs ---------------------------------------------------------------------------

def _acs(fe) -> AcsClient:
    return AcsClient(KEY, "any-secret", "cn-shanghai", port=httpx.URL(fe.base_url).port, auto_retry=False, timeout=60)


def _filetrans_submit(fe, task_: dict) -> dict:
    r = request(fe, "SubmitTask", "POST")
    r.add_body_params("Task", json.dumps(task_))
    return json.loads(_acs(fe).do_action_with_exception(r))


def _filetrans_wait(fe, task_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = request(fe, "GetTaskResult", "GET")
        r.add_query_param("TaskId", task_id)
        body = json.loads(_acs(fe).do_action_with_exception(r))
        if body["StatusText"] not in ("RUNNING", "QUEUEING"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.3)


def test_filetrans_vocabulary_reaches_the_model(fe, vocab, audio_host):
    def sentences(**extra) -> list[str]:
        body = _filetrans_wait(fe, _filetrans_submit(fe, task(audio_host, **extra))["TaskId"])
        assert body["StatusText"] == "SUCCESS", body
        return [s["Text"] for s in body["Result"]["Sentences"]]

    assert sentences(vocabulary_id=vocab) != sentences()
    with pytest.raises(ServerException) as exc:
        _filetrans_submit(fe, task(audio_host, vocabulary_id=UNKNOWN))
    assert exc.value.get_error_code() == "REQUEST_PARAMETER_INVALID" and exc.value.get_http_status() == 400
    assert UNKNOWN in exc.value.get_error_msg()


def test_dashscope_vocabulary_reaches_the_model(fe, vocab, audio_host):
    url = f"{audio_host.url}/speech.wav"

    def text(**extra) -> str:
        submitted = Transcription.async_call(model="paraformer-v2", file_urls=[url], **extra)
        assert submitted.status_code == 200, submitted
        done = Transcription.wait(task=submitted.output.task_id)
        assert done.output.task_status == "SUCCEEDED", done
        doc = httpx.get(done.output["results"][0]["transcription_url"], timeout=30).json()
        return doc["transcripts"][0]["text"]

    assert text(vocabulary_id=vocab) != text()
    unknown = Transcription.async_call(model="paraformer-v2", file_urls=[url], vocabulary_id=UNKNOWN)
    assert unknown.status_code == 400 and unknown.code == "InvalidParameter", unknown
    assert UNKNOWN in unknown.message
