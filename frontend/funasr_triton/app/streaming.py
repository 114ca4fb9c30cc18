"""Real-time streams, protocol-neutral: limits, 8 kHz -> 16 kHz, chunking, metrics, cleanup.

The WebSocket sessions (nls_ws, funasr_ws: session.py) translate their wire messages into StreamOptions and
render StreamEvents; everything else about a stream lives here:

    async with service.streaming.open(options, protocol="nls") as stream:   # AsrError 429 when full
        events = await stream.feed(pcm_bytes)      # s16le mono at options.sample_rate
        ...
        events = await stream.finish()             # flush: the last sentence_end events

Leaving the block without `finish()` aborts the Triton sequence, so the model frees the stream's
state at once (a client that vanishes never leaks memory); `stream.fail()` marks a protocol
failure for the metrics.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import AsyncIterator, Literal

import numpy as np
from pydantic import BaseModel, Field

from ..errors import AsrError
from ..logs import event
from ..triton_client import AsyncTritonAsrClient, AsyncTritonAsrStream
from .config import Settings
from .metrics import Metrics

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME_MS = 60  # one LFR frame: chunk_size counts these


class StreamOptions(BaseModel):
    """What a client asked for when it started a stream (protocol fields already mapped)."""

    sample_rate: Literal[8000, 16000] = 16000
    partial: bool = Field(True, description="send partial (online) results while a sentence is spoken")
    two_pass: bool = Field(True, description="re-decode each finished sentence with the offline model")
    punctuation: bool = True
    itn: bool = Field(False, description="inverse text normalization of the finals (三点一四 -> 3.14); partials stay raw")
    max_sentence_silence_ms: int | None = Field(None, ge=100, le=6000, description="None: the server default")
    encoder_chunk_look_back: int | None = Field(None, ge=0, le=64, description="None: the server default")
    decoder_chunk_look_back: int | None = Field(None, ge=0, le=64, description="None: the server default")
    chunk_size: list[int] | None = Field(None, min_length=3, max_length=3, description="None: the server default")
    hotwords: list[str] = Field(default_factory=list)


class StreamWord(BaseModel):
    text: str
    begin_ms: int
    end_ms: int


class StreamEvent(BaseModel):
    """One result of a stream. Times are integer ms from the start of the stream's audio.

    sentence_begin: index, begin_ms.
    partial: index, text (the whole sentence so far, no punctuation), delta (new since the last
        partial), end_ms (audio processed so far).
    sentence_end: index, begin_ms, end_ms, text (final; punctuated, then ITN'd, when asked), words, confidence.
    """

    kind: Literal["sentence_begin", "partial", "sentence_end"]
    index: int = Field(description="1-based sentence number")
    begin_ms: int = 0
    end_ms: int = 0
    text: str = ""
    delta: str = ""
    words: list[StreamWord] = Field(default_factory=list)
    confidence: float = 0.0

    @classmethod
    def from_model(cls, raw: dict) -> "StreamEvent":
        kind = raw["event"]
        words = [StreamWord(text=w["text"], begin_ms=int(w["begin_ms"]), end_ms=int(w["end_ms"]))
                 for w in raw.get("words", [])]
        end_ms = raw.get("time_ms", 0) if kind == "partial" else raw.get("end_ms", 0)
        return cls(kind=kind, index=int(raw["index"]), begin_ms=int(raw.get("begin_ms", 0)), end_ms=int(end_ms),
                   text=raw.get("text", ""), delta=raw.get("delta", ""), words=words,
                   confidence=float(raw.get("confidence", 0.0)))


class Upsampler2x:
    """8 kHz -> 16 kHz across chunk boundaries: zero-stuffing + a windowed-sinc low-pass (stateful FIR)."""

    TAPS = 63

    def __init__(self) -> None:
        n = np.arange(self.TAPS) - (self.TAPS - 1) / 2
        taps = np.sinc(n / 2) * np.hamming(self.TAPS)  # cutoff at the old Nyquist (4 kHz)
        self.taps = (2 * taps / taps.sum()).astype(np.float32)  # gain 2 restores the zero-stuffed level
        self.history = np.zeros(self.TAPS - 1, dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if samples.size == 0:
            return samples
        stuffed = np.zeros(samples.size * 2, dtype=np.float32)
        stuffed[::2] = samples
        padded = np.concatenate((self.history, stuffed))
        self.history = padded[-(self.TAPS - 1):]
        return np.convolve(padded, self.taps, mode="valid").astype(np.float32)


class Stream:
    """One open stream. Not safe for concurrent use: a session feeds it from one coroutine."""

    def __init__(self, service: "StreamingService", triton: AsyncTritonAsrStream, options: StreamOptions,
                 chunk_samples: int, protocol: str):
        self.service = service
        self.triton = triton
        self.options = options
        self.protocol = protocol
        self.chunk_samples = chunk_samples
        self.received_samples = 0  # at 16 kHz
        self.outcome = "dropped"
        self._pending = np.zeros(0, dtype=np.float32)
        self._upsample = Upsampler2x() if options.sample_rate == 8000 else None

    @property
    def received_ms(self) -> int:
        return self.received_samples * 1000 // SAMPLE_RATE

    def fail(self) -> None:
        self.outcome = "failed"

    def _samples(self, pcm: bytes) -> np.ndarray:
        limits = self.service.settings.streaming
        if len(pcm) > limits.max_frame_bytes:
            raise AsrError(f"audio frame of {len(pcm)} bytes; at most {limits.max_frame_bytes} accepted", 400,
                           "frame_too_large")
        if len(pcm) % 2:
            raise AsrError("audio frames must be 16-bit PCM: an odd number of bytes arrived", 400, "bad_frame")
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        if self._upsample is not None:
            samples = self._upsample(samples)
        if self.received_samples + samples.size > limits.max_stream_seconds * SAMPLE_RATE:
            raise AsrError(f"the stream is longer than {limits.max_stream_seconds:.0f} s", 400, "stream_too_long")
        self.received_samples += samples.size
        self.service.metrics.stream_audio_seconds.inc(samples.size / SAMPLE_RATE)
        return samples

    async def _send(self, samples: np.ndarray, end: bool) -> list[StreamEvent]:
        t0 = time.perf_counter()
        raw = await self.triton.send(samples, end=end)
        elapsed = time.perf_counter() - t0
        events = [StreamEvent.from_model(r) for r in raw]
        metrics = self.service.metrics
        if any(e.kind == "partial" for e in events):
            metrics.partial_latency.observe(elapsed)
        if any(e.kind == "sentence_end" for e in events):
            metrics.final_latency.observe(elapsed)
        return events

    async def feed(self, pcm: bytes) -> list[StreamEvent]:
        """Take one binary frame; returns the events of every chunk it completed (often none)."""
        samples = self._samples(pcm)
        self._pending = np.concatenate((self._pending, samples)) if self._pending.size else samples
        whole = self._pending.size // self.chunk_samples * self.chunk_samples
        if whole == 0:
            return []
        ready, self._pending = self._pending[:whole], self._pending[whole:]
        return await self._send(ready, end=False)

    async def finish(self) -> list[StreamEvent]:
        """End of audio: the rest is decoded, open sentences are closed; the stream is then over."""
        rest, self._pending = self._pending, np.zeros(0, dtype=np.float32)
        events = await self._send(rest, end=True)
        self.outcome = "completed"
        return events


class StreamingService:
    def __init__(self, settings: Settings, client: AsyncTritonAsrClient, metrics: Metrics, hotwords=None):
        """hotwords: callable merging request hotwords with the hotword file (TranscriptionService.merged_hotwords)."""
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.active = 0
        self._merge_hotwords = hotwords or (lambda words: words)

    def config_for(self, options: StreamOptions) -> tuple[dict, int]:
        s = self.settings.streaming
        chunk = list(options.chunk_size or s.chunk_size)
        if chunk[1] <= 0 or min(chunk) < 0 or chunk[1] > 30 or chunk[2] > chunk[1]:
            raise AsrError(f"chunk_size {chunk}: the middle value must be 1-30 frames of 60 ms and the look-ahead "
                           "at most the chunk", 400, "bad_chunk_size", "chunk_size")
        config = {
            "chunk_size": chunk, "partial": options.partial, "two_pass": options.two_pass,
            "punctuation": options.punctuation,
            "hotwords": self._merge_hotwords(options.hotwords),
        }
        if options.itn:  # sent only when asked: off is the model's default
            config["itn"] = True
        silence = options.max_sentence_silence_ms or s.max_sentence_silence_ms
        if silence is not None:  # omitted: the model's VAD uses FunASR's dynamic end silence
            config["max_sentence_silence_ms"] = silence
        for key in ("encoder_chunk_look_back", "decoder_chunk_look_back"):
            value = getattr(options, key)
            value = getattr(s, key) if value is None else value
            if value:  # 0 is the model's default
                config[key] = value
        return config, chunk[1] * FRAME_MS * SAMPLE_RATE // 1000

    @contextlib.asynccontextmanager
    async def open(self, options: StreamOptions, protocol: str) -> AsyncIterator[Stream]:
        if not self.settings.streaming.enabled:
            raise AsrError("real-time streaming is disabled on this server", 404, "streaming_disabled")
        if self.active >= self.settings.streaming.max_streams:
            self.metrics.streams.labels(protocol, "rejected").inc()
            raise AsrError(f"too many real-time streams (at most {self.settings.streaming.max_streams}); retry later",
                           429, "too_many_streams", retry_after_s=1)
        config, chunk_samples = self.config_for(options)
        stream = Stream(self, self.client.open_stream(config), options, chunk_samples, protocol)
        self.active += 1
        self.metrics.streams_active.labels(protocol).inc()
        t0 = time.perf_counter()
        try:
            yield stream
        except AsrError:
            stream.outcome = "failed"
            raise
        finally:
            self.active -= 1
            self.metrics.streams_active.labels(protocol).dec()
            if stream.outcome != "completed":
                await stream.triton.abort()
            self.metrics.streams.labels(protocol, stream.outcome).inc()
            event(log, "stream_closed", protocol=protocol, outcome=stream.outcome, audio_ms=stream.received_ms,
                  wall_ms=int((time.perf_counter() - t0) * 1000))
