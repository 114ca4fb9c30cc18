"""Alibaba NLS REST `POST /stream/v1/asr` with plain httpx against the real frontend and Triton:
the envelope exactly as NLS clients read it, raw PCM and containers, the flags, bad input, URL audio, auth."""
from __future__ import annotations

import http.server
import re
import threading
import wave
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_frontend
from tests.synth import SENTENCES, compose, convert

ASR = "/stream/v1/asr"
OCTET = {"Content-Type": "application/octet-stream"}
TASK_ID = re.compile(r"[0-9a-f]{32}")
PUNCTUATION = "，。？！、,.?!"
NLS_KEYS = ["task_id", "result", "status", "message"]
SMALL_LIMIT = 50000


def pcm_of(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())


def post(base_url: str, body: bytes = b"", headers: dict | None = None, **params) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=120) as c:
        return c.post(ASR, params=params, content=body, headers={**OCTET, **(headers or {})})


def assert_success(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    body = r.json()
    assert TASK_ID.fullmatch(r.headers["task_id"])
    assert body["task_id"] == r.headers["task_id"]
    assert body["status"] == 20000000 and body["message"] == "SUCCESS"
    assert isinstance(body["result"], str)
    assert list(body)[:4] == NLS_KEYS, "Alibaba's fields come first; extensions are only added after them"
    assert set(body) - set(NLS_KEYS) <= {"confidence", "duration_ms", "processing_ms", "sentences"}
    return body


def assert_nls_error(r: httpx.Response, http_status: int, status: int) -> dict:
    assert r.status_code == http_status, r.text
    body = r.json()
    assert list(body) == NLS_KEYS, body
    assert body["status"] == status and body["result"] == "" and body["message"], body
    assert TASK_ID.fullmatch(body["task_id"]) and r.headers["task_id"] == body["task_id"]
    return body


@pytest.fixture(scope="module")
def short_pcm() -> bytes:
    """1.5 s of 16 kHz s16le speech: 48000 bytes, under SMALL_LIMIT."""
    samples = compose(SENTENCES[3])[:24000]
    return (samples.clip(-1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def reference(frontend, speech_wav) -> dict:
    """speech_wav as format=wav with default flags."""
    return assert_success(post(frontend.base_url, speech_wav.read_bytes(), format="wav", sample_rate=16000,
                               appkey="any-appkey"))


@pytest.fixture(scope="module")
def guarded(triton, tmp_path_factory):
    """API key k1 required, uploads of at most SMALL_LIMIT bytes."""
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("aliyun-guarded"),
                        FUNASR_TRITON_AUTH__API_KEYS='["k1"]', FUNASR_TRITON_LIMITS__MAX_UPLOAD_BYTES=str(SMALL_LIMIT))
    yield fe
    fe.stop()


class Canary:
    """An HTTP server on loopback (IPv4 and, where possible, IPv6 on the same port) that records every request:
    a refused URL must not reach it at all."""

    def __init__(self):
        import socket

        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class V6Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6

        self.servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)]
        self.port = self.servers[0].server_address[1]
        try:
            self.servers.append(V6Server(("::1", self.port), Handler))
        except OSError:
            pass
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def canary():
    c = Canary()
    yield c
    c.close()


@pytest.fixture(scope="module")
def audio_host(speech_wav, canary):
    """A local HTTP server: /speech.wav, /redirect -> the canary, /redirect-metadata -> the cloud metadata address."""
    body = speech_wav.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/speech.wav":
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path in ("/redirect", "/redirect-metadata"):
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{canary.port}/redirected.wav"
                                 if self.path == "/redirect" else "http://169.254.169.254/latest/meta-data/")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fetching(triton, tmp_path_factory, audio_host):
    """URL fetch on, only the audio host's host:port allow-listed: every other private, loopback or link-local
    target is refused, other ports of the allow-listed host included."""
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("aliyun-fetch"),
                        FUNASR_TRITON_AUDIO__URL_FETCH_ENABLED="true",
                        FUNASR_TRITON_AUDIO__URL_ALLOWED_HOSTS=f'["{audio_host.removeprefix("http://")}"]')
    yield fe
    fe.stop()


def test_success_envelope(reference, speech_wav):
    body = reference
    assert body["result"], "spoken audio gives text"
    assert not any(ch in body["result"] for ch in PUNCTUATION), "enable_punctuation_prediction defaults to false"
    with wave.open(str(speech_wav), "rb") as w:
        duration_ms = w.getnframes() * 1000 // w.getframerate()
    assert body["duration_ms"] == duration_ms
    assert isinstance(body["processing_ms"], int) and body["processing_ms"] >= 0
    sentences = body["sentences"]
    assert len(sentences) >= 2, "three spoken sentences with pauses"
    prev_end = 0
    for s in sentences:
        assert set(s) == {"text", "begin_time", "end_time", "confidence"}, "no words unless asked, no speaker unless known"
        assert 0 < s["confidence"] <= 1
        assert isinstance(s["begin_time"], int) and isinstance(s["end_time"], int)
        assert prev_end <= s["begin_time"] <= s["end_time"] <= duration_ms + 100
        assert s["text"] and s["text"] in body["result"]
        prev_end = s["end_time"]


def test_raw_pcm_16k_8k_and_sniffed(frontend, speech_wav, reference, tmp_path):
    pcm16 = pcm_of(speech_wav)
    body = assert_success(post(frontend.base_url, pcm16, format="pcm", sample_rate=16000))
    assert body["result"] == reference["result"], "the same samples as raw PCM and as wav"
    assert body["duration_ms"] == reference["duration_ms"]
    # no `format`: Alibaba's default (pcm) for headerless bytes, decoded by content for a wav header
    assert assert_success(post(frontend.base_url, pcm16))["result"] == reference["result"]
    assert assert_success(post(frontend.base_url, speech_wav.read_bytes()))["result"] == reference["result"]

    pcm8 = convert(speech_wav, tmp_path / "speech8k.raw", "-f", "s16le", "-ar", "8000", "-ac", "1").read_bytes()
    body = assert_success(post(frontend.base_url, pcm8, format="pcm", sample_rate=8000))
    assert body["result"]
    assert abs(body["duration_ms"] - reference["duration_ms"]) <= 2, "8 kHz PCM read at its own rate"


def test_mp3_by_content(frontend, speech_wav, reference, tmp_path):
    mp3 = convert(speech_wav, tmp_path / "speech.mp3", "-b:a", "64k").read_bytes()
    body = assert_success(post(frontend.base_url, mp3, format="mp3", sample_rate=16000))
    assert body["result"] and len(body["sentences"]) >= 2
    assert abs(body["duration_ms"] - reference["duration_ms"]) < 150


def test_punctuation_flag(frontend, speech_wav, reference):
    body = assert_success(post(frontend.base_url, speech_wav.read_bytes(), format="wav",
                               enable_punctuation_prediction="true", enable_inverse_text_normalization="true",
                               enable_voice_detection="true", disfluency="false", customization_id="ignored"))
    assert any(ch in body["result"] for ch in PUNCTUATION), body["result"]
    assert body["result"] != reference["result"]


def test_vocabulary_id_hotwords_reach_the_model(frontend, speech_wav, reference):
    body = assert_success(post(frontend.base_url, speech_wav.read_bytes(), format="wav",
                               vocabulary_id="今天 20 阿里巴巴 15"))
    # random-weight SeACo: the bias branch replaces tokens, so the text changes
    assert body["result"] and body["result"] != reference["result"]


@pytest.mark.parametrize("flag", ["enable_words", "word_timestamps"])
def test_word_timings(frontend, speech_wav, reference, flag):
    body = assert_success(post(frontend.base_url, speech_wav.read_bytes(), format="wav", **{flag: "true"}))
    assert body["result"] == reference["result"], "word timings do not change the text"
    for s in body["sentences"]:
        assert s["words"], s
        for w in s["words"]:
            assert set(w) == {"text", "begin_time", "end_time"} and w["text"]
            assert isinstance(w["begin_time"], int) and isinstance(w["end_time"], int)
            assert s["begin_time"] - 1 <= w["begin_time"] <= w["end_time"] <= s["end_time"] + 1


BAD_INPUTS = {
    # name: (query, body, HTTP status, NLS status)
    "empty_body": ({"format": "pcm"}, b"", 400, 40000002),
    "empty_body_no_format": ({}, b"", 400, 40000002),
    "odd_length_pcm": ({"format": "pcm", "sample_rate": 16000}, b"\x01" * 1001, 400, 40000002),
    "text_body": ({"format": "wav"}, b"this is not audio, just some text\n" * 20, 400, 40000002),
    "text_body_mp3": ({"format": "mp3"}, b"<html><body>not found</body></html>", 400, 40000002),
    "sample_rate_44100": ({"format": "pcm", "sample_rate": 44100}, b"\x00" * 3200, 400, 41010101),
    "sample_rate_not_a_number": ({"format": "pcm", "sample_rate": "high"}, b"\x00" * 3200, 400, 40000003),
    "unknown_format": ({"format": "xyz"}, b"\x00" * 3200, 400, 40000003),
    "bad_boolean": ({"format": "pcm", "enable_punctuation_prediction": "maybe"}, b"\x00" * 3200, 400, 40000003),
    "too_many_hotwords": ({"format": "pcm", "vocabulary_id": " ".join(f"词{i} 10" for i in range(60))},
                          b"\x00" * 3200, 400, 40000003),
    "audio_address_disabled": ({"audio_address": "https://example.com/a.wav"}, b"", 400, 40000003),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input(frontend, short_pcm, name):
    query, body, http_status, status = BAD_INPUTS[name]
    assert_nls_error(post(frontend.base_url, body, **query), http_status, status)
    assert_success(post(frontend.base_url, short_pcm, format="pcm"))


def test_wrong_method_and_path_keep_the_envelope(frontend, short_pcm):
    with httpx.Client(base_url=frontend.base_url, timeout=60) as c:
        assert_nls_error(c.get(ASR), 405, 40000000)
        assert_nls_error(c.post("/stream/v1/nothing", content=short_pcm), 404, 40000000)


def test_auth(guarded, short_pcm):
    base = guarded.base_url
    assert_nls_error(post(base, short_pcm, format="pcm"), 401, 40000001)
    assert_nls_error(post(base, short_pcm, {"X-NLS-Token": "k2"}, format="pcm"), 401, 40000001)
    assert_nls_error(post(base, short_pcm, format="pcm", token="k2"), 401, 40000001)
    # auth is checked before any parameter or the body
    assert_nls_error(post(base, b"\x00" * 3200, format="pcm", sample_rate=44100), 401, 40000001)
    assert_success(post(base, short_pcm, {"X-NLS-Token": "k1"}, format="pcm"))
    assert_success(post(base, short_pcm, format="pcm", token="k1", appkey="whatever"))


def test_too_large_body(guarded, short_pcm):
    base, auth = guarded.base_url, {"X-NLS-Token": "k1"}
    big = short_pcm * 2
    assert len(short_pcm) < SMALL_LIMIT < len(big)
    assert_nls_error(post(base, big, auth, format="pcm"), 413, 40000000)

    def chunked():  # no Content-Length: the limit holds while the body streams in
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    with httpx.Client(base_url=base, timeout=60) as c:
        r = c.post(ASR, params={"format": "pcm"}, content=chunked(), headers={**OCTET, **auth})
    assert "content-length" not in r.request.headers
    assert_nls_error(r, 413, 40000000)
    assert_success(post(base, short_pcm, auth, format="pcm"))


SSRF_URLS = ["http://127.0.0.1:{port}/x.wav", "http://localhost:{port}/x.wav", "http://[::1]:{port}/x.wav",
             "http://2130706433:{port}/x.wav", "http://0x7f000001:{port}/x.wav", "http://127.1:{port}/x.wav",
             "http://[::ffff:127.0.0.1]:{port}/x.wav", "http://0.0.0.0:{port}/x.wav",
             "gopher://127.0.0.1:{port}/_GET%20/x.wav", "ftp://127.0.0.1:{port}/x.wav", "file:///etc/passwd",
             "http://169.254.169.254/latest"]


@pytest.mark.parametrize("url", SSRF_URLS)
def test_audio_address_refused_without_a_request(fetching, canary, short_pcm, url):
    body = assert_nls_error(post(fetching.base_url, audio_address=url.format(port=canary.port)), 400, 40000003)
    assert "audio_address" in body["message"]
    assert canary.hits == [], "a refused URL reached the loopback server"
    assert_success(post(fetching.base_url, short_pcm, format="pcm"))


def test_audio_address_allowed_host_port(fetching, canary, audio_host, reference):
    body = assert_success(post(fetching.base_url, audio_address=f"{audio_host}/speech.wav", format="wav"))
    assert body["result"] == reference["result"], "the fetched wav is recognised like the uploaded one"
    # an allow-listed host:port cannot redirect to another port of the same host, nor to a link-local one
    assert_nls_error(post(fetching.base_url, audio_address=f"{audio_host}/redirect"), 400, 40000003)
    assert_nls_error(post(fetching.base_url, audio_address=f"{audio_host}/redirect-metadata"), 400, 40000003)
    assert canary.hits == []
    assert_nls_error(post(fetching.base_url, audio_address=f"{audio_host}/missing.wav"), 400, 40000003)
    assert_success(post(fetching.base_url, audio_address=f"{audio_host}/speech.wav"))


def test_url_fetch_off_by_default(frontend, canary):
    assert_nls_error(post(frontend.base_url, audio_address=f"http://127.0.0.1:{canary.port}/x.wav"), 400, 40000003)
    assert canary.hits == []
