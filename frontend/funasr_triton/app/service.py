"""The one path every API surface uses: admission -> streamed ffmpeg decode -> Triton `transcribe` -> events.

A recording is never held whole: the upload is spooled to disk (upload.py), ffmpeg decodes it in
chunks (audio.DecodeStream, read one chunk ahead so decoding overlaps recognition), each chunk goes
to the recording's Triton sequence (triton_client.AsrJob), and what Triton has recognised comes back
as events while the rest is still being decoded. `events()` yields them; `transcribe()` is the
one-shot view of the same path. Leaving either early (client gone, error) aborts the Triton sequence,
so no more of the recording is recognised.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import AsyncIterator

import numpy as np

from .. import audio
from ..contract import TranscribeOptions, Transcript
from ..errors import AsrError
from ..logs import event
from ..triton_client import AsyncTritonAsrClient
from .admission import Admission
from .config import Settings
from .fetch import fetch
from .hotwords import HotwordFile, check_hotwords
from .metrics import Metrics
from .upload import SpooledAudio

log = logging.getLogger(__name__)
_EOF = None
PARAFORMER, SENSEVOICE = "paraformer", "sensevoice"  # TranscribeOptions.model (the job's recognizer)


class TranscriptionService:
    def __init__(self, settings: Settings, client: AsyncTritonAsrClient, metrics: Metrics):
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.admission = Admission(settings.limits.max_concurrent_jobs, settings.limits.max_queued_jobs,
                                   settings.limits.queue_timeout_s)
        self.hotword_file = HotwordFile(settings.hotwords.file)
        self._sensevoice: tuple[float, bool] | None = None  # (probed at, available)

    def check_model(self, name: str | None, param: str = "model") -> str:
        """The recognizer a requested model name selects: "paraformer" (the default and its aliases) or
        "sensevoice" (models.sensevoice and its aliases); any other name is a 404 model_not_found."""
        m = self.settings.models
        if name and name in (m.sensevoice, *m.sensevoice_aliases):
            return SENSEVOICE
        if name and name not in (m.default, *m.aliases):
            raise AsrError(f"model {name!r} is not served here; use {m.default!r} or one of {', '.join(m.aliases)}",
                           404, "model_not_found", param)
        return PARAFORMER

    async def sensevoice_available(self) -> bool:
        """Whether Triton serves an exported `sensevoice` (probed, the answer reused for models.probe_ttl_s)."""
        now = time.monotonic()
        if self._sensevoice is None or now - self._sensevoice[0] > self.settings.models.probe_ttl_s:
            self._sensevoice = (now, await self.client.sensevoice_available())
        return self._sensevoice[1]

    async def require_model(self, model: str, name: str | None, param: str = "model") -> None:
        """404 model_not_found when `model` (check_model's answer) is not exported/loaded in Triton."""
        if model == SENSEVOICE and not await self.sensevoice_available():
            raise AsrError(f"model {name!r} is not served here: this server's model repository has no SenseVoice "
                           "export (funasr-triton export --stages sensevoice)", 404, "model_not_found", param)

    def merged_hotwords(self, requested: list[str]) -> list[str]:
        return check_hotwords([*self.hotword_file.words(), *requested], self.settings.limits)

    @contextlib.asynccontextmanager
    async def _admitted(self):
        """A recognition slot, with its metrics: queued while waiting, rejected when refused, in flight while held."""
        async with contextlib.AsyncExitStack() as stack:
            self.metrics.queued.inc()
            try:
                await stack.enter_async_context(self.admission.slot())
            except AsrError:
                self.metrics.rejected.labels("busy").inc()
                raise
            finally:
                self.metrics.queued.dec()
            self.metrics.inflight.inc()
            try:
                yield
            finally:
                self.metrics.inflight.dec()

    async def fetch(self, url: str) -> SpooledAudio:
        return await fetch(url, self.settings.audio, self.settings.limits.max_upload_bytes)

    def _decoder(self, source: SpooledAudio | bytes, options: TranscribeOptions) -> audio.DecodeStream:
        limits = self.settings.limits
        af = self.settings.audio.denoise_filter if self.settings.audio.denoise else None
        return audio.DecodeStream(source.path if isinstance(source, SpooledAudio) else source,
                                  chunk_samples=int(limits.send_seconds * audio.SAMPLE_RATE),
                                  max_seconds=limits.max_audio_seconds, timeout_s=limits.ffmpeg_timeout_s,
                                  ffmpeg=self.settings.audio.ffmpeg, audio_filter=af,
                                  pcm_sample_rate=options.pcm_sample_rate)

    @staticmethod
    async def _read_ahead(decoder: audio.DecodeStream, queue: asyncio.Queue) -> None:
        try:
            async for chunk in decoder:
                await queue.put(chunk)
            await queue.put(_EOF)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            await queue.put(exc)

    async def events(self, source: SpooledAudio | bytes, options: TranscribeOptions) -> AsyncIterator[dict]:
        """The recording's events as Triton recognises it (see model_repository/transcribe/config.pbtxt):
        `segment` and `text` (the next piece of the final text), `progress` after every Triton answer,
        and last `{"type": "transcript", "transcript": Transcript}`. Errors before the first event are
        the usual AsrErrors (bad audio, limits, backend). The source's size was bounded when it was read
        (app/upload.py: limits.max_upload_bytes)."""
        if options.diarize and not self.settings.diarization.enabled:
            raise AsrError("speaker diarization is disabled on this server", 400, "diarization_disabled",
                           "enable_speaker_diarization")
        if options.model == SENSEVOICE and options.hotwords:
            raise AsrError("hotwords are not supported by SenseVoice-Small (it has no hotword biasing); "
                           "send them to the default model", 400, "unsupported_hotwords", "hotwords")
        # the hotword file biases the default model only: SenseVoice has no hotwords
        hotwords = self.merged_hotwords(options.hotwords) if options.model != SENSEVOICE else []
        async with self._admitted():
            t0 = time.perf_counter()
            job = self.client.open_job(options.model_copy(update={"hotwords": hotwords}))
            decoder = self._decoder(source, options)
            queue: asyncio.Queue = asyncio.Queue(maxsize=1)
            reader = asyncio.ensure_future(self._read_ahead(decoder, queue))
            decode_wait = triton_s = 0.0
            finished = False
            try:
                final = False
                while not final:
                    t = time.perf_counter()
                    item = await queue.get()
                    decode_wait += time.perf_counter() - t
                    if isinstance(item, BaseException):
                        raise item
                    if item is _EOF:
                        chunk, final = np.zeros(0, np.float32), True
                    else:
                        chunk = item
                    t = time.perf_counter()
                    events = await job.send(chunk, final=final)
                    triton_s += time.perf_counter() - t
                    for e in events:
                        yield e
                    yield job.progress
                while job.result is None:
                    t = time.perf_counter()
                    events = await job.poll()
                    triton_s += time.perf_counter() - t
                    for e in events:
                        if e.get("type") != "result":
                            yield e
                    yield job.progress
                await job.close()
                finished = True
            finally:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.shield(decoder.aclose())
                if not finished:
                    await asyncio.shield(job.abort())
            total = time.perf_counter() - t0
            # the Transcript is all that is kept: the job's parsed result goes before it is handed on
            result, job.result = job.result, None
            transcript = Transcript.from_result(result, hotwords, int(total * 1000),
                                                self.settings.diarization.label_template)
            seconds = result.duration_ms / 1000
            self.metrics.ffmpeg_seconds.observe(decode_wait)
            self.metrics.triton_seconds.observe(triton_s)
            self.metrics.audio_seconds.inc(seconds)
            if seconds > 0:
                self.metrics.rtf.observe(total / seconds)
            event(log, "transcribed", audio_s=round(seconds, 2), wall_ms=int(total * 1000),
                  decode_wait_ms=int(decode_wait * 1000), triton_ms=int(triton_s * 1000), hotwords=len(hotwords),
                  segments=len(result.vad_segments))
            del result
            yield {"type": "transcript", "transcript": transcript}

    async def transcribe(self, source: SpooledAudio | bytes, options: TranscribeOptions) -> Transcript:
        """The whole transcript of a recording (the same streamed path, read to its end)."""
        async with contextlib.aclosing(self.events(source, options)) as events:
            async for e in events:
                if e["type"] == "transcript":
                    return e["transcript"]
        raise AsrError("recognition ended without a result", 502, "backend_error")
