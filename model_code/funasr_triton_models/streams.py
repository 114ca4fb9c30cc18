"""Real-time streams of `streaming_asr`: streaming FSMN-VAD + streaming Paraformer + 2-pass finals.

No Triton in this file: model.py turns requests into `ChunkRequest`s, runs `StreamManager.run`
and supplies the offline recogniser and punctuator (BLS to `asr` and `punc`) as `Offline`.

Per chunk (chunk_size[1] x 60 ms of audio), as FunASR's 2pass server does it:
1. the streaming VAD marks sentence starts ([beg, -1]) and ends ([-1, end]);
2. the streaming Paraformer decodes the chunk (batched across every stream that has a chunk); when
   the VAD ended a sentence in this chunk, the chunk is the online decoder's final one (funasr's
   ``is_final=True``: the CIF adds its 0.45 tail weight, which often fires the sentence's last
   token), as the end of the whole stream is;
3. while a sentence is open its online text is sent as `partial` events;
4. at a sentence end the offline model re-decodes the sentence's audio (2-pass), punctuation is
   applied, then (CONFIG `itn`) inverse text normalization per sentence, as offline (`sentences.itn_sentence`
   realigns the words); a `sentence_end` event carries the final text, and the online decoder starts
   afresh. Partial results stay as the online model recognised them.
Events are plain dicts (JSON on the wire); times are integer ms from the start of the stream.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .asr_text import sentence_postprocess
from .fsmn_vad import FsmnVad, OnlineVad
from .paraformer_online import MAX_LOOK_BACK, ParaformerOnline
from .sentences import itn_sentence, split_sentences

SAMPLES_PER_MS = 16
MIN_SEGMENT_MS = 30  # shorter than one LFR window: nothing to re-decode


class StreamInputError(ValueError):
    """The request is wrong (bad config, unknown stream...): INVALID_ARG, the stream is unaffected."""


@dataclass
class StreamConfig:
    chunk_size: tuple[int, int, int] = (0, 10, 5)
    partial: bool = True
    two_pass: bool = True
    punctuation: bool = True
    itn: bool = False  # inverse text normalization of the finals (the `itn` model), per sentence after punctuation
    max_sentence_silence_ms: int | None = None  # None: FunASR's dynamic end-silence schedule
    encoder_chunk_look_back: int = 0  # FunASR's streaming Paraformer options (chunks of earlier context)
    decoder_chunk_look_back: int = 0
    hotwords: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: str | None, max_hotwords: int) -> "StreamConfig":
        try:
            data = json.loads(raw) if raw else {}
        except json.JSONDecodeError as e:
            raise StreamInputError(f"CONFIG is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise StreamInputError("CONFIG must be a JSON object")
        unknown = sorted(set(data) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise StreamInputError(f"unknown CONFIG key(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        config = cls()
        for key in ("partial", "two_pass", "punctuation", "itn"):
            if key in data:
                if not isinstance(data[key], bool):
                    raise StreamInputError(f"CONFIG {key} must be true or false")
                setattr(config, key, data[key])
        if "chunk_size" in data:
            chunk = data["chunk_size"]
            if not (isinstance(chunk, list) and len(chunk) == 3 and all(isinstance(c, int) for c in chunk)):
                raise StreamInputError("CONFIG chunk_size must be three integers, e.g. [0, 10, 5]")
            config.chunk_size = tuple(chunk)
        if "max_sentence_silence_ms" in data:
            ms = data["max_sentence_silence_ms"]
            if ms is not None and (not isinstance(ms, int) or isinstance(ms, bool) or not 100 <= ms <= 6000):
                raise StreamInputError("CONFIG max_sentence_silence_ms must be an integer in 100..6000 or null "
                                       "(FunASR's dynamic end silence)")
            config.max_sentence_silence_ms = ms
        for key in ("encoder_chunk_look_back", "decoder_chunk_look_back"):
            if key in data:
                value = data[key]
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_LOOK_BACK:
                    raise StreamInputError(f"CONFIG {key} must be an integer in 0..{MAX_LOOK_BACK}")
                setattr(config, key, value)
        if "hotwords" in data:
            words = data["hotwords"]
            if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
                raise StreamInputError("CONFIG hotwords must be a list of strings")
            words = [w.strip() for w in words if w.strip()]
            if len(words) > max_hotwords:
                raise StreamInputError(f"{len(words)} hotwords; at most {max_hotwords}")
            config.hotwords = words
        if not (config.partial or config.two_pass):
            raise StreamInputError("CONFIG: partial and two_pass are both false: nothing would be recognised")
        return config


class Offline(Protocol):
    async def recognize(self, wav: np.ndarray, hotwords: list[str]) -> tuple[str, list[str], list[list[int]]]:
        """One sentence -> (text, words, [[beg_ms, end_ms], ...] relative to the sentence)."""

    async def punctuate(self, text: str) -> str: ...

    async def normalize(self, texts: list[str]) -> list[str]:
        """Inverse text normalization of each text (one sentence each)."""


@dataclass
class ChunkRequest:
    corrid: int
    wav: np.ndarray
    start: bool = False
    end: bool = False
    abort: bool = False
    config: str | None = None


@dataclass
class FinalJob:
    """The 2-pass part of one sentence_end event, filled in by `run`."""

    event: dict
    audio: np.ndarray
    config: StreamConfig

    async def run(self, offline: Offline) -> None:
        ev = self.event
        text, words = ev["raw_text"], []
        if self.config.two_pass:
            text, words, stamps = ("", [], [])
            if self.audio.shape[0] >= MIN_SEGMENT_MS * SAMPLES_PER_MS:
                text, words, stamps = await offline.recognize(self.audio, self.config.hotwords)
            ev["raw_text"] = text
            ev["words"] = [{"text": w, "begin_ms": int(b) + ev["begin_ms"], "end_ms": int(e) + ev["begin_ms"]}
                           for w, (b, e) in zip(words, stamps)]
        ev["text"] = await offline.punctuate(text) if self.config.punctuation and text.strip() else text
        if self.config.itn and ev["text"].strip():
            await self._itn(offline)

    async def _itn(self, offline: Offline) -> None:
        """ITN of each sentence of the final text (split at sentence-final marks, as offline); a rewritten
        span of words becomes one word spanning their times (sentences.itn_sentence)."""
        ev = self.event
        done, rest = split_sentences(ev["text"])
        pieces = done + ([rest] if rest else [])
        normalized = "".join(await offline.normalize(pieces))
        if normalized == ev["text"]:
            return
        if not ev["words"]:
            ev["text"] = normalized
            return
        sentence = {"text": ev["text"], "start_ms": ev["begin_ms"], "end_ms": ev["end_ms"],
                    "words": [w["text"] for w in ev["words"]],
                    "timestamps": [[w["begin_ms"], w["end_ms"]] for w in ev["words"]]}
        out = itn_sentence(sentence, normalized)
        ev["text"] = normalized
        ev["words"] = [{"text": w, "begin_ms": int(b), "end_ms": int(e)}
                       for w, (b, e) in zip(out["words"], out["timestamps"])]


class Stream:
    def __init__(self, corrid: int, config: StreamConfig, asr: ParaformerOnline, vad: FsmnVad, retain_ms: int):
        self.corrid = corrid
        self.config = config
        self.asr = asr
        self.chunk_samples = ParaformerOnline.chunk_samples(config.chunk_size)
        self.vad = OnlineVad(vad, config.max_sentence_silence_ms, chunk_ms=self.chunk_samples // SAMPLES_PER_MS)
        self.online = self._new_online() if config.partial or not config.two_pass else None
        self.retain_samples = retain_ms * SAMPLES_PER_MS
        self.pending = np.zeros(0, dtype=np.float32)
        self.consumed = 0  # samples processed
        self.audio = np.zeros(0, dtype=np.float32)  # kept for 2-pass; audio[0] is sample `audio_start`
        self.audio_start = 0
        self.index = 0  # sentences begun
        self.in_sentence = False
        self.begin_ms = 0
        self.tokens: list[str] = []
        self.probs: list[float] = []  # online decoder probability of each token of the open sentence
        self.partial_text = ""
        self.last_seen = time.monotonic()

    def _new_online(self):
        c = self.config
        return self.asr.new_stream(c.chunk_size, c.encoder_chunk_look_back, c.decoder_chunk_look_back)

    def take(self, wav: np.ndarray, end: bool) -> list[tuple[np.ndarray, bool]]:
        """Whole chunks of the buffered audio; at the end also the rest (maybe empty) as the final chunk."""
        self.pending = np.concatenate((self.pending, wav)) if self.pending.size else wav
        n = self.pending.shape[0] // self.chunk_samples
        chunks = [(self.pending[i * self.chunk_samples:(i + 1) * self.chunk_samples], False) for i in range(n)]
        self.pending = self.pending[n * self.chunk_samples:]
        if end:
            chunks.append((self.pending, True))
            self.pending = np.zeros(0, dtype=np.float32)
        return chunks

    def _text(self) -> str:
        return sentence_postprocess(self.tokens)[0]

    def _partial(self, events: list[dict], time_ms: int) -> None:
        if not self.config.partial or not self.tokens:
            return
        text = self._text()
        if text == self.partial_text:
            return
        delta = text[len(self.partial_text):] if text.startswith(self.partial_text) else text
        self.partial_text = text
        events.append({"event": "partial", "index": self.index, "text": text, "delta": delta, "time_ms": time_ms})

    def vad_step(self, chunk: np.ndarray, final: bool) -> tuple[list[list[int]], bool]:
        """Run the VAD on the chunk: (its segments, whether the online decoder's step on this chunk
        is final: the end of the stream, or a sentence end that `advance` will close)."""
        segments = self.vad.accept(chunk, final)
        in_sentence, closes = self.in_sentence, final
        for beg, end in segments:
            if beg != -1 and not in_sentence:
                in_sentence = True
            if end != -1 and in_sentence:
                closes, in_sentence = True, False
        return segments, closes

    def _close(self, end_ms: int) -> tuple[dict, FinalJob]:
        lo = max(self.begin_ms * SAMPLES_PER_MS - self.audio_start, 0)
        hi = max(end_ms * SAMPLES_PER_MS - self.audio_start, lo)
        text = self._text() if self.tokens else ""
        # confidence: geometric mean of the online decoder's token probabilities (0 without an online pass)
        confidence = float(np.exp(np.mean(np.log(np.maximum(self.probs, 1e-12))))) if self.probs else 0.0
        event = {"event": "sentence_end", "index": self.index, "begin_ms": self.begin_ms, "end_ms": end_ms,
                 "text": text, "raw_text": text, "online_text": text, "words": [], "confidence": round(confidence, 4)}
        job = FinalJob(event, self.audio[lo:hi].copy(), self.config)
        self.in_sentence = False
        self.tokens, self.probs, self.partial_text = [], [], ""
        if self.online is not None:  # its final step ran on this chunk: the next sentence starts afresh
            self.online = self._new_online()
        drop = min(max(end_ms * SAMPLES_PER_MS - self.audio_start, 0), self.audio.shape[0])
        self.audio, self.audio_start = self.audio[drop:], self.audio_start + drop
        return event, job

    def advance(self, chunk: np.ndarray, final: bool, new_tokens: list[str],
                segments: list[list[int]]) -> tuple[list[dict], list[FinalJob]]:
        """Account one processed chunk (its VAD `segments` from `vad_step`, the online decoder's
        `new_tokens`): VAD events, partial text, finished sentences."""
        self.audio = np.concatenate((self.audio, chunk)) if self.audio.size else chunk.copy()
        self.consumed += chunk.shape[0]
        now_ms = self.consumed // SAMPLES_PER_MS
        self.tokens.extend(new_tokens)
        if new_tokens:
            self.probs.extend(self.online.token_probs[-len(new_tokens):])
        events: list[dict] = []
        jobs: list[FinalJob] = []
        for beg, end in segments:
            if beg != -1 and not self.in_sentence:
                self.index += 1
                self.in_sentence = True
                self.begin_ms = int(beg)
                events.append({"event": "sentence_begin", "index": self.index, "begin_ms": self.begin_ms})
            if end != -1 and self.in_sentence:
                self._partial(events, now_ms)
                event, job = self._close(int(end))
                events.append(event)
                jobs.append(job)
        if self.in_sentence:
            self._partial(events, now_ms)
            if final:  # the VAD closes open segments on the last frame; this is a safety net
                event, job = self._close(now_ms)
                events.append(event)
                jobs.append(job)
        elif self.audio.shape[0] > self.retain_samples:  # outside sentences keep only what a late start needs
            drop = self.audio.shape[0] - self.retain_samples
            self.audio, self.audio_start = self.audio[drop:], self.audio_start + drop
        return events, jobs


class StreamManager:
    """All streams of one model instance, keyed by Triton correlation id."""

    def __init__(self, asr: ParaformerOnline, vad: FsmnVad, offline: Offline, max_streams: int,
                 idle_s: float, retain_ms: int, max_hotwords: int, max_request_samples: int):
        self.asr, self.vad, self.offline = asr, vad, offline
        self.max_streams = max_streams
        self.idle_s = idle_s
        self.retain_ms = retain_ms
        self.max_hotwords = max_hotwords
        self.max_request_samples = max_request_samples
        self.streams: dict[int, Stream] = {}
        self.evicted = 0

    def evict_idle(self, now: float | None = None) -> int:
        """Forget streams not heard from for idle_s (their client vanished without END)."""
        now = time.monotonic() if now is None else now
        stale = [c for c, s in self.streams.items() if now - s.last_seen > self.idle_s]
        for corrid in stale:
            del self.streams[corrid]
        self.evicted += len(stale)
        return len(stale)

    def _prepare(self, req: ChunkRequest) -> Stream | None:
        if req.abort:
            self.streams.pop(req.corrid, None)
            return None
        if req.wav.ndim != 1:
            raise StreamInputError(f"WAV must be one row of samples, got shape {list(req.wav.shape)}")
        if req.wav.shape[0] > self.max_request_samples:
            raise StreamInputError(f"WAV has {req.wav.shape[0]} samples; at most {self.max_request_samples} per request")
        if not np.isfinite(req.wav).all():
            raise StreamInputError("WAV contains NaN or infinite samples")
        if req.start:
            config = StreamConfig.parse(req.config, self.max_hotwords)
            if config.chunk_size[1] <= 0 or min(config.chunk_size) < 0:
                raise StreamInputError(f"CONFIG chunk_size {list(config.chunk_size)} must be non-negative with a "
                                       "positive middle value")
            self.streams.pop(req.corrid, None)
            if len(self.streams) >= self.max_streams:
                raise StreamInputError(f"too many open streams ({self.max_streams}); end one or retry later")
            try:
                stream = Stream(req.corrid, config, self.asr, self.vad, self.retain_ms)
            except ValueError as e:  # e.g. a chunk_size the model cannot run
                raise StreamInputError(str(e)) from None
            self.streams[req.corrid] = stream
        else:
            stream = self.streams.get(req.corrid)
            if stream is None:
                raise StreamInputError(f"stream {req.corrid} is not open (never started, ended, or evicted after "
                                       f"{self.idle_s:.0f} s idle); start it again")
        stream.last_seen = time.monotonic()
        return stream

    async def run(self, requests: list[ChunkRequest]) -> list[list[dict] | BaseException]:
        """Answer each request with its events or its own exception. Requests of one stream are
        handled in order (rounds); all streams of a round share each batched decoder step."""
        self.evict_idle()
        results: list[list[dict] | BaseException | None] = [None] * len(requests)
        seen: dict[int, int] = {}
        rounds: list[list[int]] = []
        for i, req in enumerate(requests):
            k = seen.get(req.corrid, 0)
            seen[req.corrid] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)
        for indices in rounds:
            await self._round(requests, indices, results)
        return results  # type: ignore[return-value]

    async def _round(self, requests: list[ChunkRequest], indices: list[int], results: list) -> None:
        work: list[tuple[int, Stream, list[tuple[np.ndarray, bool]]]] = []
        for i in indices:
            req = requests[i]
            try:
                stream = self._prepare(req)
            except Exception as exc:  # noqa: BLE001 - the request's own error
                results[i] = exc
                continue
            if stream is None:
                results[i] = []
                continue
            work.append((i, stream, stream.take(req.wav.astype(np.float32, copy=False), req.end)))
        events: dict[int, list[dict]] = {i: [] for i, _, _ in work}
        jobs: dict[int, list[FinalJob]] = {i: [] for i, _, _ in work}
        failed: dict[int, BaseException] = {}
        for k in range(max((len(chunks) for _, _, chunks in work), default=0)):
            step = []
            for i, s, chunks in work:
                if k < len(chunks) and i not in failed:
                    chunk, final = chunks[k]
                    try:
                        segments, closes = s.vad_step(chunk, final)
                    except Exception as exc:  # noqa: BLE001
                        failed[i] = exc
                        continue
                    step.append((i, s, chunk, final, segments, closes))
            decode = [(i, s, chunk, closes) for i, s, chunk, _, _, closes in step if s.online is not None]
            try:
                tokens = self.asr.decode([(s.online, chunk, final) for _, s, chunk, final in decode])
            except Exception as exc:  # noqa: BLE001 - a broken batch fails its requests, not the model
                for i, *_ in decode:
                    failed[i] = exc
                continue
            new = {i: t for (i, *_), t in zip(decode, tokens)}
            for i, s, chunk, final, segments, _ in step:
                try:
                    evs, js = s.advance(chunk, final, new.get(i, []), segments)
                except Exception as exc:  # noqa: BLE001
                    failed[i] = exc
                    continue
                events[i].extend(evs)
                jobs[i].extend(js)
        flat = [(i, j) for i, js in jobs.items() if i not in failed for j in js]
        outcomes = await asyncio.gather(*(j.run(self.offline) for _, j in flat), return_exceptions=True)
        for (i, _), outcome in zip(flat, outcomes):
            if isinstance(outcome, BaseException) and i not in failed:
                failed[i] = outcome
        for i, stream, _ in work:
            req = requests[i]
            if i in failed:
                results[i] = failed[i]
                if not isinstance(failed[i], StreamInputError):  # state may be half-updated: drop it
                    self.streams.pop(stream.corrid, None)
            else:
                results[i] = events[i]
            if req.end:
                self.streams.pop(stream.corrid, None)
