"""One recording recognised as it streams in, in memory bounded by design (not by its duration).

Audio arrives in pieces of any size. The offline FSMN-VAD runs over it in FunASR's own 60 s strides
(`OfflineVadStream`), so the segments are exactly the whole-file VAD's. Each segment is handed to the
`asr` ensemble as soon as the VAD closes it (at most `max_inflight` at once, so Triton batches them
with other requests' segments), and the results are taken in order: each one becomes a `segment`
event, its text goes through incremental CT-Transformer punctuation (exactly the whole text's
punctuation, see punc's STATE input) and the committed punctuated text becomes a `text` event.
At the end, the same `assemble` as ever builds the whole result from the per-segment results and the
concatenated punctuation, so the streamed result equals the whole-file one by construction.
Diarization keeps only the 1.5 s window embeddings (computed as segments close) and clusters at the end.

Memory per job: the audio not yet run through the VAD (< one 60 s stride), the audio the VAD may
still put in a segment (`OfflineVadStream.min_future_start_ms`), the audio of segments waiting for
recognition (`feed` waits while more than `max_pending_ms` of it is queued: back-pressure on the
sender; once per such wait it may return early to hand over new results, so the backlog stays under
max_pending_ms plus about two requests' audio and VAD strides), and text-sized results. Shared by
`transcribe` (a sequence: audio in pieces, events as they come) and `pipeline` (the whole file in one
request, the whole result out).

First results come early: the first segment is recognised alone, and the number in flight doubles with
each result up to max_inflight (`initial_inflight`, slow start); each result is handed over as soon as it
and all before it are done.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import re
from typing import Awaitable, Callable

import numpy as np

from .diarize import SAMPLES_PER_MS, speech_windows, window_samples, word_speakers
from .diarize_cluster import DEFAULT_MAX_SPEAKERS, cluster_speakers, validate_speaker_options
from .fsmn_vad import OfflineVadStream
from .sentences import assemble, itn_sentence, join_words, split_sentences, token_logprobs, word_stamps

_TAG = re.compile(r"<\|[^|]*\|>")
# CONFIG.model: the recognizer each segment goes to (`asr`: SeACo-Paraformer; `sensevoice`: SenseVoice-Small)
MODELS = ("paraformer", "sensevoice")
SENSEVOICE_LANGUAGES = ("auto", "zh", "en", "yue", "ja", "ko", "nospeech")


class JobInputError(ValueError):
    """The job's options or audio are malformed (INVALID_ARG)."""


def split_long(segments: list[list[int]], max_ms: int) -> list[list[int]]:
    """Cut segments longer than max_ms into equal parts (feature_extractor accepts at most 60.1 s)."""
    out = []
    for beg, end in segments:
        parts = max(1, -(-(end - beg) // max_ms))
        bounds = [beg + (end - beg) * i // parts for i in range(parts + 1)]
        out.extend([bounds[i], bounds[i + 1]] for i in range(parts))
    return out


def _cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff"


@dataclasses.dataclass(frozen=True)
class JobOptions:
    hotwords: tuple[str, ...] = ()
    punctuation: bool = True
    timestamps: bool = True
    diarize: bool = False
    num_speakers: int | None = None
    min_speakers: int = 1
    max_speakers: int = DEFAULT_MAX_SPEAKERS
    itn: bool = False
    model: str = "paraformer"
    language: str = "auto"  # sensevoice: the language query (auto: detected)
    use_itn: bool | None = None  # sensevoice: its own punctuation + ITN (withitn); None: as `punctuation`
    logprobs: bool = False  # each sentence (and segment event) carries its words' log-probabilities

    @classmethod
    def parse(cls, raw: dict, default_max_speakers: int, max_hotwords: int) -> "JobOptions":
        """From the CONFIG JSON of `transcribe` (or the pipeline's tensors, already as a dict)."""
        if not isinstance(raw, dict):
            raise JobInputError("CONFIG must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise JobInputError(f"CONFIG: unknown key(s) {unknown}; known: {sorted(known)}")
        hot = raw.get("hotwords") or []
        if not isinstance(hot, list) or not all(isinstance(w, str) for w in hot):
            raise JobInputError("CONFIG.hotwords must be a list of strings")
        hot = tuple(w for w in hot if w.strip())
        if len(hot) > max_hotwords:
            raise JobInputError(f"{len(hot)} hotwords; at most {max_hotwords}")
        flags = {}
        for name, default in (("punctuation", True), ("timestamps", True), ("diarize", False), ("itn", False),
                              ("logprobs", False)):
            value = raw.get(name, default)
            if not isinstance(value, bool):
                raise JobInputError(f"CONFIG.{name} must be true or false")
            flags[name] = value
        counts = {}
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            value = raw.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise JobInputError(f"CONFIG.{name} must be an integer")
            counts[name] = None if value is None or value <= 0 else value
        lo = counts["min_speakers"] or 1
        hi = counts["max_speakers"] or max(default_max_speakers, lo)
        if flags["diarize"]:
            try:
                validate_speaker_options(counts["num_speakers"], lo, hi)
            except ValueError as e:
                raise JobInputError(str(e)) from e
        extra = {}
        if "model" in raw or "language" in raw or "use_itn" in raw:  # the second model (sensevoice)
            extra = _model_options(raw, hot, flags)
        return cls(hotwords=hot, num_speakers=counts["num_speakers"], min_speakers=lo, max_speakers=hi,
                   **{**flags, **extra})

    @property
    def sensevoice(self) -> bool:
        return self.model == "sensevoice"


def _model_options(raw: dict, hot: tuple, flags: dict) -> dict:
    """CONFIG.model / language / use_itn. SenseVoice punctuates itself (use_itn, default: `punctuation`),
    so the CT-Transformer is not run for it; it has no hotword biasing (a clear error, never a silent drop)."""
    model = raw.get("model", "paraformer")
    if model not in MODELS:
        raise JobInputError(f"CONFIG.model {model!r}: one of {', '.join(MODELS)}")
    language = raw.get("language") or "auto"
    if not isinstance(language, str) or language.lower() not in SENSEVOICE_LANGUAGES:
        raise JobInputError(f"CONFIG.language {language!r}: one of {', '.join(SENSEVOICE_LANGUAGES)}")
    use_itn = raw.get("use_itn")
    if use_itn is not None and not isinstance(use_itn, bool):
        raise JobInputError("CONFIG.use_itn must be true or false")
    if model != "sensevoice":
        if language.lower() != "auto" or use_itn is not None:
            raise JobInputError("CONFIG.language and CONFIG.use_itn apply to model sensevoice only")
        return {}
    if hot:
        raise JobInputError("hotwords are not supported by model sensevoice (SenseVoice has no hotword biasing)")
    return {"model": model, "language": language.lower(),
            "use_itn": flags["punctuation"] if use_itn is None else use_itn, "punctuation": False}


@dataclasses.dataclass(frozen=True)
class JobLimits:
    max_segment_ms: int = 60100
    min_segment_ms: int = 30
    max_inflight: int = 16  # segments of one job being recognised at once
    # slow start: segments in flight before the first result; the window doubles with each result in order
    # up to max_inflight, so the first segments are not batched behind a dozen others (first result sooner)
    initial_inflight: int = 16
    max_pending_ms: int = 180_000  # audio of segments closed but not yet recognised: feed() waits above it
    merge_threshold: float = 0.78


@dataclasses.dataclass
class Backend:
    """The BLS calls a job makes (the model supplies them; tests may too)."""
    # -> {text, words, timestamps (segment ms), logprobs (per word; optional)}
    recognize: Callable[[np.ndarray, tuple[str, ...]], Awaitable[dict]]
    punctuate: Callable[[str, str, bool], Awaitable[dict]]  # (piece, state, final) -> {text, words, marks, state}
    embed: Callable[[np.ndarray], Awaitable[np.ndarray]]  # one 1.5 s window -> embedding
    itn: Callable[[list[str]], Awaitable[list[str]]] | None = None  # texts -> the same texts, ITN'd
    # (segment, language, use_itn, timestamps) -> {text, words, timestamps, language, emotion, events}: model
    # sensevoice (words: the text as one segment-level word); with timestamps also token_words/token_timestamps
    # (SenseVoice's words and their CTC-alignment times, segment ms)
    sensevoice: Callable[[np.ndarray, str, bool, bool], Awaitable[dict]] | None = None


class LongFileJob:
    def __init__(self, vad, options: JobOptions, backend: Backend, limits: JobLimits = JobLimits(),
                 executor: concurrent.futures.Executor | None = None):
        if options.itn and backend.itn is None:
            raise JobInputError("inverse text normalization was asked for, but this server has no itn model")
        self.options = options
        self.backend = backend
        self.limits = limits
        self._vad = OfflineVadStream(vad)
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # sample index of _buf[0]
        self.received = 0  # samples received
        self._final = False  # the caller sent its last audio
        self._finished = False  # ... and the VAD has closed the last segments
        self._parts: list[tuple[int, int]] = []
        self._tasks: list[asyncio.Task] = []
        # CPU work (VAD strides, clustering) runs on `executor`, not the loop's default executor: the python
        # backend runs each BLS async_exec on a default-executor thread for its whole duration
        self._executor = executor
        self._window = max(1, min(limits.initial_inflight, limits.max_inflight))
        self._sem = asyncio.Semaphore(self._window)
        self._pending_ms = 0
        self._early = False  # the last feed returned with the backlog still over max_pending_ms
        self._windows: list[tuple[int, int]] = []
        self._embeddings: list[asyncio.Task] = []
        self._events: list[dict] = []
        self._changed = asyncio.Event()
        self._asr: list[dict] = []
        self._punc = {"text": [], "words": [], "marks": []}
        self._punc_state = ""
        self._punc_started = False
        self._joined_last = ""  # last character of the text joined so far (segment separators)
        self._itn_rest = ""  # with ITN: committed text of the sentence not finished yet
        self._itn_text: list[str] = []  # with ITN: the ITN'd sentences streamed so far (= result text)
        self._itn_cache: dict[str, str] = {}
        self.recognized_ms = 0
        self.error: BaseException | None = None
        self.result: dict | None = None
        self._emitter = asyncio.ensure_future(self._emit())

    # -- audio in ------------------------------------------------------------------------------

    async def feed(self, samples: np.ndarray) -> None:
        """Take the next audio; returns once the recognition backlog is under max_pending_ms, or (once
        until the backlog has been under it again) as soon as there are results to hand over: a sender
        held by back-pressure still gets the first results as soon as they exist."""
        self._check()
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            return
        if self._final:
            raise JobInputError("audio after the final piece")
        self._buf = np.concatenate([self._buf, samples])
        self.received += samples.size
        segments = await self._cpu(self._vad.accept, samples)
        self._start(segments)
        limit = self.limits.max_pending_ms
        await self._wait(lambda: self._pending_ms <= limit or (bool(self._events) and not self._early))
        self._early = self._pending_ms > limit

    async def finish(self) -> None:
        """No more audio: the VAD's final stride closes the last segments."""
        self._check()
        if self._final:
            return
        self._final = True
        segments = await self._cpu(self._vad.finish)
        self._start(segments)
        self._finished = True
        self._changed.set()

    async def _cpu(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _widen(self) -> None:
        """Slow start: one more result is out, so twice as many segments may be in flight (up to max_inflight)."""
        wider = min(self.limits.max_inflight, 2 * self._window)
        for _ in range(wider - self._window):
            self._sem.release()
        self._window = wider

    def _start(self, segments: list[list[int]]) -> None:
        parts = [p for p in split_long(segments, self.limits.max_segment_ms)
                 if p[1] - p[0] >= self.limits.min_segment_ms]
        for beg, end in parts:
            audio = self._slice(beg, end)
            self._parts.append((beg, end))
            self._pending_ms += end - beg
            self._tasks.append(asyncio.ensure_future(self._recognize(audio, end - beg)))
            if self.options.diarize:
                for ws, we in speech_windows([[beg, end]]):
                    self._windows.append((ws, we))
                    self._embeddings.append(asyncio.ensure_future(
                        self._embed(window_samples(audio, ws - beg, we - beg))))
        keep_from = min(self._vad.min_future_start_ms(), self._vad.processed_ms) * SAMPLES_PER_MS
        if keep_from > self._buf_start:
            drop = min(keep_from - self._buf_start, self._buf.shape[0])
            self._buf = self._buf[drop:].copy()
            self._buf_start += drop
        if parts:
            self._changed.set()

    def _slice(self, beg_ms: int, end_ms: int) -> np.ndarray:
        b, e = beg_ms * SAMPLES_PER_MS - self._buf_start, end_ms * SAMPLES_PER_MS - self._buf_start
        if b < 0:
            raise RuntimeError(f"segment [{beg_ms}, {end_ms}] ms starts before the audio kept ({self._buf_start} samples)")
        return np.ascontiguousarray(self._buf[b:e])

    async def _recognize(self, audio: np.ndarray, ms: int) -> dict:
        try:
            async with self._sem:
                if self.options.sensevoice:
                    if self.backend.sensevoice is None:
                        raise JobInputError("model sensevoice was asked for, but this server has no sensevoice model")
                    return await self.backend.sensevoice(audio, self.options.language, bool(self.options.use_itn),
                                                         self.options.timestamps)
                return await self.backend.recognize(audio, self.options.hotwords)
        finally:
            self._pending_ms -= ms
            self._changed.set()

    async def _embed(self, window: np.ndarray) -> np.ndarray:
        async with self._sem:
            return await self.backend.embed(window)

    # -- results out ---------------------------------------------------------------------------

    async def _emit(self) -> None:
        try:
            i = 0
            while True:
                while i >= len(self._parts) and not self._finished:
                    await self._changed_wait()
                if i >= len(self._parts):
                    break
                r = await self._tasks[i]
                self._tasks[i] = None  # the task (and its result) is no longer needed
                beg, end = self._parts[i]
                item = {"start_ms": beg, "end_ms": end, "text": r["text"], "words": list(r["words"]),
                        "timestamps": [[int(s) + beg, int(e) + beg] for s, e in r["timestamps"]]}
                item.update({k: r[k] for k in ("language", "emotion", "events") if k in r})  # sensevoice
                if r.get("token_words"):  # sensevoice: its words' times, replacing the segment-level word later
                    item["token_words"] = list(r["token_words"])
                    item["token_timestamps"] = [[int(s) + beg, int(e) + beg] for s, e in r["token_timestamps"]]
                segment = {"type": "segment", "index": i, "start_ms": beg, "end_ms": end, "text": item["text"]}
                if self.options.logprobs and r.get("logprobs") is not None:  # [{token: word, logprob}]; none from sensevoice
                    item["logprobs"] = segment["logprobs"] = token_logprobs(item["words"], r.get("logprobs"))
                self._asr.append(item)
                self.recognized_ms = end
                self._events.append(segment)
                self._widen()
                await self._text(item)
                i += 1
                self._changed.set()
            if self.options.punctuation and self._punc_started:
                await self._punctuate("", final=True)
            if self.options.itn:
                await self._commit_text("", final=True)
            self.result = await self._assemble()
            self._events.append({"type": "result", "result": self.result})
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported to the caller by _check
            self.error = exc
            self._cancel_work()
        finally:
            self._changed.set()

    async def _changed_wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _piece(self, text: str) -> str:
        """The next piece of the text AutoModel joins before punctuation (sentences.join_texts)."""
        text = _TAG.sub("", text).strip()
        if not text:
            return ""
        sep = "" if not self._joined_last or (_cjk(self._joined_last) and _cjk(text[0])) else " "
        self._joined_last = text[-1]
        return sep + text

    async def _text(self, item: dict) -> None:
        if self.options.punctuation:
            piece = self._piece(item["text"])
            if piece:
                await self._punctuate(piece, final=False)
        else:
            piece = self._piece(join_words(item["words"]))
            if piece:
                await self._commit_text(piece, final=True)  # without punctuation a segment is a sentence

    async def _punctuate(self, piece: str, final: bool) -> None:
        self._punc_started = True
        out = await self.backend.punctuate(piece, self._punc_state, final)
        self._punc_state = out["state"]
        self._punc["text"].append(out["text"])
        self._punc["words"].extend(out["words"])
        self._punc["marks"].extend(out["marks"])
        if out["text"]:
            await self._commit_text(out["text"], final=False)

    async def _commit_text(self, text: str, final: bool) -> None:
        """The next committed piece of the final text becomes `text` events: as it is without ITN;
        with ITN, each sentence once it is finished (a sentence-final mark, or `final`), ITN'd."""
        if not self.options.itn:
            if text:
                self._events.append({"type": "text", "text": text})
            return
        self._itn_rest += text
        if final:
            done, self._itn_rest = ([self._itn_rest] if self._itn_rest else []), ""
        else:
            done, self._itn_rest = split_sentences(self._itn_rest)
        for out in await self._normalize(done):
            self._itn_text.append(out)
            if out:
                self._events.append({"type": "text", "text": out})

    async def _normalize(self, texts: list[str]) -> list[str]:
        todo = sorted({t for t in texts if t.strip() and t not in self._itn_cache})
        if todo:
            if self.backend.itn is None:
                raise JobInputError("inverse text normalization was asked for, but this server has no itn model")
            for t, out in zip(todo, await self.backend.itn(todo)):
                self._itn_cache[t] = out
        return [self._itn_cache.get(t, t) for t in texts]

    async def _assemble(self) -> dict:
        asr = self._asr
        punc = None
        if self.options.punctuation and any(a["words"] for a in asr):
            punc = {"text": "".join(self._punc["text"]), "words": self._punc["words"], "marks": self._punc["marks"]}
        speakers = None
        if self.options.diarize:
            stamps = [t for a in asr for t in word_stamps(a)]
            if not self._windows:
                speakers = [0] * len(stamps)
            else:
                embeddings = np.stack([(await t).reshape(-1) for t in self._embeddings])
                o = self.options
                labels = await self._cpu(functools.partial(
                    cluster_speakers, embeddings, num_speakers=o.num_speakers, min_speakers=o.min_speakers,
                    max_speakers=o.max_speakers, merge_threshold=self.limits.merge_threshold))
                speakers = word_speakers(stamps, self._windows, labels)
        result = assemble(asr, punc, duration_ms=self.received // SAMPLES_PER_MS,
                          with_timestamps=self.options.timestamps, speakers=speakers)
        if self.options.sensevoice and self.options.timestamps:
            _sensevoice_words(result, asr)
        if self.options.itn:
            # per sentence (the units the text events carried); words realigned (sentences.itn_sentence)
            sents = result["sentences"]
            result["sentences"] = [itn_sentence(s, out) for s, out in
                                   zip(sents, await self._normalize([s["text"] for s in sents]))]
            result["text"] = "".join(self._itn_text)
        result["raw_text"] = " ".join(a["text"] for a in asr if a["text"])
        if self.options.sensevoice:
            _sensevoice_fields(result, asr)
        result["hotwords"] = list(self.options.hotwords)
        return result

    # -- control -------------------------------------------------------------------------------

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    async def _wait(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._check()
            if self._emitter.done():
                break
            await self._changed_wait()
        self._check()

    @property
    def done(self) -> bool:
        return self.result is not None

    def progress(self) -> dict:
        return {"type": "progress", "received_ms": self.received // SAMPLES_PER_MS,
                "processed_ms": self._vad.processed_ms, "recognized_ms": self.recognized_ms,
                "final": self._final}

    async def take(self, wait_s: float = 0.0) -> list[dict]:
        """The events since the last take; with wait_s, waits up to that long for at least one
        (returns at once when the job is done or failed)."""
        if wait_s > 0 and not self._events and not self.done:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            while not self._events and not self.done and self.error is None:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except asyncio.TimeoutError:
                    break
        self._check()
        events, self._events = self._events, []
        return events

    async def run_whole(self, wav: np.ndarray, stride: int) -> dict:
        """The whole file at once (the `pipeline` model): fed in strides, the whole result back."""
        for i in range(0, wav.shape[0], stride):
            await self.feed(wav[i:i + stride])
        await self.finish()
        await asyncio.shield(self._emitter)
        self._check()
        return self.result

    def _cancel_work(self) -> None:
        for task in [*self._tasks, *self._embeddings]:
            if task is not None and not task.done():
                task.cancel()
            elif task is not None and not task.cancelled():
                task.exception()  # retrieved: a failed sibling is reported once, through self.error
        self._buf = np.zeros(0, np.float32)

    def cancel(self) -> None:
        """Stop all work of this job now (client gone, aborted or evicted)."""
        if not self._emitter.done():
            self._emitter.cancel()
        self._cancel_work()


def _sensevoice_words(result: dict, asr: list[dict]) -> None:
    """SenseVoice's aligned words in place of each sentence's one segment-level word (a SenseVoice sentence
    is one VAD segment: its text is the segment's); segments without them keep the segment-level word."""
    import bisect

    starts = [a["start_ms"] for a in asr]
    for sentence in result["sentences"]:
        i = bisect.bisect_right(starts, sentence["start_ms"]) - 1
        if i >= 0 and asr[i].get("token_words") and sentence.get("words") == asr[i]["words"]:
            sentence["words"] = list(asr[i]["token_words"])
            sentence["timestamps"] = [list(t) for t in asr[i]["token_timestamps"]]


def _sensevoice_fields(result: dict, asr: list[dict]) -> None:
    """SenseVoice's language, emotion and events on each sentence (from the segment it lies in) and the
    result's language (the one detected over the most speech)."""
    import bisect

    starts = [a["start_ms"] for a in asr]  # segments are in time order and do not overlap
    for sentence in result["sentences"]:
        i = bisect.bisect_right(starts, sentence["start_ms"]) - 1
        if i >= 0 and sentence["start_ms"] < asr[i]["end_ms"]:
            sentence.update({k: asr[i].get(k) for k in ("language", "emotion", "events")})
    spoken: dict[str, int] = {}
    for a in asr:
        if a.get("language") and a["text"]:
            spoken[a["language"]] = spoken.get(a["language"], 0) + a["end_ms"] - a["start_ms"]
    result["model"] = "sensevoice"
    result["language"] = max(spoken, key=spoken.get) if spoken else ""
