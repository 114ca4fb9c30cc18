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


def test_denoise_chain(triton, tmp_path, speech_wav):
    fe = start_frontend(triton.grpc_url, tmp_path, FUNASR_TRITON_AUDIO__DENOISE="true")
    try:
        assert _json_text(fe.base_url, speech_wav.read_bytes())
    finally:
        fe.stop()


def test_url_fetch_checks_the_connected_address(monkeypatch):
    """DNS rebinding: the name passed the check, the connection lands on loopback -> refused, body unread."""
    import asyncio
    import http.server
    import threading

    from funasr_triton.app import fetch as fetch_mod
    from funasr_triton.app.config import AudioSettings
    from funasr_triton.errors import AsrError

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def passes(url, settings):  # the first DNS answer was public
        return None

    monkeypatch.setattr(fetch_mod, "check_url", passes)
    settings = AudioSettings(url_fetch_enabled=True)
    try:
        with pytest.raises(AsrError) as info:
            asyncio.run(fetch_mod.fetch(f"http://localhost:{server.server_port}/", settings, 10_000))
    except Exception:
        server.shutdown()
        raise
    server.shutdown()
    assert info.value.code == "forbidden_url" and info.value.status == 400


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

    code = ("import sys; import funasr_triton.app.main as m; import funasr_triton.cli; m.create_app(); "
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'funasr', 'funasr_onnx', 'modelscope')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
