"""The seed-compatible `POST /api` (FunASR + pyannote call-centre shape) with plain httpx against the real
frontend and Triton: the exact shape, times in seconds consistent with the recognised sentences, errors, auth."""
from __future__ import annotations

import wave

import httpx
import pytest

from tests.conftest import start_frontend
from tests.synth import SENTENCES, compose, write_wav

LINE_KEYS = {"line", "speaker", "start_time", "end_time", "text"}
SMALL_LIMIT = 50000


def post(base_url: str, files: dict | None = None, headers: dict | None = None, **kwargs) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=120) as c:
        return c.post("/api", files=files, headers=headers, **kwargs)


def assert_ok(r: httpx.Response) -> list[dict]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["code", "msg", "data"]
    assert body["code"] == 0 and body["msg"] == "ok"
    return body["data"]


def assert_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["code", "msg", "data"]
    assert body["code"] == status and body["msg"] and body["data"] == []
    return body


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory):
    """1.4 s of speech as a wav file (~45 kB, under SMALL_LIMIT)."""
    return write_wav(tmp_path_factory.mktemp("seed") / "short.wav", compose(SENTENCES[4])[:22400])


@pytest.fixture(scope="module")
def guarded(triton, tmp_path_factory):
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("seed-guarded"),
                        FUNASR_TRITON_AUTH__API_KEYS='["k1"]', FUNASR_TRITON_LIMITS__MAX_UPLOAD_BYTES=str(SMALL_LIMIT))
    yield fe
    fe.stop()


def test_shape_and_times(frontend, speech_wav):
    body = speech_wav.read_bytes()
    with wave.open(str(speech_wav), "rb") as w:
        duration_s = w.getnframes() / w.getframerate()
    data = assert_ok(post(frontend.base_url, {"audio": ("call.wav", body, "audio/wav")}))
    assert len(data) >= 2, "three spoken sentences with pauses"
    for i, line in enumerate(data, start=1):
        assert set(line) == LINE_KEYS
        assert line["line"] == i
        assert line["speaker"] == "SPEAKER_00", "no diarisation: the one unknown speaker"
        assert isinstance(line["start_time"], float) and isinstance(line["end_time"], float)
        assert round(line["start_time"], 3) == line["start_time"] and round(line["end_time"], 3) == line["end_time"]
        assert 0 <= line["start_time"] <= line["end_time"] <= duration_s + 0.1
        assert line["text"]
    assert all(a["end_time"] <= b["start_time"] for a, b in zip(data, data[1:]))

    # the same sentences (ms) as the NLS surface reports them, punctuated
    with httpx.Client(base_url=frontend.base_url, timeout=120) as c:
        nls = c.post("/stream/v1/asr", params={"format": "wav", "enable_punctuation_prediction": "true"},
                     content=body).json()
    assert [(s["begin_time"] / 1000, s["end_time"] / 1000, s["text"]) for s in nls["sentences"]] == \
           [(d["start_time"], d["end_time"], d["text"]) for d in data]

    # `file` is accepted as the field name too
    assert assert_ok(post(frontend.base_url, {"file": ("call.wav", body)})) == data


BAD_INPUTS = {
    # name: (httpx post kwargs, HTTP status)
    "missing_field": ({"files": {"recording": ("a.wav", b"RIFF....")}}, 400),
    "form_without_file": ({"data": {"audio": "not a file"}, "files": {"other": ("x.txt", b"x")}}, 400),
    "empty_file": ({"files": {"audio": ("a.wav", b"")}}, 400),
    "text_file": ({"files": {"audio": ("notes.txt", b"call notes: customer asked about billing\n" * 10, "text/plain")}},
                  400),
    "not_multipart": ({"content": b"\x00" * 3200, "headers": {"Content-Type": "application/octet-stream"}}, 400),
    "broken_multipart": ({"content": b"--xx\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--xx--\r\n",
                          "headers": {"Content-Type": "multipart/form-data; boundary=xx"}}, 400),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input(frontend, short_wav, name):
    kwargs, status = BAD_INPUTS[name]
    assert_error(post(frontend.base_url, **kwargs), status)
    assert_ok(post(frontend.base_url, {"audio": ("a.wav", short_wav.read_bytes())}))


def test_auth_and_upload_limit(guarded, short_wav):
    base, audio = guarded.base_url, {"audio": ("a.wav", short_wav.read_bytes())}
    assert len(short_wav.read_bytes()) < SMALL_LIMIT
    assert_error(post(base, audio), 401)
    assert_error(post(base, audio, {"Authorization": "Bearer k2"}), 401)
    assert_ok(post(base, audio, {"Authorization": "Bearer k1"}))
    assert_ok(post(base, audio, {"X-NLS-Token": "k1"}))
    assert_ok(post(base, audio, params={"token": "k1"}))
    big = {"audio": ("a.wav", short_wav.read_bytes() * 3)}
    assert_error(post(base, big, {"Authorization": "Bearer k1"}), 413)
    assert_ok(post(base, audio, {"Authorization": "Bearer k1"}))


def test_hotwords_field(frontend, speech_wav):
    audio = {"audio": ("call.wav", speech_wav.read_bytes())}
    plain = assert_ok(post(frontend.base_url, audio))
    biased = assert_ok(post(frontend.base_url, audio, data={"hotwords": "今天 20 阿里巴巴 15"}))
    # random-weight SeACo: the bias branch replaces tokens, so the text changes
    assert [d["text"] for d in biased] != [d["text"] for d in plain]
