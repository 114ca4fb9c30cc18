"""One request (or one real-time stream) per call on each surface, as a plain client sees it: the soak
(loadtest/soak.py) and the fault/overload tests use these.

Every call returns an Outcome: ok, HTTP status or WebSocket close code, seconds, the error code the surface
answered in its own shape (OpenAI `error.code`, Alibaba NLS `status`, `/api` `code`, FunASR WS `error.code`,
NLS WS TaskFailed `status`), Retry-After. A call never raises for a server-side failure, and never waits
longer than `timeout_s` (+ a few seconds for the connection to close).
"""
from __future__ import annotations

import io
import json
import threading
import time
import uuid
import wave
from dataclasses import dataclass, field

import httpx
import numpy as np

SR = 16000
SURFACES = ("openai", "aliyun", "api", "funasr_ws", "nls_ws", "grpc")
FRAME_BYTES = 3200  # 100 ms of 16 kHz s16le per WebSocket frame


@dataclass
class Outcome:
    surface: str
    ok: bool
    status: int | None = None  # HTTP status, WebSocket close code (1000 = clean), or 0 for gRPC success
    code: str | int | None = None  # the surface's own error code
    seconds: float = 0.0
    retry_after: str | None = None
    detail: str = ""
    body: dict = field(default_factory=dict)


def speech_clip(seconds: float = 6.0) -> np.ndarray:
    """Mandarin sentences (espeak-ng) with pauses, cut to `seconds`: 16 kHz mono float32."""
    from funasr_triton_tools.speech import SENTENCES, espeak

    parts, total, i = [np.zeros(int(0.3 * SR), np.float32)], 0.3, 0
    while total < seconds:
        speech = espeak(SENTENCES[i % len(SENTENCES)])
        pause = np.zeros(int(0.6 * SR), np.float32)
        parts += [speech, pause]
        total += (speech.size + pause.size) / SR
        i += 1
    return np.concatenate(parts)[: int(seconds * SR)].astype(np.float32)


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()


def wav_bytes(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm16(samples))
    return buf.getvalue()


class Clients:
    """All surfaces of one stack. base: the frontend (http://host:port); triton: Triton gRPC host:port (None:
    no gRPC surface); pace_s: pause between 100 ms WebSocket frames (0.1 = real time)."""

    def __init__(self, base: str, samples: np.ndarray, triton: str | None = None, timeout_s: float = 120.0,
                 pace_s: float = 0.01, token: str | None = None):
        self.base = base.rstrip("/")
        self.ws_base = self.base.replace("http://", "ws://").replace("https://", "wss://")
        self.samples = samples
        self.wav = wav_bytes(samples)
        self.pcm = pcm16(samples)
        self.triton = triton
        self.timeout_s = timeout_s
        self.pace_s = pace_s
        self.token = token
        self._local = threading.local()

    def call(self, surface: str) -> Outcome:
        t0 = time.monotonic()
        try:
            out = getattr(self, surface)()
        except Exception as e:  # a transport failure (refused, reset, timeout) is an outcome too
            out = Outcome(surface, False, detail=f"{type(e).__name__}: {e}"[:500])
        out.seconds = time.monotonic() - t0
        return out

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        client = getattr(self._local, "http", None)
        if client is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            client = self._local.http = httpx.Client(base_url=self.base, timeout=self.timeout_s, headers=headers)
        return client

    @staticmethod
    def _json(r: httpx.Response) -> dict:
        try:
            body = r.json()
        except ValueError:
            return {"raw": r.text[:500]}
        return body if isinstance(body, dict) else {"raw": body}

    def openai(self) -> Outcome:
        r = self._http().post("/v1/audio/transcriptions", files={"file": ("soak.wav", self.wav, "audio/wav")},
                              data={"model": "whisper-1"})
        body = self._json(r)
        ok = r.status_code == 200 and bool(body.get("text"))
        code = None if ok else (body.get("error") or {}).get("code")
        return Outcome("openai", ok, r.status_code, code, retry_after=r.headers.get("Retry-After"),
                       detail="" if ok else r.text[:300], body=body)

    def aliyun(self) -> Outcome:
        headers = {"Content-Type": "application/octet-stream"}
        if self.token:
            headers["X-NLS-Token"] = self.token
        r = self._http().post("/stream/v1/asr", params={"appkey": "soak", "format": "pcm", "sample_rate": SR},
                              content=self.pcm, headers=headers)
        body = self._json(r)
        ok = r.status_code == 200 and body.get("status") == 20000000 and bool(body.get("result"))
        return Outcome("aliyun", ok, r.status_code, None if ok else body.get("status"),
                       retry_after=r.headers.get("Retry-After"), detail="" if ok else r.text[:300], body=body)

    def api(self) -> Outcome:
        r = self._http().post("/api", files={"audio": ("soak.wav", self.wav, "audio/wav")})
        body = self._json(r)
        ok = r.status_code == 200 and body.get("code") == 0 and bool(body.get("data"))
        return Outcome("api", ok, r.status_code, None if ok else body.get("code"),
                       retry_after=r.headers.get("Retry-After"), detail="" if ok else r.text[:300], body=body)

    # -- WebSocket ----------------------------------------------------------------------------------------

    def _connect(self, path: str, **kwargs):
        from websockets.sync.client import connect

        url = self.ws_base + path + (f"?token={self.token}" if self.token else "")
        return connect(url, open_timeout=self.timeout_s, close_timeout=5, max_size=None, **kwargs)

    def _send_audio(self, ws) -> None:
        for i in range(0, len(self.pcm), FRAME_BYTES):
            ws.send(self.pcm[i:i + FRAME_BYTES])
            if self.pace_s:
                time.sleep(self.pace_s)

    def _receive_until(self, ws, deadline: float, done) -> tuple[list[dict], int | None]:
        """Messages until done(message) or the server closes; (messages, close code or None)."""
        from websockets.exceptions import ConnectionClosed

        messages: list[dict] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no final message within the deadline")
            try:
                raw = ws.recv(timeout=left)
            except ConnectionClosed as e:
                return messages, (e.rcvd.code if e.rcvd else 1006)
            except TimeoutError:
                raise TimeoutError("no final message within the deadline") from None
            if isinstance(raw, bytes):
                continue
            message = json.loads(raw)
            messages.append(message)
            if done(message):
                return messages, None

    def funasr_ws(self, mode: str = "2pass") -> Outcome:
        """FunASR's protocol, 2pass mode: a config message, 100 ms PCM frames, is_speaking=false, until is_final."""
        from websockets.exceptions import ConnectionClosed

        deadline = time.monotonic() + self.timeout_s
        surface = "funasr_ws" if mode == "2pass" else f"funasr_ws_{mode}"
        with self._connect("/ws/v1/funasr", subprotocols=["binary"]) as ws:
            ws.send(json.dumps({"mode": mode, "chunk_size": [5, 10, 5], "chunk_interval": 10, "wav_name": "soak",
                                "wav_format": "pcm", "audio_fs": SR, "is_speaking": True}))
            try:
                self._send_audio(ws)
                ws.send(json.dumps({"is_speaking": False}))
            except ConnectionClosed:
                pass  # the server failed the stream: its error message is read below
            messages, closed = self._receive_until(ws, deadline, lambda m: bool(m.get("is_final")) or "error" in m)
            if messages and "error" in messages[-1]:
                try:  # the server closes after an error message: its close code
                    _, closed = self._receive_until(ws, time.monotonic() + 10, lambda m: False)
                except TimeoutError:
                    closed = None
        error = next((m["error"] for m in messages if "error" in m), None)
        text = "".join(m.get("text", "") for m in messages if m.get("mode") in ("2pass-offline", "offline"))
        ok = error is None and bool(messages) and bool(messages[-1].get("is_final")) and bool(text)
        return Outcome(surface, ok, closed if closed is not None else 1000,
                       None if ok else (error or {}).get("code", "closed"),
                       detail="" if ok else json.dumps(messages[-2:], ensure_ascii=False)[:300],
                       body=messages[-1] if messages else {})

    def funasr_ws_offline(self) -> Outcome:
        """FunASR's protocol, offline mode: the whole audio buffered, recognised as one file at is_speaking=false."""
        return self.funasr_ws("offline")

    def nls_ws(self) -> Outcome:
        """Alibaba NLS SpeechTranscriber: StartTranscription, 100 ms PCM frames, StopTranscription, until
        TranscriptionCompleted or TaskFailed."""
        from websockets.exceptions import ConnectionClosed

        deadline = time.monotonic() + self.timeout_s
        task_id = uuid.uuid4().hex

        def header(name: str) -> dict:
            return {"namespace": "SpeechTranscriber", "name": name, "task_id": task_id,
                    "message_id": uuid.uuid4().hex, "appkey": "soak"}

        final = ("TranscriptionCompleted", "TaskFailed")
        with self._connect("/ws/v1") as ws:
            ws.send(json.dumps({"header": header("StartTranscription"),
                                "payload": {"format": "pcm", "sample_rate": SR, "enable_intermediate_result": True,
                                            "enable_punctuation_prediction": True}}))
            messages, closed = self._receive_until(
                ws, deadline, lambda m: m["header"]["name"] in ("TranscriptionStarted", *final))
            if messages and messages[-1]["header"]["name"] == "TranscriptionStarted":
                try:
                    self._send_audio(ws)
                    ws.send(json.dumps({"header": header("StopTranscription")}))
                except ConnectionClosed:
                    pass
                more, closed = self._receive_until(ws, deadline, lambda m: m["header"]["name"] in final)
                messages += more
        names = [m["header"]["name"] for m in messages]
        failed = next((m for m in messages if m["header"]["name"] == "TaskFailed"), None)
        text = "".join(m.get("payload", {}).get("result", "") for m in messages
                       if m["header"]["name"] == "SentenceEnd")
        ok = failed is None and bool(names) and names[-1] == "TranscriptionCompleted" and bool(text)
        return Outcome("nls_ws", ok, closed if closed is not None else 1000,
                       None if ok else (failed["header"]["status"] if failed else "closed"),
                       detail="" if ok else json.dumps(messages[-2:], ensure_ascii=False)[:300],
                       body=failed or (messages[-1] if messages else {}))

    # -- gRPC ---------------------------------------------------------------------------------------------

    def grpc(self) -> Outcome:
        """Triton's `pipeline` model directly (the whole file in one request)."""
        from funasr_triton.errors import AsrError
        from funasr_triton.triton_client import TritonAsrClient

        if not self.triton:
            raise RuntimeError("no Triton gRPC address given")
        client = getattr(self._local, "grpc", None)
        if client is None:
            client = self._local.grpc = TritonAsrClient(self.triton, timeout_s=self.timeout_s)
        try:
            result = client.transcribe(self.samples)
        except AsrError as e:
            return Outcome("grpc", False, e.status, e.code, detail=e.message[:300])
        ok = bool(result.get("text"))
        return Outcome("grpc", ok, 0 if ok else None, None if ok else "empty", body=result)

    def close(self) -> None:
        client = getattr(self._local, "http", None)
        if client is not None:
            client.close()
        grpc = getattr(self._local, "grpc", None)
        if grpc is not None:
            grpc.close()
