"""Frontend operations: health, readiness, metrics, docs, bounded admission, Triton outages."""
from __future__ import annotations

import concurrent.futures as cf
import time

import httpx
import pytest

from tests.conftest import start_frontend, start_triton
from tests.synth import SENTENCES, compose, write_wav


def test_health_ready_docs_metrics(frontend, speech_wav):
    with httpx.Client(base_url=frontend.base_url, timeout=120) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").status_code == 200
        assert c.get("/docs").status_code == 200
        spec = c.get("/openapi.json").json()
        assert {"/v1/audio/transcriptions", "/stream/v1/asr", "/api"} <= set(spec["paths"])
        r = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", speech_wav.read_bytes())}, data={"model": "whisper-1"})
        assert r.status_code == 200, r.text
        text = c.get("/metrics").text
    for name in ("funasr_requests_total", "funasr_request_duration_seconds", "funasr_audio_seconds_total", "funasr_rtf",
                 "funasr_inflight_requests", "funasr_rejected_total", "funasr_ffmpeg_seconds", "funasr_triton_seconds"):
        assert name in text, name
    assert 'route="/v1/audio/transcriptions",status="200"' in text
    audio_total = [l for l in text.splitlines() if l.startswith("funasr_audio_seconds_total ")][0]
    assert float(audio_total.split()[1]) > 5


def test_over_the_concurrency_limit_gets_429(triton, tmp_path):
    fe = start_frontend(triton.grpc_url, tmp_path, FUNASR_TRITON_LIMITS__MAX_CONCURRENT_JOBS="1",
                        FUNASR_TRITON_LIMITS__MAX_QUEUED_JOBS="0")
    try:
        long_wav = write_wav(tmp_path / "long.wav", compose(*[s for s in SENTENCES for s in (s, 0.4)]))
        body = long_wav.read_bytes()

        def post(_):
            with httpx.Client(base_url=fe.base_url, timeout=300) as c:
                return c.post("/v1/audio/transcriptions", files={"file": ("a.wav", body)}, data={"model": "whisper-1"})

        with cf.ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(post, range(4)))
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 429 in codes, codes
        rejected = [r for r in responses if r.status_code == 429]
        assert all(r.headers.get("retry-after") for r in rejected)
        assert all(r.json()["error"]["type"] == "rate_limit_error" for r in rejected)
        # and the server serves again once the load is gone
        assert post(0).status_code == 200
    finally:
        fe.stop()


def test_triton_down_gives_503_then_recovers(repository, tmp_path, speech_wav):
    tri = start_triton(repository, tmp_path)
    fe = start_frontend(tri.grpc_url, tmp_path)
    body = speech_wav.read_bytes()
    try:
        with httpx.Client(base_url=fe.base_url, timeout=300) as c:
            assert c.post("/v1/audio/transcriptions", files={"file": ("a.wav", body)}, data={"model": "whisper-1"}).status_code == 200
            tri.server.stop()
            assert c.get("/ready").status_code == 503
            assert c.get("/health").status_code == 200
            r = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", body)}, data={"model": "whisper-1"})
            assert r.status_code == 503 and r.headers.get("retry-after"), r.text
            assert r.json()["error"]["type"] == "server_error"
            r = c.post("/stream/v1/asr?format=wav", content=body)
            assert r.status_code == 503 and r.json()["status"] == 50000000
            tri.server.start()
            tri.server.wait_ready(timeout_s=300)
            for _ in range(150):  # the frontend reconnects on its own, within seconds
                if c.get("/ready").status_code == 200:
                    break
                time.sleep(0.2)
            assert c.get("/ready").status_code == 200
            assert c.post("/v1/audio/transcriptions", files={"file": ("a.wav", body)}, data={"model": "whisper-1"}).status_code == 200
    finally:
        fe.stop()
        tri.server.stop()


def _json_text(base_url: str, body: bytes) -> str:
    with httpx.Client(base_url=base_url, timeout=300) as c:
        r = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", body)}, data={"model": "whisper-1"})
    assert r.status_code == 200, r.text
    return r.json()["text"]


def test_hotword_file_is_reread_without_restart(triton, tmp_path, speech_wav):
    hot = tmp_path / "hotwords.txt"
    hot.write_text("", encoding="utf-8")
    fe = start_frontend(triton.grpc_url, tmp_path, FUNASR_TRITON_HOTWORDS__FILE=str(hot))
    body = speech_wav.read_bytes()
    try:
        plain = _json_text(fe.base_url, body)
        hot.write_text("# product names\n阿里巴巴 20\n达摩院\n", encoding="utf-8")
        biased = _json_text(fe.base_url, body)
        assert biased != plain  # random-weight SeACo: the bias branch changes the tokens
        hot.write_text("", encoding="utf-8")
        assert _json_text(fe.base_url, body) == plain
    finally:
        fe.stop()


def _verbose(base_url: str, body: bytes) -> dict:
    with httpx.Client(base_url=base_url, timeout=120) as c:
        r = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", body)},
                   data={"model": "whisper-1", "response_format": "verbose_json"})
    assert r.status_code == 200, r.text
    return r.json()


def test_denoise_chain(triton, tmp_path, speech_wav):
    """AUDIO__DENOISE applies AUDIO__DENOISE_FILTER: a chain with a measurable effect (atempo=2 halves the
    duration) proves the filter is in the decode path; the default chain decodes and keeps the speech."""
    body = speech_wav.read_bytes()
    plain = start_frontend(triton.grpc_url, tmp_path)
    halved = start_frontend(triton.grpc_url, tmp_path, FUNASR_TRITON_AUDIO__DENOISE="true",
                            FUNASR_TRITON_AUDIO__DENOISE_FILTER="highpass=f=80,atempo=2.0")
    default = start_frontend(triton.grpc_url, tmp_path, FUNASR_TRITON_AUDIO__DENOISE="true")
    try:
        full = _verbose(plain.base_url, body)["duration"]
        assert abs(_verbose(halved.base_url, body)["duration"] - full / 2) < 0.1, "the denoise filter was not applied"
        out = _verbose(default.base_url, body)
        assert abs(out["duration"] - full) < 0.1 and out["text"]
    finally:
        for fe in (plain, halved, default):
            fe.stop()


def test_url_fetch_connects_to_the_validated_address(monkeypatch):
    """DNS rebinding: the name is resolved once, that answer is validated, and the GET goes to that address
    itself (Host header kept). A second lookup (here pointing at another loopback server on the same port,
    standing for an internal address) must never be used: that server receives no request."""
    import asyncio
    import http.server
    import socket
    import threading

    from funasr_triton.app import fetch as fetch_mod
    from funasr_triton.app.config import AudioSettings

    seen: dict[str, list] = {"validated": [], "rebound": []}

    def handler(name):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen[name].append(self.headers.get("Host"))
                body = b"RIFF-not-really-audio"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        return Handler

    validated = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler("validated"))
    port = validated.server_address[1]
    rebound = http.server.ThreadingHTTPServer(("127.0.0.2", port), handler("rebound"))
    servers = [validated, rebound]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()

    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):  # any lookup after the validated one answers the "internal" address
        if host == "media.example":
            return real_getaddrinfo("127.0.0.2", *args, **kwargs)
        return real_getaddrinfo(host, *args, **kwargs)

    async def validated_once(target, settings):  # the one answer that passed the check
        assert target.host == "media.example" and target.port == port
        return "127.0.0.1"

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(fetch_mod, "resolve", validated_once)
    try:
        spooled = asyncio.run(fetch_mod.fetch(f"http://media.example:{port}/a.wav", AudioSettings(url_fetch_enabled=True),
                                              10_000))
        spooled.close()
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert seen == {"validated": [f"media.example:{port}"], "rebound": []}


def test_url_allow_list_is_host_and_port():
    from funasr_triton.app.config import AudioSettings
    from funasr_triton.app.fetch import allowed, parse_target

    s = AudioSettings(url_allowed_hosts=["media.internal", "127.0.0.1:8080", "[::1]:9000"])
    assert allowed(parse_target("http://media.internal/a.wav"), s)
    assert allowed(parse_target("https://MEDIA.internal/a.wav"), s)
    assert not allowed(parse_target("http://media.internal:8001/a.wav"), s), "a bare host allows only 80 and 443"
    assert allowed(parse_target("http://127.0.0.1:8080/a.wav"), s)
    assert not allowed(parse_target("http://127.0.0.1:8001/a.wav"), s)
    assert not allowed(parse_target("http://127.0.0.1/a.wav"), s)
    assert allowed(parse_target("http://[::1]:9000/a.wav"), s)


def test_long_audio_through_the_frontend(frontend, tmp_path):
    """150 s of audio is a 9.6 MB gRPC request: above gRPC's 4 MB default, so the channel limits must hold."""
    import numpy as np

    wav = np.concatenate([compose(SENTENCES[i % len(SENTENCES)], 0.5) for i in range(40)])[: 150 * 16000]
    path = write_wav(tmp_path / "long.wav", wav)
    with httpx.Client(base_url=frontend.base_url, timeout=600) as c:
        r = c.post("/v1/audio/transcriptions", files={"file": ("long.wav", path.read_bytes())},
                   data={"model": "whisper-1", "response_format": "verbose_json"})
    assert r.status_code == 200, r.text
    assert abs(r.json()["duration"] - len(wav) / 16000) < 0.1


def test_frontend_imports_neither_torch_nor_funasr():
    import subprocess
    import sys

    code = ("import sys; import funasr_triton.app.main as m; import funasr_triton_tools.cli; m.create_app(); "
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'funasr', 'funasr_onnx', 'modelscope')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_command_line_starts_without_the_model_code():
    """The frontend image installs frontend, export and tools but not funasr_triton_models (nor torch, funasr,
    onnxruntime): `funasr-triton frontend` must start there. (The i15 merge had exporters/__init__ import the
    model code at module level; only make e2e saw the frontend container crash.)"""
    import subprocess
    import sys

    blocked = ("funasr_triton_models", "torch", "funasr", "funasr_onnx", "onnxruntime", "kaldi_native_fbank", "onnx")
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {blocked!r}:\n"
            "            raise ImportError('not in the frontend image: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import funasr_triton_tools.cli as cli\n"
            "cli.main(['frontend', '--help'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage" in out.stdout, out.stdout + out.stderr
