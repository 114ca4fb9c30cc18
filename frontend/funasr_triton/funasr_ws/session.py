"""One FunASR runtime WebSocket connection: utterances in modes offline, online and 2pass.

    C: {"mode": "2pass", "wav_name": "demo", "wav_format": "pcm", "audio_fs": 16000, "is_speaking": true,
        "chunk_size": [5,10,5], "hotwords": "{\\"阿里巴巴\\": 20}", ...}      (within streaming.start_timeout_s)
    C: binary PCM ...                                        (no gap longer than streaming.idle_timeout_s)
    S: online:  {"mode": "online", "text": <delta>, ...}
       2pass:   {"mode": "2pass-online", "text": <delta>} ... {"mode": "2pass-offline", "text": <sentence>,
                 "timestamp": "[[b,e],...]", "stamp_sents": [...]} per sentence
    C: {"is_speaking": false}   (or {"is_end": true})
    S: the rest; the last message of the utterance has "is_final": true (and "is_end": true)
       offline: one {"mode": "offline", "text", "timestamp", "stamp_sents", "is_final": true}

After an utterance the connection stays open for the next one (as FunASR's servers do, for clients that
send several files over one connection): a new settings message or more audio starts it; the server
closes after streaming.idle_timeout_s of silence. online/2pass utterances are StreamingService streams
(streaming.max_streams); offline ones are TranscriptionService jobs (admission, ffmpeg for containers).

Failures: one `{"mode", "wav_name", "text": "", "is_final": true, "is_end": true, "error": {"code",
"message"}}` message, then the server closes with 1008 (the client's fault), 1011 (the server's) or
1013 (too many streams or busy: try again later).
"""
from __future__ import annotations

import json
import logging

from fastapi import WebSocket
from pydantic import ValidationError

from ..app import wsio
from ..app.hotwords import parse_hotwords
from ..app.streaming import Stream, StreamEvent, StreamOptions
from ..contract import TranscribeOptions, Transcript
from ..errors import AsrError
from ..logs import event
from .protocol import FunasrConfig, FunasrErrorInfo, FunasrErrorMessage, FunasrResult, FunasrStampSent

log = logging.getLogger(__name__)

STREAM_RATES = (16000, 8000)
OFFLINE_RATES = (8000, 48000)
PUNCTUATION = "，。？！、；：,.?!;:"
END_KEYS = ("is_speaking", "is_end")


def close_code(err: AsrError) -> int:
    """The one mapping of this surface: AsrError -> WebSocket close code."""
    if err.status in (429, 503):
        return 1013  # try again later
    if err.status >= 500:
        return 1011
    return 1008


def timestamp_text(words: list[tuple[str, int, int]]) -> str:
    return json.dumps([[b, e] for _, b, e in words], separators=(",", ":"))


def stamp_sents(text: str, words: list[tuple[str, int, int]]) -> list[FunasrStampSent]:
    """The sentence cut at its punctuation marks, each piece with its tokens' times (FunASR's stamp_sents).

    Tokens are found in `text` in order; if they cannot be (text and tokens disagree), the whole sentence is
    one piece."""
    def piece(group: list[tuple[str, int, int]], punc: str) -> FunasrStampSent:
        return FunasrStampSent(text_seg=" ".join(w for w, _, _ in group), punc=punc, start=group[0][1],
                               end=group[-1][2], ts_list=[[b, e] for _, b, e in group])

    def first_mark(s: str) -> str:
        return next((c for c in s if c in PUNCTUATION), "")

    def trailing_mark(s: str) -> str:
        last = s.rstrip()[-1:]
        return last if last and last in PUNCTUATION else ""

    if not words:
        return []
    lowered = text.lower()
    pieces: list[FunasrStampSent] = []
    group: list[tuple[str, int, int]] = []
    pos = 0
    for word in words:
        at = lowered.find(word[0].lower(), pos)
        if at < 0 or not word[0]:
            return [piece(list(words), trailing_mark(text))]
        mark = first_mark(text[pos:at])
        if mark and group:
            pieces.append(piece(group, mark))
            group = []
        group.append(word)
        pos = at + len(word[0])
    pieces.append(piece(group, first_mark(text[pos:])))
    return pieces


class FunasrSession(wsio.Session):
    """One WebSocket connection: one utterance after another until the client leaves or goes quiet."""

    protocol = "funasr"
    log = log

    def __init__(self, websocket: WebSocket, authorized: bool):
        super().__init__(websocket, authorized)
        self.raw: dict = {}
        self.config = FunasrConfig()
        self.sent: dict[int, str] = {}  # online mode: text sent so far as deltas, per sentence

    async def fail(self, err: AsrError) -> None:
        code = close_code(err)
        event(log, "funasr_ws_failed", level=logging.WARNING if code == 1011 else logging.INFO,
              wav_name=self.config.wav_name, code=err.code, reason=err.message)
        await self.answer_failure(FunasrErrorMessage(mode=self.config.mode, wav_name=self.config.wav_name,
                                                     error=FunasrErrorInfo(code=err.code, message=err.message)),
                                  code)

    # ---- messages -----------------------------------------------------------------------------------------

    def parse(self, message: dict) -> dict | None:
        """A text message as a settings dict; None for binary audio."""
        if message.get("text") is None:
            return None
        update = wsio.text_json(message)
        if not isinstance(update, dict):
            raise wsio.invalid_message("a text message must be a JSON object of settings")
        return update

    def apply(self, update: dict) -> None:
        merged = {**self.raw, **update}
        try:
            self.config = FunasrConfig.model_validate(merged)
        except ValidationError as exc:
            raise wsio.validation_error(exc, "settings") from None
        self.raw = merged

    @property
    def ended(self) -> bool:
        return not self.config.is_speaking or self.config.is_end

    @property
    def hotwords(self) -> list[str]:
        return parse_hotwords(self.config.hotwords or self.config.hotword)

    # ---- the session --------------------------------------------------------------------------------------

    async def serve(self) -> None:
        update = await self.first("settings message",
                                  AsrError("the token is missing or invalid (?token= or Authorization: Bearer)", 401,
                                           "unauthorized", "token"),
                                  self.parse)
        if update is None:
            raise wsio.invalid_message("the first message must be the JSON settings ({\"mode\": ...}), not audio")
        self.apply(update)
        pending: bytes | None = None
        while True:
            await self.utterance(pending)
            try:
                message = await self.receive(self.limits.idle_timeout_s, "next utterance")
            except AsrError:
                return  # quiet after a finished utterance: a normal close
            update = self.parse(message)
            pending = message.get("bytes") if update is None else None
            self.apply({"is_speaking": True, "is_end": False, **(update or {})})

    async def utterance(self, pending: bytes | None) -> None:
        model = self.app.state.service.check_model(self.config.model) if self.config.model else "paraformer"
        if model != "paraformer" and self.config.mode != "offline":
            raise AsrError(f"model {self.config.model!r} serves offline mode only", 400, "invalid_parameter", "model")
        if self.config.mode == "offline":
            await self.offline(pending, model)
        else:
            await self.streaming(pending)

    async def next_audio(self) -> bytes | None:
        """The utterance's next audio frame; None once the client ended it. Only the end flags of a settings
        message are taken mid-utterance."""
        while not self.ended:
            message = await self.receive(self.limits.idle_timeout_s, "message")
            update = self.parse(message)
            if update is None:
                return message.get("bytes") or b""
            self.apply({k: update[k] for k in END_KEYS if k in update})
        return None

    # ---- online / 2pass -----------------------------------------------------------------------------------

    async def streaming(self, pending: bytes | None) -> None:
        c = self.config
        if c.wav_format.lower() != "pcm":
            raise AsrError(f"{c.mode} mode takes raw PCM (wav_format pcm), not {c.wav_format!r}", 400,
                           "invalid_parameter", "wav_format")
        if c.audio_fs not in STREAM_RATES:
            raise AsrError(f"audio_fs {c.audio_fs} is not supported in {c.mode} mode; use 16000 or 8000", 400,
                           "unsupported_sample_rate", "audio_fs")
        two_pass = c.mode == "2pass"
        # itn applies to the 2pass finals (online mode has only partials, which stay as recognised)
        options = StreamOptions(sample_rate=c.audio_fs, partial=True, two_pass=two_pass, punctuation=two_pass,
                                itn=two_pass and c.itn,
                                chunk_size=c.chunk_size, hotwords=self.hotwords,
                                max_sentence_silence_ms=c.max_end_silence,
                                encoder_chunk_look_back=c.encoder_chunk_look_back,
                                decoder_chunk_look_back=c.decoder_chunk_look_back)
        self.sent = {}
        async with self.stream(options) as stream:
            await self.converse(stream, pending)

    async def converse(self, stream: Stream, pending: bytes | None) -> None:
        if pending:
            await self.send_all(self.render(await stream.feed(pending)))
        while (pcm := await self.next_audio()) is not None:
            if pcm:
                await self.send_all(self.render(await stream.feed(pcm)))
        await self.send_all(self.render(await stream.finish(), final=True))

    async def send_all(self, results: list[FunasrResult]) -> None:
        for result in results:
            await self.send(result)

    def render(self, events: list[StreamEvent], final: bool = False) -> list[FunasrResult]:
        c = self.config
        two_pass = c.mode == "2pass"
        online_mode = "2pass-online" if two_pass else "online"
        out: list[FunasrResult] = []
        for e in events:
            if e.kind == "partial" and e.delta:
                out.append(FunasrResult(mode=online_mode, wav_name=c.wav_name, text=e.delta, is_final=False))
                self.sent[e.index] = self.sent.get(e.index, "") + e.delta
            elif e.kind == "sentence_end" and two_pass:
                if e.text:
                    words = [(w.text, w.begin_ms, w.end_ms) for w in e.words]
                    out.append(FunasrResult(mode="2pass-offline", wav_name=c.wav_name, text=e.text, is_final=False,
                                            timestamp=timestamp_text(words) if words else None,
                                            stamp_sents=stamp_sents(e.text, words) or None))
            elif e.kind == "sentence_end":
                # online: what the sentence's final text adds to the deltas already sent
                sent = self.sent.pop(e.index, "")
                rest = e.text[len(sent):] if e.text.startswith(sent) else ""
                if rest:
                    out.append(FunasrResult(mode="online", wav_name=c.wav_name, text=rest, is_final=False))
        if final:
            last_mode = "2pass-offline" if two_pass else "online"
            if not out or out[-1].mode != last_mode:
                out.append(FunasrResult(mode=last_mode, wav_name=c.wav_name, text="", is_final=False))
            out[-1].is_final = out[-1].is_end = True
        return out

    # ---- offline ------------------------------------------------------------------------------------------

    async def offline(self, pending: bytes | None, model: str) -> None:
        c = self.config
        pcm = c.wav_format.lower() == "pcm"
        if pcm and not OFFLINE_RATES[0] <= c.audio_fs <= OFFLINE_RATES[1]:
            raise AsrError(f"audio_fs {c.audio_fs} is not supported; use {OFFLINE_RATES[0]}-{OFFLINE_RATES[1]} Hz",
                           400, "unsupported_sample_rate", "audio_fs")
        seconds = self.limits.max_offline_seconds
        # pcm: exactly `seconds` of audio; containers: the bytes that much 16 kHz PCM takes (compressed audio
        # may decode longer: limits.max_audio_seconds bounds that); never more than an upload may be
        limit = min(int(seconds * (c.audio_fs if pcm else 16000) * 2), self.settings.limits.max_upload_bytes)
        audio = bytearray(pending or b"")
        while True:
            if len(audio) > limit:
                raise AsrError(f"offline mode buffers at most {seconds:g} s of audio ({limit} bytes)", 400,
                               "audio_too_long", "audio")
            frame = await self.next_audio()
            if frame is None:
                break
            audio.extend(frame)
        if not audio:
            await self.send(FunasrResult(mode="offline", wav_name=c.wav_name, text="", is_final=True, is_end=True))
            return
        data = bytes(audio)
        del audio
        is_wav = data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE"  # a wav file sent as "pcm"
        service = self.app.state.service
        await service.require_model(model, c.model)
        sensevoice = model == "sensevoice"
        language = (c.svs_lang or "auto").lower() if sensevoice else None
        if sensevoice and language not in ("auto", "zh", "en", "yue", "ja", "ko"):
            raise AsrError(f"svs_lang {c.svs_lang!r}: one of auto, zh, en, yue, ja, ko", 400, "invalid_parameter",
                           "svs_lang")
        options = TranscribeOptions(hotwords=self.hotwords,
                                    punctuation=True if not sensevoice or c.svs_itn is None else c.svs_itn,
                                    timestamps=True, pcm_sample_rate=c.audio_fs if pcm and not is_wav else None,
                                    itn=c.itn and not sensevoice, model=model, language=language)
        transcript = await service.transcribe(data, options)
        await self.send(self.offline_result(transcript))

    def offline_result(self, transcript: Transcript) -> FunasrResult:
        words = [(w.text, w.start_ms, w.end_ms) for s in transcript.sentences for w in s.words]
        sents = [p for s in transcript.sentences
                 for p in stamp_sents(s.text, [(w.text, w.start_ms, w.end_ms) for w in s.words])]
        return FunasrResult(mode="offline", wav_name=self.config.wav_name, text=transcript.text, is_final=True,
                            timestamp=timestamp_text(words) if words else None, stamp_sents=sents or None,
                            is_end=True)
