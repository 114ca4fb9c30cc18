"""Input defects found by a hostile probe (issue 14), each against the real frontend and Triton: deeply nested
JSON on every surface, non-ASCII digits, malformed URLs, contradicting speaker counts, a client hanging up
mid-upload, and 500s counted in /metrics."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_frontend

NESTED_OBJ = '{"a":' * 5000 + "1" + "}" * 5000
NESTED_LIST = "[" * 1500 + "]" * 1500
NESTED = [NESTED_OBJ, NESTED_LIST]


def metric(base_url: str, name: str, **labels) -> float:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def fetching(triton, tmp_path_factory):
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("security-fe"),
                        FUNASR_TRITON_AUDIO__URL_FETCH_ENABLED="true")
    yield fe
    fe.stop()


def _openai(c: httpx.Client, wav: bytes, **fields) -> httpx.Response:
    return c.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav)}, data={"model": "whisper-1", **fields})


def _assert_openai_4xx(r: httpx.Response, param: str | None = None) -> None:
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"], err
    if param:
        assert err["param"] == param, err


@pytest.mark.parametrize("nested", NESTED, ids=["object", "list"])
def test_nested_json_is_a_4xx_on_every_http_surface(fetching, speech_wav, nested):
    wav = speech_wav.read_bytes()
    with httpx.Client(base_url=fetching.base_url, timeout=60) as c:
        for field in ("hotwords", "prompt", "keywords[]", "chunking_strategy"):
            r = _openai(c, wav, **{field: nested})
            _assert_openai_4xx(r, field.removesuffix("[]"))
        r = c.post("/stream/v1/asr", params={"vocabulary_id": nested[:6000], "format": "wav"}, content=wav)
        assert r.status_code == 400 and r.json()["status"] == 40000003, r.text
        r = c.post("/api", files={"audio": ("a.wav", wav)}, data={"hotwords": nested})
        assert r.status_code == 400 and r.json()["code"] == 400 and r.json()["data"] == [], r.text
        # the keep-alive connection survives every refusal
        assert c.get("/ready").status_code == 200
    assert metric(fetching.base_url, "funasr_requests_total", status="500") == 0


@pytest.mark.parametrize("nested", NESTED, ids=["object", "list"])
def test_nested_json_on_the_websockets(fetching, nested):
    base = fetching.base_url.replace("http://", "ws://")

    async def funasr(message: str) -> dict:
        async with websockets.connect(base + "/", ping_interval=None, max_size=None) as ws:
            await ws.send(message)
            return json.loads(await asyncio.wait_for(ws.recv(), 30))

    for message in (nested, '{"mode": "2pass", "hotwords": ' + nested + "}"):
        answer = asyncio.run(funasr(message))
        assert answer["error"]["code"] == "invalid_message", answer  # the protocol's own error, not internal_error

    async def nls(message: str, start_first: bool) -> dict:
        async with websockets.connect(base + "/ws/v1", ping_interval=None, max_size=None) as ws:
            if start_first:
                await ws.send(_nls_start())
                json.loads(await asyncio.wait_for(ws.recv(), 30))
            await ws.send(message)
            return json.loads(await asyncio.wait_for(ws.recv(), 30))

    for message, start_first in ((nested, False), (nested, True), (_nls_start(vocabulary_id=nested), False)):
        h = asyncio.run(nls(message, start_first))["header"]
        assert h["name"] == "TaskFailed" and 40000000 <= h["status"] < 50000000, h
    assert httpx.get(fetching.base_url + "/ready").status_code == 200


def _nls_start(**payload) -> str:
    return json.dumps({"header": {"namespace": "SpeechTranscriber", "name": "StartTranscription",
                                  "task_id": "a" * 32, "message_id": "b" * 32, "appkey": "any"},
                       "payload": {"format": "pcm", "sample_rate": 16000, **payload}})


@pytest.mark.parametrize("value", ["²", "١٢", "３", "⁵"])
def test_non_ascii_digits(fetching, speech_wav, value):
    wav = speech_wav.read_bytes()
    with httpx.Client(base_url=fetching.base_url, timeout=60) as c:
        for field in ("num_speakers", "min_speakers", "max_speakers"):
            r = c.post("/api", files={"audio": ("a.wav", wav)}, data={field: value})
            assert r.status_code == 400 and r.json()["code"] == 400 and field in r.json()["msg"], r.text
            _assert_openai_4xx(_openai(c, wav, **{field: value}), field)
        r = c.post("/stream/v1/asr", params={"speaker_count": value}, content=wav)
        assert r.status_code == 400 and r.json()["status"] == 40000003, r.text


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:99999/x.wav", "http://127.0.0.1:abc/x.wav", "http://[::1/x.wav", "http://a＃b@127.0.0.1/x.wav",
    "http://user:pw@example.invalid/x.wav", "http://exa mple.com/x.wav", "http://example.com/x\t.wav",
    "http:///x.wav", "http://[fe80::1%25eth0]:80/x.wav", "https://" + "a" * 300 + ".invalid/x.wav",
])
def test_malformed_urls_are_a_400(fetching, url):
    r = httpx.post(fetching.base_url + "/stream/v1/asr", params={"audio_address": url}, timeout=60)
    assert r.status_code == 400 and r.json()["status"] == 40000003, r.text
    assert "audio_address" in r.json()["message"]


def test_redirect_to_a_url_with_a_tab(triton, tmp_path):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/a\tb.wav")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    fe = start_frontend(triton.grpc_url, tmp_path, FUNASR_TRITON_AUDIO__URL_FETCH_ENABLED="true",
                        FUNASR_TRITON_AUDIO__URL_ALLOWED_HOSTS=f'["127.0.0.1:{port}"]')
    try:
        r = httpx.post(fe.base_url + "/stream/v1/asr", params={"audio_address": f"http://127.0.0.1:{port}/r"},
                       timeout=60)
        assert r.status_code == 400 and r.json()["status"] == 40000003, r.text
    finally:
        fe.stop()
        server.shutdown()
        server.server_close()


def test_contradicting_speaker_counts_are_a_parameter_error(fetching, speech_wav):
    wav = speech_wav.read_bytes()
    with httpx.Client(base_url=fetching.base_url, timeout=60) as c:
        r = c.post("/stream/v1/asr", params={"format": "wav", "enable_speaker_diarization": "true",
                                             "min_speakers": 5, "max_speakers": 2}, content=wav)
        assert r.status_code == 400 and r.json()["status"] == 40000003, r.text  # INVALID_PARAMETER, not INVALID_MESSAGE 40000002
        assert "max_speakers" in r.json()["message"]
        r = c.post("/stream/v1/asr", params={"speaker_count": 6, "max_speakers": 2, "enable_speaker_diarization": "true"},
                   content=wav)
        assert r.status_code == 400 and r.json()["status"] == 40000003 and "speaker_count" in r.json()["message"]
        r = _openai(c, wav, min_speakers="5", max_speakers="2", response_format="diarized_json")
        _assert_openai_4xx(r, "max_speakers")
        assert r.json()["error"]["code"] == "invalid_value"
        r = c.post("/api", files={"audio": ("a.wav", wav)}, data={"min_speakers": "5", "max_speakers": "2"})
        assert r.status_code == 400 and "max_speakers" in r.json()["msg"], r.text


def _hang_up_mid_upload(base_url: str, path: str, content_type: str, head: bytes) -> None:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: 1000000\r\n\r\n".encode() + head)
        time.sleep(0.3)


@pytest.mark.parametrize("path, content_type, head, route", [
    ("/stream/v1/asr?format=pcm", "application/octet-stream", b"\x00" * 20000, "/stream/v1/asr"),
    ("/api", "multipart/form-data; boundary=XX", b'--XX\r\nContent-Disposition: form-data; name="audio"; '
     b'filename="a.wav"\r\n\r\n' + b"\x00" * 20000, "/api"),
    ("/v1/audio/transcriptions", "multipart/form-data; boundary=XX", b"--XX\r\n", "/v1/audio/transcriptions"),
], ids=["aliyun", "seed", "openai"])
def test_client_hanging_up_mid_upload_is_a_quiet_499(fetching, path, content_type, head, route):
    before = metric(fetching.base_url, "funasr_requests_total", route=route, status="499")
    _hang_up_mid_upload(fetching.base_url, path, content_type, head)
    deadline = time.monotonic() + 10
    while metric(fetching.base_url, "funasr_requests_total", route=route, status="499") == before:
        assert time.monotonic() < deadline, "the hang-up was not counted as 499"
        time.sleep(0.2)
    assert "Traceback" not in fetching.log_file.read_text(errors="replace")


def test_unhandled_errors_are_counted_as_500():
    from fastapi.testclient import TestClient

    from funasr_triton.app.config import Settings
    from funasr_triton.app.main import create_app

    app = create_app(Settings())

    @app.get("/boom")
    async def boom():
        raise RuntimeError("boom")

    c = TestClient(app, raise_server_exceptions=False)  # no lifespan: no Triton needed
    r = c.get("/boom")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    text = c.get("/metrics").text
    assert 'funasr_requests_total{route="/boom",status="500"} 1.0' in text
