"""Bad input, table-driven, across every HTTP and WebSocket surface of the real frontend (small limits, private
TMPDIR) and the real Triton. Each input must get a clear 4xx in the surface's own shape (the protocol's own
failure on WebSockets), or a 200 with a sane result where it is valid audio (silence, 8 kHz, 6 channels, noise);
never a 5xx; no temporary file left behind; the service still ready. The counts are printed."""
from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
import wave
from collections import Counter
from pathlib import Path
from typing import Callable

import httpx
import numpy as np
import pytest
import websockets

from tests.conftest import start_frontend
from tests.synth import SENTENCES, compose, write_wav

MAX_BYTES = 4_000_000
MAX_SECONDS = 30
MAX_FRAME = 16384
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
       b"\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
NESTED = '{"a":' * 3000 + "1" + "}" * 3000


def ffmpeg(out: Path, *args: str) -> bytes:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args, str(out)], check=True, capture_output=True)
    return out.read_bytes()


def wav_bytes(samples: np.ndarray, sr: int = 16000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    data = (np.clip(samples, -1, 1 - 1 / 32768) * 32768).astype("<i2")
    if channels > 1:
        data = np.repeat(data[:, None], channels, axis=1)
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(data.tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("bad-media")
    speech = compose(0.2, SENTENCES[1], 0.2)
    good = wav_bytes(speech)
    rng = np.random.default_rng(0)
    m = {
        "good": good,
        "silence": wav_bytes(np.zeros(32000, np.float32)),
        "noise": wav_bytes(rng.uniform(-0.5, 0.5, 32000).astype(np.float32)),
        "8k": ffmpeg(d / "8k.wav", "-i", str(write_wav(d / "s.wav", speech)), "-ar", "8000"),
        "6ch48k": ffmpeg(d / "6ch.wav", "-i", str(d / "s.wav"), "-ar", "48000", "-ac", "6"),
        "tiny": wav_bytes(speech[:160]),  # 0.01 s
        "header_only": wav_bytes(np.zeros(0, np.float32)),
        "truncated": good[:30],
        "truncated_mp3": ffmpeg(d / "s.mp3", "-i", str(d / "s.wav"))[:300],
        "random": rng.integers(0, 256, 20000, dtype=np.uint8).tobytes(),
        "text": b"this is not audio\n" * 50,
        "png": PNG,
        "video": ffmpeg(d / "v.mp4", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-t", "1", "-an",
                        "-pix_fmt", "yuv420p"),
        "lying_size": good[:40] + (0x7FFFFFF0).to_bytes(4, "little") + good[44:2000],
        "lying_rate0": good[:24] + (0).to_bytes(4, "little") + good[28:],
        "lying_channels": good[:22] + (200).to_bytes(2, "little") + good[24:],
        "mp3_named_wav": (d / "s.mp3").read_bytes(),
        "hls": b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n" + str(d / "s.wav").encode() + b"\n#EXT-X-ENDLIST\n",
        "hls_file_url": b"#EXTM3U\n#EXTINF:10,\nfile://" + str(d / "s.wav").encode() + b"\n#EXT-X-ENDLIST\n",
        "ffconcat": b"ffconcat version 1.0\nfile '" + str(d / "s.wav").encode() + b"'\n",
        "ffconcat_passwd": b"ffconcat version 1.0\nfile '/etc/passwd'\n",
        "too_long": wav_bytes(np.zeros(8000 * (MAX_SECONDS + 10), np.float32), sr=8000),
        "five_hours_flac": ffmpeg(d / "long.flac", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "18000",
                                  "-c:a", "flac", "-compression_level", "8"),
        "too_big": bytes(MAX_BYTES + 100_000),
    }
    assert len(m["five_hours_flac"]) < MAX_BYTES, "the 5-hour FLAC must pass the size limit to reach the duration one"
    return m


@pytest.fixture(scope="module")
def small(triton, tmp_path_factory):
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("bad-input"),
                        FUNASR_TRITON_LIMITS__MAX_UPLOAD_BYTES=str(MAX_BYTES),
                        FUNASR_TRITON_LIMITS__MAX_AUDIO_SECONDS=str(MAX_SECONDS),
                        FUNASR_TRITON_STREAMING__MAX_FRAME_BYTES=str(MAX_FRAME),
                        FUNASR_TRITON_STREAMING__MAX_OFFLINE_SECONDS="2",
                        FUNASR_TRITON_STREAMING__MAX_STREAM_SECONDS="3",
                        FUNASR_TRITON_AUDIO__URL_FETCH_ENABLED="true")
    yield fe
    fe.stop()


# ---- the surfaces: each returns (status, body) after checking the surface's own shape ---------------------------

def openai(c: httpx.Client, file: tuple | None = ("a.wav", b""), raw: dict | None = None, **fields) -> tuple[int, object]:
    if raw is not None:
        r = c.post("/v1/audio/transcriptions", **raw)
    else:
        r = c.post("/v1/audio/transcriptions", files={"file": file} if file else None,
                   data={"model": "whisper-1", "response_format": "verbose_json", **fields})
    if r.status_code != 200:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"], err
        assert err["type"] == ("server_error" if r.status_code >= 500 else "invalid_request_error"), err
    return r.status_code, r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text


def aliyun(c: httpx.Client, body: bytes = b"", headers: dict | None = None, **params) -> tuple[int, object]:
    r = c.post("/stream/v1/asr", params=params, content=body,
               headers={"Content-Type": "application/octet-stream", **(headers or {})})
    b = r.json()
    assert list(b)[:4] == ["task_id", "result", "status", "message"], b
    if r.status_code != 200:
        assert 40000000 <= b["status"] < 50000000 or r.status_code >= 500, b
    return r.status_code, b


def seed(c: httpx.Client, file: tuple | None = ("a.wav", b""), raw: dict | None = None, **fields) -> tuple[int, object]:
    if raw is not None:
        r = c.post("/api", **raw)
    else:
        r = c.post("/api", files={"audio": file} if file else None, data=fields or None)
    b = r.json()
    if r.status_code != 200:
        assert b["code"] == r.status_code and b["msg"] and b["data"] == [], b
    return r.status_code, b


def _nls_start(**payload) -> str:
    return json.dumps({"header": {"namespace": "SpeechTranscriber", "name": "StartTranscription", "task_id": "a" * 32,
                                  "message_id": "b" * 32, "appkey": "any"},
                       "payload": {"format": "pcm", "sample_rate": 16000, **payload}})


def nls_ws(base: str, *messages: str | bytes, start: bool = False) -> tuple[int, object]:
    """Sends `messages` (after a good StartTranscription if `start`); the protocol's answer as a status:
    TaskFailed 4xxxxxxx -> 400, 5xxxxxxx -> 500, completed -> 200."""
    async def main():
        async with websockets.connect(base + "/ws/v1", ping_interval=None, max_size=None) as ws:
            if start:
                await ws.send(_nls_start())
                assert json.loads(await asyncio.wait_for(ws.recv(), 30))["header"]["name"] == "TranscriptionStarted"
            for m in messages:
                await ws.send(m)
            while True:
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
                except websockets.ConnectionClosed as closed:
                    return (400 if closed.rcvd and closed.rcvd.code in (1008, 1009) else 500), None
                h = msg["header"]
                if h["name"] == "TaskFailed":
                    return (400 if h["status"] < 50000000 else 500), msg
                if h["name"] in ("TranscriptionCompleted", "RecognitionCompleted"):
                    return 200, msg
    return asyncio.run(main())


def funasr_ws(base: str, *messages: str | bytes) -> tuple[int, object]:
    async def main():
        async with websockets.connect(base + "/", ping_interval=None, max_size=None) as ws:
            for m in messages:
                try:
                    await ws.send(m)
                except websockets.ConnectionClosed:
                    break
            while True:
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
                except websockets.ConnectionClosed as closed:
                    return (400 if closed.rcvd and closed.rcvd.code in (1008, 1009) else 500), None
                if "error" in msg:
                    return (500 if msg["error"]["code"] == "internal_error" else 400), msg
                if msg.get("is_final"):
                    return 200, msg
    return asyncio.run(main())


def multipart(body: bytes, boundary: str | None = "XB") -> dict:
    ctype = "multipart/form-data" + (f"; boundary={boundary}" if boundary else "")
    return {"content": body, "headers": {"content-type": ctype}}


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    fn = f'; filename="{filename}"' if filename else ""
    return f'--XB\r\nContent-Disposition: form-data; name="{name}"{fn}\r\n\r\n'.encode() + value + b"\r\n"


def cases(m: dict[str, bytes], ws: str) -> list[tuple[str, Callable[[httpx.Client], tuple[int, object]], str]]:
    """(name, call, expected): expected "4xx", "200" (valid audio: the result is checked) or "any" (4xx or 200)."""
    w = ("a.wav", m["good"])
    table = []
    for key, expect in (("silence", "200"), ("noise", "any"), ("8k", "200"), ("6ch48k", "200"), ("tiny", "any"),
                        ("header_only", "4xx"), ("truncated", "4xx"), ("truncated_mp3", "any"), ("random", "4xx"),
                        ("text", "4xx"), ("png", "4xx"), ("video", "4xx"), ("lying_size", "any"),
                        ("lying_rate0", "4xx"), ("lying_channels", "any"), ("mp3_named_wav", "200"), ("hls", "4xx"),
                        ("hls_file_url", "4xx"), ("ffconcat", "4xx"), ("ffconcat_passwd", "4xx"), ("too_long", "4xx"),
                        ("five_hours_flac", "4xx"), ("too_big", "4xx")):
        name = "a.m3u8" if key.startswith("hls") else "a.txt" if key.startswith("ffconcat") else "a.wav"
        table.append((f"openai {key}", lambda c, k=key, n=name: openai(c, (n, m[k])), expect))
        table.append((f"aliyun {key}", lambda c, k=key: aliyun(c, m[k], format="wav"), expect))
        table.append((f"seed {key}", lambda c, k=key, n=name: seed(c, (n, m[k]), enable_speaker_diarization="false"),
                      expect))
    table += [
        ("openai empty file", lambda c: openai(c, ("a.wav", b"")), "4xx"),
        ("openai no file", lambda c: openai(c, None), "4xx"),
        ("openai file as text", lambda c: openai(c, raw={"data": {"model": "whisper-1", "file": "x"}}), "4xx"),
        ("openai json body", lambda c: openai(c, raw={"json": {"model": "whisper-1"}}), "4xx"),
        ("openai no boundary", lambda c: openai(c, raw=multipart(part("file", m["good"], "a.wav"), None)), "4xx"),
        ("openai wrong boundary", lambda c: openai(c, raw=multipart(part("file", m["good"], "a.wav"), "other")), "4xx"),
        ("openai truncated multipart", lambda c: openai(c, raw=multipart(part("file", m["good"], "a.wav")[:100])), "4xx"),
        ("openai nine files", lambda c: openai(c, raw=multipart(b"".join(part("file", b"x", f"{i}.wav")
                                                                         for i in range(9)) + b"--XB--\r\n")), "4xx"),
        ("openai bad response_format", lambda c: openai(c, w, response_format="xml"), "4xx"),
        ("openai temperature text", lambda c: openai(c, w, temperature="hot"), "4xx"),
        ("openai temperature 5", lambda c: openai(c, w, temperature="5"), "4xx"),
        ("openai stream maybe", lambda c: openai(c, w, stream="maybe"), "4xx"),
        ("openai language xx", lambda c: openai(c, w, language="xx"), "4xx"),
        ("openai model nope", lambda c: openai(c, w, model="nope"), "4xx"),
        ("openai num_speakers 0", lambda c: openai(c, w, num_speakers="0"), "4xx"),
        ("openai num_speakers 1e9", lambda c: openai(c, w, num_speakers="1000000000"), "4xx"),
        ("openai num_speakers ²", lambda c: openai(c, w, num_speakers="²"), "4xx"),
        ("openai min>max", lambda c: openai(c, w, min_speakers="5", max_speakers="2"), "4xx"),
        ("openai granularity char", lambda c: openai(c, w, **{"timestamp_granularities[]": "char"}), "4xx"),
        ("openai chunking garbage", lambda c: openai(c, w, chunking_strategy="{not json"), "4xx"),
        ("openai nested hotwords", lambda c: openai(c, w, hotwords=NESTED), "4xx"),
        ("openai nested keywords", lambda c: openai(c, w, **{"keywords[]": "[" * 2000 + "]" * 2000}), "4xx"),
        ("openai NUL prompt", lambda c: openai(c, w, prompt="\x00" * 100), "any"),
        ("aliyun empty body", lambda c: aliyun(c, b""), "4xx"),
        ("aliyun sample_rate 44100", lambda c: aliyun(c, m["good"], sample_rate=44100), "4xx"),
        ("aliyun sample_rate text", lambda c: aliyun(c, m["good"], sample_rate="fast"), "4xx"),
        ("aliyun format xyz", lambda c: aliyun(c, m["good"], format="xyz"), "4xx"),
        ("aliyun enable_words maybe", lambda c: aliyun(c, m["good"], enable_words="maybe"), "4xx"),
        ("aliyun speaker_count 0", lambda c: aliyun(c, m["good"], speaker_count=0), "4xx"),
        ("aliyun speaker_count ²", lambda c: aliyun(c, m["good"], speaker_count="²"), "4xx"),
        ("aliyun min>max", lambda c: aliyun(c, m["good"], min_speakers=5, max_speakers=2), "4xx"),
        ("aliyun nested vocabulary", lambda c: aliyun(c, m["good"], vocabulary_id=NESTED[:5000]), "4xx"),
        ("aliyun odd pcm", lambda c: aliyun(c, b"\x01\x02\x03", format="pcm"), "any"),
        ("aliyun url loopback", lambda c: aliyun(c, audio_address="http://127.0.0.1:9/x.wav"), "4xx"),
        ("aliyun url bad port", lambda c: aliyun(c, audio_address="http://127.0.0.1:99999/x.wav"), "4xx"),
        ("aliyun url file", lambda c: aliyun(c, audio_address="file:///etc/passwd"), "4xx"),
        ("aliyun format lies", lambda c: aliyun(c, m["good"], format="mp3"), "any"),
        ("aliyun pcm at 8k of a png", lambda c: aliyun(c, PNG, format="pcm", sample_rate=8000), "any"),
        ("seed not multipart", lambda c: seed(c, raw={"content": m["good"], "headers": {"content-type": "audio/wav"}}),
         "4xx"),
        ("seed no audio field", lambda c: seed(c, None, hotwords="x"), "4xx"),
        ("seed empty audio", lambda c: seed(c, ("a.wav", b"")), "4xx"),
        ("seed truncated multipart", lambda c: seed(c, raw=multipart(part("audio", m["good"], "a.wav")[:100])), "4xx"),
        ("seed num_speakers ²", lambda c: seed(c, w, num_speakers="²"), "4xx"),
        ("seed num_speakers 0", lambda c: seed(c, w, num_speakers="0"), "4xx"),
        ("seed num_speakers 33", lambda c: seed(c, w, num_speakers="33"), "4xx"),
        ("seed min>max", lambda c: seed(c, w, min_speakers="5", max_speakers="2"), "4xx"),
        ("seed nested hotwords", lambda c: seed(c, w, hotwords=NESTED), "4xx"),
        ("nls garbage", lambda c: nls_ws(ws, "not json"), "4xx"),
        ("nls nested", lambda c: nls_ws(ws, NESTED), "4xx"),
        ("nls binary first", lambda c: nls_ws(ws, b"\x00\x01" * 800), "4xx"),
        ("nls sample_rate 44100", lambda c: nls_ws(ws, _nls_start(sample_rate=44100)), "4xx"),
        ("nls format mp3", lambda c: nls_ws(ws, _nls_start(format="mp3")), "4xx"),
        ("nls nested vocabulary", lambda c: nls_ws(ws, _nls_start(vocabulary_id=NESTED)), "4xx"),
        ("nls frame too large", lambda c: nls_ws(ws, bytes(MAX_FRAME * 2), start=True), "4xx"),
        ("nls odd pcm", lambda c: nls_ws(ws, b"\x00\x01\x02", start=True), "4xx"),
        ("nls second start", lambda c: nls_ws(ws, _nls_start(), start=True), "4xx"),
        ("nls over stream length", lambda c: nls_ws(ws, *[bytes(3200)] * 60, start=True), "4xx"),
        ("funasr garbage", lambda c: funasr_ws(ws, "not json"), "4xx"),
        ("funasr nested", lambda c: funasr_ws(ws, NESTED), "4xx"),
        ("funasr mode 3pass", lambda c: funasr_ws(ws, json.dumps({"mode": "3pass"})), "4xx"),
        ("funasr chunk_size text", lambda c: funasr_ws(ws, json.dumps({"mode": "online", "chunk_size": "5,x,5"})),
         "4xx"),
        ("funasr audio_fs 44100", lambda c: funasr_ws(ws, json.dumps({"mode": "2pass", "audio_fs": 44100})), "4xx"),
        ("funasr frame too large", lambda c: funasr_ws(ws, json.dumps({"mode": "online"}), bytes(MAX_FRAME * 2)),
         "4xx"),
        ("funasr offline over buffer", lambda c: funasr_ws(ws, json.dumps({"mode": "offline", "is_speaking": True}),
                                                           *[bytes(16000)] * 6, json.dumps({"is_speaking": False})),
         "4xx"),
    ]
    return table


def _sane(name: str, body: object) -> str | None:
    """A 200 for valid audio: the result must be plausible."""
    if name.startswith(("nls", "funasr")):
        return None
    if name.startswith("openai"):
        ok = isinstance(body, dict) and isinstance(body.get("text"), str) and 0 <= body.get("duration", -1) <= MAX_SECONDS
    elif name.startswith("aliyun"):
        ok = body["status"] == 20000000 and isinstance(body["result"], str)
    else:
        ok = isinstance(body["data"], list)
    if ok and "silence" in name:
        text = body.get("text") if name.startswith("openai") else body.get("result") if name.startswith("aliyun") \
            else "".join(line["text"] for line in body["data"])
        ok = text == ""
    return None if ok else f"implausible result {str(body)[:200]}"


def test_bad_input_table(small, media, capsys):
    ws = small.base_url.replace("http://", "ws://")
    table = cases(media, ws)
    names = [n for n, _, _ in table]
    assert len(set(names)) == len(names) >= 50
    counts, failures, slow = Counter(), [], []
    c = httpx.Client(base_url=small.base_url, timeout=120)
    try:
        for name, call, expect in table:
            t0 = time.monotonic()
            try:
                status, body = call(c)
            except Exception as exc:  # noqa: BLE001 - a broken shape or transport is a failure of this input
                failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
                counts["error"] += 1
                c.close()
                c = httpx.Client(base_url=small.base_url, timeout=120)
                continue
            elapsed = time.monotonic() - t0
            kind = "5xx" if status >= 500 else "4xx" if status >= 400 else "200" if status == 200 else str(status)
            counts[kind] += 1
            if kind == "5xx" or (expect != "any" and kind != expect):
                failures.append(f"{name}: expected {expect}, got {status} {str(body)[:200]}")
            elif kind == "200" and (problem := _sane(name, body)):
                failures.append(f"{name}: {problem}")
            if "five_hours" in name and elapsed > 10:
                slow.append(f"{name}: refused after {elapsed:.1f} s")
            left = list(small.tmpdir.iterdir())
            if left:
                failures.append(f"{name}: temporary files left: {[p.name for p in left]}")
                for p in left:
                    p.unlink()
            try:
                if c.get("/ready").status_code != 200:
                    failures.append(f"{name}: the service is not ready afterwards")
            except httpx.TransportError as exc:  # the keep-alive connection was dropped after the answer
                failures.append(f"{name}: the next request on the connection failed ({type(exc).__name__})")
                c.close()
                c = httpx.Client(base_url=small.base_url, timeout=120)
    finally:
        c.close()
    with capsys.disabled():
        print(f"\nbad input: {len(table)} inputs tried, {counts['4xx']} 4xx, {counts['200']} 200, "
              f"{counts['5xx']} 5xx, {counts['error']} broken")
    log = small.log_file.read_text(errors="replace")
    if "Traceback" in log:
        failures.append(f"the frontend logged tracebacks: {log[-2000:]}")
    assert not failures and not slow, "\n".join(failures + slow)
