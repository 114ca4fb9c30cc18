"""The one path every API surface uses: admission -> ffmpeg -> Triton `pipeline` -> Transcript."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from .. import audio
from ..errors import AsrError
from ..logs import event
from ..triton_client import AsyncTritonAsrClient
from ..triton_client import TranscribeOptions as TritonOptions
from .admission import Admission
from .config import Settings
from .fetch import fetch
from .hotwords import HotwordFile
from .metrics import Metrics
from .schemas import Sentence, TranscribeOptions, Transcript, Word

log = logging.getLogger(__name__)


def speaker_label(template: str, index: int) -> str:
    return template.format(index=index, number=index + 1)


def to_transcript(result: dict, hotwords: list[str], processing_ms: int,
                  label_template: str = "SPEAKER_{index:02d}") -> Transcript:
    sentences = []
    for s in result.get("sentences", []):
        words = [Word(text=w, start_ms=int(t[0]), end_ms=int(t[1]))
                 for w, t in zip(s.get("words", []), s.get("timestamps", []))]
        index = s.get("speaker")
        sentences.append(Sentence(start_ms=int(s["start_ms"]), end_ms=int(s["end_ms"]), text=s["text"],
                                  words=words, speaker_index=index,
                                  speaker=None if index is None else speaker_label(label_template, int(index))))
    return Transcript(text=result.get("text", ""), duration_ms=int(result.get("duration_ms", 0)),
                      sentences=sentences, hotwords=hotwords, processing_ms=processing_ms,
                      num_speakers=result.get("num_speakers"))


class TranscriptionService:
    def __init__(self, settings: Settings, client: AsyncTritonAsrClient, metrics: Metrics):
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.admission = Admission(settings.limits.max_concurrent_jobs, settings.limits.max_queued_jobs,
                                   settings.limits.queue_timeout_s)
        self.hotword_file = HotwordFile(settings.hotwords.file)

    def check_model(self, name: str | None, param: str = "model") -> str:
        m = self.settings.models
        if name and name not in (m.default, *m.aliases):
            raise AsrError(f"model {name!r} is not served here; use {m.default!r} or one of {', '.join(m.aliases)}",
                           404, "model_not_found", param)
        return m.default

    def merged_hotwords(self, requested: list[str]) -> list[str]:
        words = []
        for w in [*self.hotword_file.words(), *requested]:
            if w and w not in words:
                words.append(w)
        too_long = [w for w in words if len(w) > self.settings.limits.max_hotword_chars]
        if too_long:
            raise AsrError(f"hotword {too_long[0][:40]!r} is longer than {self.settings.limits.max_hotword_chars} characters",
                           400, "hotword_too_long", "hotwords")
        if len(words) > self.settings.limits.max_hotwords:
            raise AsrError(f"{len(words)} hotwords (request + hotword file); at most {self.settings.limits.max_hotwords}",
                           400, "too_many_hotwords", "hotwords")
        return words

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

    async def fetch(self, url: str) -> bytes:
        return await fetch(url, self.settings.audio, self.settings.limits.max_upload_bytes)

    async def transcribe(self, data: bytes, options: TranscribeOptions) -> Transcript:
        limits = self.settings.limits
        if len(data) > limits.max_upload_bytes:
            self.metrics.rejected.labels("too_large").inc()
            raise AsrError(f"the audio is {len(data)} bytes; at most {limits.max_upload_bytes} accepted", 413, "too_large", "file")
        hotwords = self.merged_hotwords(options.hotwords)
        async with self._admitted():
            t0 = time.perf_counter()
            af = self.settings.audio.denoise_filter if self.settings.audio.denoise else None
            samples = await asyncio.to_thread(
                audio.decode, data, limits.max_audio_seconds, limits.ffmpeg_timeout_s, self.settings.audio.ffmpeg,
                af, options.pcm_sample_rate)
            t1 = time.perf_counter()
            self.metrics.ffmpeg_seconds.observe(t1 - t0)
            max_speakers = options.max_speakers
            if options.diarize and options.num_speakers is None and max_speakers is None:
                max_speakers = max(self.settings.diarization.max_speakers, options.min_speakers or 1)
            result = await self.client.transcribe(samples, TritonOptions(
                hotwords, options.punctuation, options.timestamps, options.diarize, options.num_speakers,
                options.min_speakers, max_speakers))
            t2 = time.perf_counter()
            self.metrics.triton_seconds.observe(t2 - t1)
            seconds = len(samples) / audio.SAMPLE_RATE
            self.metrics.audio_seconds.inc(seconds)
            if seconds > 0:
                self.metrics.rtf.observe((t2 - t0) / seconds)
            event(log, "transcribed", audio_s=round(seconds, 2), ffmpeg_ms=int((t1 - t0) * 1000),
                  triton_ms=int((t2 - t1) * 1000), hotwords=len(hotwords))
            return to_transcript(result, hotwords, int((t2 - t0) * 1000), self.settings.diarization.label_template)
