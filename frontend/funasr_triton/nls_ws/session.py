"""One Alibaba NLS real-time connection: at most one SpeechTranscriber or SpeechRecognizer task.

One coroutine per connection reads its own socket, feeds a StreamingService stream and renders the
stream's events; nothing is shared between connections but the StreamingService counters, so a slow
client only slows itself (every send is bounded by streaming.idle_timeout_s, after which the client
counts as gone). The session:

    C: StartTranscription | StartRecognition   (within streaming.start_timeout_s)
    S: TranscriptionStarted | RecognitionStarted
    C: binary audio ... (no gap longer than streaming.idle_timeout_s)
    S: SentenceBegin, TranscriptionResultChanged*, SentenceEnd    (SpeechTranscriber)
       RecognitionResultChanged*                                  (SpeechRecognizer)
    C: StopTranscription | StopRecognition
    S: the last SentenceEnd, TranscriptionCompleted | RecognitionCompleted; the server closes.

Any failure is one TaskFailed (namespace Default, header status = the NLS code, status_text =
"Gateway:<KIND>:<reason>") and the server closes; leaving the stream's `async with` frees its Triton
state on every path, a vanished client included.
"""
from __future__ import annotations

import logging
import struct

from fastapi import WebSocket
from pydantic import ValidationError

from ..app import wsio
from ..app.streaming import Stream, StreamEvent, StreamOptions
from ..errors import AsrError
from ..logs import event
from ..nls import NlsStatus, vocabulary_hotwords
from .protocol import (FAILURE_NAMESPACE, NAMESPACES, NlsClientMessage, NlsCommands, NlsServerHeader,
                       NlsServerMessage, NlsStartPayload, NlsWsWord, RecognitionResultPayload, SentenceBeginPayload,
                       SentenceEndPayload, TranscriptionResultChangedPayload, new_id)

log = logging.getLogger(__name__)

SAMPLE_RATES = (16000, 8000)
FORMATS = ("pcm", "wav")
# AsrError codes that describe a message (NLS "invalid message") or a limit of the task ("invalid parameter")
_MESSAGE_CODES = frozenset({"invalid_message", "bad_frame", "frame_too_large"})
_PARAMETER_CODES = frozenset({"stream_too_long"})
_STATUS_KIND = {
    NlsStatus.AUTHENTICATION_FAILED: "ACCESS_DENIED", NlsStatus.INVALID_MESSAGE: "INVALID_MESSAGE",
    NlsStatus.INVALID_PARAMETER: "INVALID_PARAMETER", NlsStatus.IDLE_TIMEOUT: "IDLE_TIMEOUT",
    NlsStatus.TOO_MANY_REQUESTS: "TOO_MANY_REQUESTS", NlsStatus.UNSUPPORTED_SAMPLE_RATE: "UNSUPPORTED_SAMPLE_RATE",
    NlsStatus.DEFAULT_CLIENT_ERROR: "CLIENT_ERROR", NlsStatus.DEFAULT_SERVER_ERROR: "SERVER_ERROR",
}
_CJK_OR_FULLWIDTH = ((0x2E80, 0x9FFF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF), (0x3000, 0x303F))


def nls_status(err: AsrError) -> NlsStatus:
    """The one mapping of this surface: AsrError -> NLS failure code."""
    if err.status == 401:
        return NlsStatus.AUTHENTICATION_FAILED
    if err.status == 408:
        return NlsStatus.IDLE_TIMEOUT
    if err.status == 429:
        return NlsStatus.TOO_MANY_REQUESTS
    if err.status >= 500:
        return NlsStatus.DEFAULT_SERVER_ERROR
    if err.code == "unsupported_sample_rate":
        return NlsStatus.UNSUPPORTED_SAMPLE_RATE
    if err.code in _MESSAGE_CODES:
        return NlsStatus.INVALID_MESSAGE
    return NlsStatus.INVALID_PARAMETER if err.param or err.code in _PARAMETER_CODES else NlsStatus.DEFAULT_CLIENT_ERROR


def invalid_parameter(message: str, param: str) -> AsrError:
    return AsrError(message, 400, "invalid_parameter", param)


def _joins_tight(a: str, b: str) -> bool:
    return any(lo <= ord(c) <= hi for c in (a, b) for lo, hi in _CJK_OR_FULLWIDTH)


def join_sentences(texts: list[str]) -> str:
    """Sentences of one utterance as one text: no space around CJK or full-width punctuation."""
    out = ""
    for text in (t.strip() for t in texts):
        if text:
            out += text if not out or _joins_tight(out[-1], text[0]) else " " + text
    return out


class WavHeader:
    """Skips a RIFF/WAVE header at the start of the audio (format wav, or a wav file sent as pcm).

    The header may span frames (a long LIST chunk); at most MAX_HEADER bytes are held while it is read.
    Audio that does not start with RIFF is passed through as raw PCM."""

    MAX_HEADER = 64 * 1024

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self.done = False
        self._head = b""

    def __call__(self, data: bytes) -> bytes:
        if self.done:
            return data
        head = self._head + data
        if len(head) < 12:
            if any(magic.startswith(head[:4]) for magic in (b"RIFF", b"RF64")):  # maybe a header: wait
                self._head = head
                return b""
            self.done = True
            return head
        if head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            self.done = True
            return head
        pos = 12
        while pos + 8 <= len(head):
            chunk_id = head[pos:pos + 4]
            (size,) = struct.unpack_from("<I", head, pos + 4)
            if chunk_id == b"data":
                self.done, self._head = True, b""
                return head[pos + 8:]
            if chunk_id == b"fmt ":
                if pos + 8 + 16 > len(head):
                    break
                self._check_fmt(head[pos + 8:pos + 8 + 16])
            pos += 8 + size + (size & 1)
        if len(head) > self.MAX_HEADER:
            raise wsio.invalid_message(f"no wav data chunk within the first {self.MAX_HEADER} bytes")
        self._head = head
        return b""

    def _check_fmt(self, fmt: bytes) -> None:
        tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt)
        if tag not in (1, 0xFFFE) or channels != 1 or bits != 16:
            raise invalid_parameter("wav audio must be 16-bit PCM, mono", "format")
        if rate != self.sample_rate:
            raise invalid_parameter(f"the wav header says {rate} Hz but sample_rate is {self.sample_rate}",
                                    "sample_rate")


class NlsSession(wsio.Session):
    """One WebSocket connection: at most one transcription or recognition task."""

    protocol = "nls"
    log = log
    idle_text = "Websocket session is idle for too long time: no {waiting_for} within {timeout_s:g} s"

    def __init__(self, websocket: WebSocket, authorized: bool):
        super().__init__(websocket, authorized)
        self.task_id = new_id()
        self.namespace = FAILURE_NAMESPACE
        self.commands: NlsCommands | None = None
        self.start: NlsStartPayload | None = None
        self.sentences: list[str] = []  # SpeechRecognizer: finished sentence texts

    def message(self, name: str, payload=None, status: int = NlsStatus.SUCCESS, status_text: str | None = None,
                namespace: str | None = None) -> NlsServerMessage:
        """A server message of this task (namespace: the task's, else Default)."""
        header = NlsServerHeader(namespace=namespace or self.namespace, name=name, status=status,
                                 task_id=self.task_id, **({"status_text": status_text} if status_text else {}))
        return NlsServerMessage(header=header, payload=payload)

    async def fail(self, err: AsrError) -> None:
        status = nls_status(err)
        event(log, "nls_task_failed", level=logging.WARNING if status >= 50000000 else logging.INFO,
              task_id=self.task_id, status=int(status), code=err.code, reason=err.message)
        await self.answer_failure(self.message("TaskFailed", status=status, namespace=FAILURE_NAMESPACE,
                                               status_text=f"Gateway:{_STATUS_KIND[status]}:{err.message}"))

    # ---- the session --------------------------------------------------------------------------------------

    async def serve(self) -> None:
        options = await self.handshake()
        async with self.stream(options) as stream:
            await self.converse(stream)

    async def handshake(self) -> StreamOptions:
        """The first message must be a Start command (and the token good): returns the stream's options."""
        command = await self.first("StartTranscription",
                                   AsrError("The token is missing or invalid!", 401, "unauthorized", "token"),
                                   self.parse)  # sets task_id as soon as the header parses
        if command is None:
            raise wsio.invalid_message("the first message must be a StartTranscription or StartRecognition "
                                       "command, not audio")
        commands = NAMESPACES.get(command.header.namespace)
        if commands is None or command.header.name != commands.start:
            raise wsio.invalid_message(f"the first message must be a StartTranscription or StartRecognition "
                                       f"command, not {command.header.namespace}.{command.header.name}")
        self.namespace, self.commands = command.header.namespace, commands
        try:
            start = self.start = NlsStartPayload.model_validate(command.payload or {})
        except ValidationError as exc:
            raise wsio.validation_error(exc, "payload") from None
        fmt = start.format.lower()
        if fmt not in FORMATS:
            raise invalid_parameter(f"format {start.format!r} is not supported; use pcm or wav", "format")
        if start.sample_rate not in SAMPLE_RATES:
            raise AsrError(f"sample_rate {start.sample_rate} is not supported; use 16000 or 8000", 400,
                           "unsupported_sample_rate", "sample_rate")
        self.audio = WavHeader(start.sample_rate)
        # disfluency is accepted for compatibility: no disfluency model is served; customization_id is ignored.
        return StreamOptions(sample_rate=start.sample_rate, partial=start.enable_intermediate_result, two_pass=True,
                             punctuation=start.enable_punctuation_prediction,
                             itn=start.enable_inverse_text_normalization,
                             max_sentence_silence_ms=start.max_sentence_silence,
                             hotwords=await vocabulary_hotwords(self.app, start.vocabulary_id))

    def parse(self, message: dict) -> NlsClientMessage | None:
        """A text message as a command; None for binary audio."""
        if message.get("text") is None:
            return None
        raw = wsio.text_json(message)
        if isinstance(raw, dict) and isinstance(raw.get("header"), dict):
            task_id = raw["header"].get("task_id")
            if isinstance(task_id, str) and 0 < len(task_id) <= 128 and self.commands is None:
                self.task_id = task_id
        try:
            return NlsClientMessage.model_validate(raw)
        except ValidationError:
            raise wsio.invalid_message("a text message is not an NLS command {header: {namespace, name, ...}}") \
                from None

    async def converse(self, stream: Stream) -> None:
        commands = self.commands
        await self.send(self.message(commands.started))
        while True:
            message = await self.receive(self.limits.idle_timeout_s, "message")
            command = self.parse(message)
            if command is None:
                pcm = self.audio(message.get("bytes") or b"")
                if pcm and await self.render(await stream.feed(pcm)):
                    await stream.finish()  # the recognizer's utterance ended (enable_voice_detection)
                    await self.complete(stream)
                    return
                continue
            if command.header.namespace != self.namespace:
                raise wsio.invalid_message(f"namespace {command.header.namespace!r} in a {self.namespace} task")
            if command.header.name == commands.stop:
                await self.render(await stream.finish(), stopping=True)
                await self.complete(stream)
                return
            if command.header.name == commands.control:
                continue  # ControlTranscriber: accepted, nothing to change mid-stream
            raise wsio.invalid_message(f"unexpected {command.header.name} in a started task")

    async def complete(self, stream: Stream) -> None:
        payload = None
        if self.namespace == "SpeechRecognizer":
            payload = RecognitionResultPayload(result=join_sentences(self.sentences), duration=stream.received_ms)
        await self.send(self.message(self.commands.completed, payload))

    async def render(self, events: list[StreamEvent], stopping: bool = False) -> bool:
        """Send the events in the namespace's shape; True when a recognizer with voice detection is done."""
        start = self.start
        transcriber = self.namespace == "SpeechTranscriber"
        for e in events:
            if e.kind == "sentence_begin" and transcriber:
                await self.send(self.message("SentenceBegin", SentenceBeginPayload(index=e.index, time=e.begin_ms)))
            elif e.kind == "partial" and start.enable_intermediate_result:
                if transcriber:
                    await self.send(self.message(self.commands.result_changed, TranscriptionResultChangedPayload(
                        index=e.index, time=e.end_ms, result=e.text, confidence=e.confidence)))
                else:
                    await self.send(self.message(self.commands.result_changed, RecognitionResultPayload(
                        result=join_sentences([*self.sentences, e.text]))))
            elif e.kind == "sentence_end":
                if transcriber:
                    words = [NlsWsWord(text=w.text, startTime=w.begin_ms, endTime=w.end_ms) for w in e.words] \
                        if start.enable_words else []
                    await self.send(self.message("SentenceEnd", SentenceEndPayload(
                        index=e.index, time=e.end_ms, begin_time=e.begin_ms, result=e.text,
                        confidence=min(max(e.confidence, 0.0), 1.0), words=words)))
                else:
                    self.sentences.append(e.text)
                    if start.enable_voice_detection and not stopping:
                        return True
        return False
