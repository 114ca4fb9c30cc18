"""OpenAI Audio API routes under /v1: parse the multipart form, call the service, render the requested format.

Multipart follows openai-python's encoding: lists as `name[]` (the bare `name` and `name[0]` also work),
dicts as `name[key]` (`chunking_strategy[type]=server_vad`), or `chunking_strategy=auto` / JSON text.
Unknown fields are ignored. Every failure is an AsrError rendered by `render_error` as
`{"error": {"message", "type", "param", "code"}}`; bad input is always 4xx (the SDK retries 5xx).
"""
from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect

from ..app.auth import bearer, key_ok
from ..app.hotwords import parse_hotwords
from ..vocabularies.registry import vocabulary_words
from ..app.inputs import check_speakers, is_uint, loads
from ..app.upload import SpooledAudio, spool_upload
from ..contract import TokenLogprob, TranscribeOptions, Transcript
from ..app.subtitles import to_srt, to_vtt
from ..errors import AsrError
from .protocol import (LANGUAGE_NAMES, SENSEVOICE_CODES, SENSEVOICE_NAMES, ErrorInfo, ErrorResponse, InputTokenDetails,
                       Logprob, Model, ModelList,
                       TranscriptionDiarized, TranscriptionDiarizedSegment, TranscriptionRequest, TranscriptionResponse,
                       TranscriptionResponseVerbose, TranscriptionSegment, TranscriptionWord, TranscriptTextDelta,
                       TranscriptTextDone, TranscriptTextSegment, TranslationRequest, UsageDuration, UsageTokens)

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIXES: tuple[str, ...] = ("/v1",)
FORM_OVERHEAD_BYTES = 1024 * 1024  # multipart framing + text fields on top of the audio limit
MODELS_CREATED = int(time.time())
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 500, 503, 504)}
_STR, _LIST = {"type": "string"}, {"type": "array", "items": {"type": "string"}}
_SPEAKERS = {"type": "integer", "minimum": 1, "maximum": 32}
_FORMATS = ["json", "text", "srt", "verbose_json", "vtt"]
_COMMON = {"file": {"type": "string", "format": "binary", "description": "the audio (any format ffmpeg decodes)"},
           "model": {"type": "string", "description": "the served model's name or one of its aliases (404 otherwise)"},
           "prompt": {"type": "string", "description": "used as hotwords (space/comma separated, or JSON {word: weight})"},
           "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0}}
_FORM_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {**_COMMON, "language": {"type": "string", "description": "zh, cmn, yue, en, ja, ko (region suffixes such as zh-CN accepted) or auto; others: 400"},
                   "response_format": {"type": "string", "enum": [*_FORMATS, "diarized_json"], "default": "json"},
                   "stream": {"type": "boolean", "default": False},
                   "timestamp_granularities[]": {"type": "array", "items": {"type": "string",
                                                                            "enum": ["word", "segment"]}},
                   "include[]": {"type": "array", "items": {"type": "string", "enum": ["logprobs"]}},
                   "chunking_strategy": {"type": "string", "description": "auto, or JSON {\"type\": \"server_vad\", …}"},
                   "known_speaker_names[]": {**_LIST, "maxItems": 4},
                   "known_speaker_references[]": {**_LIST, "maxItems": 4}, "keywords[]": _LIST, "languages[]": _LIST,
                   "hotwords": {"type": "string", "description": "extension: hotwords (space/comma separated)"},
                   "vocabulary_id": {"type": "string", "description": "extension: a stored vocabulary's id "
                                     "(/v1/vocabularies); its words are added before the inline hotwords"},
                   "audio_address": {"type": "string", "description": "extension (funasr-api): an audio URL "
                                     "fetched instead of `file` (needs AUDIO__URL_FETCH_ENABLED)"},
                   "enable_speaker_diarization": {"type": "boolean", "default": False, "description": "extension"},
                   "num_speakers": _SPEAKERS, "min_speakers": _SPEAKERS, "max_speakers": _SPEAKERS},
}}}}}
_TRANSLATION_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {**_COMMON, "response_format": {"type": "string", "enum": _FORMATS, "default": "json"}}}}}}}

router = APIRouter(prefix="/v1", tags=["openai"], responses=_ERRORS)


# ---------------------------------------------------------------- errors

def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(err: AsrError) -> ErrorResponse:
    return ErrorResponse(error=ErrorInfo(message=err.message, type=_error_type(err.status), param=err.param,
                                         code=err.code))


def render_error(request: Request, err: AsrError) -> Response:
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s else None
    return JSONResponse(error_body(err).model_dump(mode="json"), status_code=err.status, headers=headers)


# ---------------------------------------------------------------- request parsing

def _authorize(request: Request) -> None:
    if not key_ok(request.app.state.settings, bearer(request)):
        raise AsrError("invalid or missing API key (send `Authorization: Bearer <key>`)", 401, "invalid_api_key")


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it passes `limit` bytes."""
    too_large = AsrError(f"the request is larger than the {limit - FORM_OVERHEAD_BYTES} byte upload limit",
                         413, "too_large", "file")
    length = request.headers.get("content-length", "")
    if is_uint(length) and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise AsrError("the client closed the connection during the upload", 499, "client_closed")
    return b"".join(chunks)


async def _read_form(request: Request) -> FormData:
    """Parse multipart (or urlencoded) from a size-bounded copy of the body."""
    limit = request.app.state.settings.limits.max_upload_bytes + FORM_OVERHEAD_BYTES
    body = await _read_body(request, limit)
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=8, max_fields=256)
    except Exception as exc:  # any parser failure is the caller's malformed body
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise AsrError(f"malformed multipart/form-data body: {detail}", 400, "invalid_multipart")


def _text_values(form: FormData, key: str) -> list[str]:
    values = []
    for v in form.getlist(key):
        if not isinstance(v, str):
            raise AsrError(f"{_param(key)}: expected a text field, got a file", 400, "invalid_value", _param(key))
        values.append(v)
    return values


def _param(key: str) -> str:
    return key.split("[", 1)[0]


def _form_fields(form: FormData, model: type[BaseModel]) -> dict:
    """Form -> dict for `model`: lists from `name[]`/`name`/`name[0]`/JSON text, dicts from `name[key]`."""
    fields: dict = {}
    keys = list(dict.fromkeys(form.keys()))
    for name, info in model.model_fields.items():
        is_list = getattr(info.annotation, "__origin__", None) is list
        if is_list:
            values = [v for k in keys if k == name or re.fullmatch(rf"{name}\[\d*\]", k) for v in _text_values(form, k)]
            if len(values) == 1 and values[0].lstrip().startswith("["):
                try:
                    values = loads(values[0])
                except ValueError:
                    pass
            if values:
                fields[name] = values
            continue
        sub = {k[len(name) + 1:-1]: _text_values(form, k)[-1] for k in keys if re.fullmatch(rf"{name}\[[^\]]+\]", k)}
        if name in form:
            raw = _text_values(form, name)[-1]
            if name == "chunking_strategy":
                try:
                    fields[name] = loads(raw) if raw.lstrip().startswith("{") else {"type": raw}
                except ValueError:
                    raise AsrError("chunking_strategy: not valid JSON", 400, "invalid_value", name)
            else:
                fields[name] = raw
        elif sub:
            fields[name] = sub
    return fields


def _validate(model: type[BaseModel], fields: dict) -> BaseModel:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = str(first["loc"][0]) if first["loc"] else None
        msg = first["msg"].removeprefix("Value error, ")
        value = first.get("input")
        if isinstance(value, str) and len(value) > 80:
            value = value[:80] + "…"
        got = f" (got {value!r})" if isinstance(value, (str, int, float)) and first["type"] != "value_error" else ""
        raise AsrError(f"{param}: {msg}{got}" if param else msg, 400, "invalid_value", param)


async def _read_upload(form: FormData, limit: int) -> SpooledAudio:
    upload = form.get("file")
    if upload is None:
        raise AsrError("file: required (multipart field `file` with the audio)", 400, "missing_file", "file")
    if not isinstance(upload, UploadFile):
        raise AsrError("file: must be an uploaded file (multipart part with a filename)", 400, "invalid_value", "file")
    audio = await spool_upload(upload, limit, lambda: AsrError(
        f"the file is larger than the {limit} byte upload limit", 413, "too_large", "file"))
    if not audio.size:
        audio.close()
        raise AsrError("file: the uploaded file is empty", 400, "empty_file", "file")
    return audio


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body is already read, so only `http.disconnect` can arrive)."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # cannot watch: never report a disconnect we did not see
        await asyncio.Event().wait()


async def _with_cancellation(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and freeing its admission slot) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise AsrError("the client closed the connection", 499, "client_closed")


# ---------------------------------------------------------------- rendering

def _seconds(ms: int) -> float:
    return round(ms / 1000, 3)


def _language_name(req: TranscriptionRequest, text: str) -> str:
    code = req.language or (req.languages[0] if req.languages else None)
    if code:
        return LANGUAGE_NAMES[code]
    if any("\u3400" <= ch <= "\u9fff" for ch in text) or not any(ch.isascii() and ch.isalpha() for ch in text):
        return "chinese"
    return "english"


def _compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return round(len(raw) / len(zlib.compress(raw)), 4) if raw else 0.0


def _sensevoice_language(code: str | None) -> str | None:
    """SenseVoice's detected language as verbose_json names languages (nospeech: "")."""
    return None if code is None else SENSEVOICE_NAMES.get(code, "")


def _logprobs(tokens) -> list[Logprob]:
    """OpenAI's {token, logprob, bytes} from the transcript's TokenLogprobs (one per recognised word)."""
    return [Logprob(token=x.token, logprob=x.logprob, bytes=list(x.token.encode("utf-8"))) for x in tokens or []]


def _all_logprobs(t: Transcript, req: TranscriptionRequest) -> list[Logprob] | None:
    return _logprobs([x for s in t.sentences for x in s.logprobs or []]) if "logprobs" in req.include else None


def _avg_logprob(s) -> float:
    avg = s.avg_logprob
    return 0.0 if avg is None else round(avg, 6)


def _verbose(t: Transcript, req: TranscriptionRequest) -> TranscriptionResponseVerbose:
    segments = [TranscriptionSegment(id=i, seek=s.start_ms // 10, start=_seconds(s.start_ms), end=_seconds(s.end_ms),
                                     text=s.text, tokens=[], temperature=req.temperature, avg_logprob=_avg_logprob(s),
                                     compression_ratio=_compression_ratio(s.text), no_speech_prob=0.0,
                                     speaker=s.speaker, language=_sensevoice_language(s.language),
                                     emotion=s.emotion, events=s.events)
                for i, s in enumerate(t.sentences)]
    language = _sensevoice_language(t.language) if t.model == "sensevoice" else None
    words = None
    if "word" in req.timestamp_granularities:
        words = [TranscriptionWord(word=w.text, start=_seconds(w.start_ms), end=_seconds(w.end_ms))
                 for s in t.sentences for w in s.words]
    return TranscriptionResponseVerbose(language=language or _language_name(req, t.text), duration=_seconds(t.duration_ms),
                                        text=t.text, segments=segments, words=words,
                                        logprobs=_all_logprobs(t, req),
                                        usage=UsageDuration(seconds=_seconds(t.duration_ms)))


def _speaker_labels(t: Transcript, names: list[str]) -> list[str]:
    """One label per sentence: known speaker names in order of appearance, then A, B, …; no speaker info: all A."""
    if not any(s.speaker for s in t.sentences):
        return ["A"] * len(t.sentences)
    seen: dict[str | None, str] = {}
    for s in t.sentences:
        if s.speaker not in seen:
            n = len(seen)
            if n < len(names):
                seen[s.speaker] = names[n]
            else:
                k = n - len(names)
                label = ""
                while True:
                    label = chr(ord("A") + k % 26) + label
                    k = k // 26 - 1
                    if k < 0:
                        break
                seen[s.speaker] = label
    return [seen[s.speaker] for s in t.sentences]


def _diarized_segments(t: Transcript, req: TranscriptionRequest) -> list[TranscriptionDiarizedSegment]:
    return [TranscriptionDiarizedSegment(id=f"seg_{i}", start=_seconds(s.start_ms), end=_seconds(s.end_ms),
                                         speaker=label, text=s.text)
            for i, (s, label) in enumerate(zip(t.sentences, _speaker_labels(t, req.known_speaker_names)))]


def _deltas(t: Transcript) -> list[str]:
    """One delta per sentence, cut from the full text so that the deltas concatenate to exactly `t.text`.

    Each sentence's characters are matched in order within the full text (which may hold more, e.g. `<unk>`
    or spacing), ignoring case (the punctuation model capitalises an English word that starts a sentence);
    the cut after a sentence falls after its last matched character. No match: one delta."""
    full = t.text.lower()
    if len(full) != len(t.text):  # a character whose lower case is longer: match exactly
        full = t.text
    cuts, pos = [], 0
    for s in t.sentences:
        for ch in s.text.replace(" ", ""):
            at = full.find(ch.lower() if full is not t.text else ch, pos)
            if at < 0:
                return [t.text]
            pos = at + 1
        cuts.append(pos)
    if not cuts:
        return [t.text]
    cuts[-1] = len(t.text)
    starts = [0, *cuts[:-1]]
    return [t.text[a:b] for a, b in zip(starts, cuts)]


def _done(t: Transcript, req: TranscriptionRequest) -> TranscriptTextDone:
    frames = math.ceil(t.duration_ms / 60)
    words = sum(len(s.words) for s in t.sentences)
    return TranscriptTextDone(text=t.text, logprobs=_all_logprobs(t, req), usage=UsageTokens(
        input_tokens=frames, output_tokens=words, total_tokens=frames + words,
        input_token_details=InputTokenDetails(audio_tokens=frames, text_tokens=0)))


def _stream_events(t: Transcript, req: TranscriptionRequest) -> Iterator[BaseModel]:
    """The events of a finished transcript (diarized_json: speakers are known only at the end)."""
    deltas = _deltas(t)
    if req.response_format == "diarized_json":
        segments = _diarized_segments(t, req)
        if len(deltas) == len(segments):
            for delta, seg, s in zip(deltas, segments, t.sentences):
                yield TranscriptTextDelta(delta=delta, segment_id=seg.id,
                                          logprobs=_logprobs(s.logprobs) if "logprobs" in req.include else None)
                yield TranscriptTextSegment(**seg.model_dump())
        else:  # the sentences could not be cut out of the text: the text whole, then every segment
            yield from (TranscriptTextDelta(delta=d) for d in deltas)
            yield from (TranscriptTextSegment(**seg.model_dump()) for seg in segments)
    else:
        for delta in deltas:
            yield TranscriptTextDelta(delta=delta)
    yield _done(t, req)


async def _live_events(first: dict, events: AsyncIterator[dict], req: TranscriptionRequest) -> AsyncIterator[BaseModel]:
    """Deltas as Triton recognises the recording: each `text` event (the next piece of the final,
    punctuated text) is one delta, so the deltas concatenate to the done event's text. diarized_json
    waits for the end, where speakers become known, then sends its segments. With include[]=logprobs
    a delta carries the words recognised (`segment` events) since the previous delta, so the deltas'
    logprobs concatenate to the done event's (without ITN; with it the done event has the merged words)."""
    at_end = req.response_format == "diarized_json"
    pending: list = []

    async def all_events() -> AsyncIterator[dict]:
        yield first
        async for e in events:
            yield e

    async for e in all_events():
        if e["type"] == "segment" and "logprobs" in req.include:
            pending.extend(TokenLogprob.model_validate(x) for x in e.get("logprobs") or [])
        elif e["type"] == "text" and not at_end and e["text"]:
            logprobs = _logprobs(pending) if "logprobs" in req.include else None
            pending = []
            yield TranscriptTextDelta(delta=e["text"], logprobs=logprobs)
        elif e["type"] == "transcript":
            t = e["transcript"]
            if at_end:
                for ev in _stream_events(t, req):
                    yield ev
            else:
                yield _done(t, req)


async def _aiter(events: AsyncIterator[BaseModel] | Iterator[BaseModel]) -> AsyncIterator[BaseModel]:
    if hasattr(events, "__aiter__"):
        async for event in events:
            yield event
    else:
        for event in events:
            yield event


async def sse(events: AsyncIterator[BaseModel] | Iterator[BaseModel],
              cleanup: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[str]:
    """`data: <json>` per event; a failure after the stream started becomes a final `{"error": …}` event."""
    try:
        async for event in _aiter(events):
            yield f"data: {event.model_dump_json(exclude_none=True)}\n\n"
    except AsrError as err:
        yield f"data: {error_body(err).model_dump_json()}\n\n"
    except Exception:
        log.exception("stream failed")
        yield f"data: {error_body(AsrError('internal server error', 500, 'internal_error')).model_dump_json()}\n\n"
    finally:
        if cleanup is not None:
            await cleanup()


def _json(model: BaseModel) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True))


def _render(t: Transcript, req: TranscriptionRequest, request: Request) -> Response:
    subtitles = request.app.state.settings.subtitles
    fmt = req.response_format
    if fmt == "text":
        return PlainTextResponse(t.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt(t, subtitles), media_type="application/x-subrip; charset=utf-8")
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(t, subtitles), media_type="text/vtt")
    if fmt == "verbose_json":
        return _json(_verbose(t, req))
    if fmt == "diarized_json":
        return _json(TranscriptionDiarized(duration=_seconds(t.duration_ms), text=t.text,
                                           segments=_diarized_segments(t, req),
                                           usage=UsageDuration(seconds=_seconds(t.duration_ms))))
    return _json(TranscriptionResponse(text=t.text, logprobs=_all_logprobs(t, req),
                                       usage=UsageDuration(seconds=_seconds(t.duration_ms))))


def _hotwords(req: TranscriptionRequest, max_chars: int) -> list[str]:
    """Hotwords from `prompt`, the `hotwords` extension and `keywords[]`, in order, without repeats."""
    words: list[str] = []
    for param, texts in (("prompt", [req.prompt]), ("hotwords", req.hotwords), ("keywords", req.keywords)):
        for w in (w for text in texts for w in parse_hotwords(text)):
            if len(w) > max_chars:  # named here so the error names the parameter; the service checks again
                shown = w if len(w) <= 40 else w[:40] + "…"
                raise AsrError(f"{param}: hotword {shown!r} is longer than {max_chars} characters",
                               400, "hotword_too_long", param)
            if w not in words:
                words.append(w)
    return words


# ---------------------------------------------------------------- routes

_TEXT = {"schema": {"type": "string"}}
_TRANSCRIPTION_200 = {200: {"description": "json/verbose_json/diarized_json as JSON; text, srt and vtt as text; "
                                           "stream=true as server-sent events",
                            "content": {"application/json": {"schema": {"type": "object"}}, "text/plain": _TEXT,
                                        "application/x-subrip": _TEXT, "text/vtt": _TEXT,
                                        "text/event-stream": _TEXT}}}


@router.post("/audio/transcriptions", summary="Transcribe audio (OpenAI Audio API)", openapi_extra=_FORM_DOC,
             response_model=None, responses=_TRANSCRIPTION_200)
async def create_transcription(request: Request) -> Response:
    _authorize(request)
    service = request.app.state.service
    form = await _read_form(request)
    audio = None
    try:
        req = _validate(TranscriptionRequest, _form_fields(form, TranscriptionRequest))
        model = service.check_model(req.model)
        await service.require_model(model, req.model)
        check_speakers(req.num_speakers, req.min_speakers, req.max_speakers)
        address = form.get("audio_address")  # funasr-api's extension: the audio by URL instead of `file`
        if form.get("file") is None and isinstance(address, str) and address.strip():
            audio = None
        else:
            audio = await _read_upload(form, request.app.state.settings.limits.max_upload_bytes)
    finally:
        await form.close()
    if audio is None:
        audio = await service.fetch(address.strip())  # the SSRF-guarded fetch (app/fetch.py)
    try:
        diarize = (req.enable_speaker_diarization or req.response_format == "diarized_json"
                   or req.model == "gpt-4o-transcribe-diarize")
        num_speakers = req.num_speakers
        if diarize and num_speakers is None and req.max_speakers is None and req.known_speaker_names:
            num_speakers = len(req.known_speaker_names)
        hotwords = [*await vocabulary_words(request.app, req.vocabulary_id),
                    *_hotwords(req, request.app.state.settings.limits.max_hotword_chars)]
        options = TranscribeOptions(hotwords=hotwords,
                                    punctuation=True, timestamps=True, diarize=diarize, num_speakers=num_speakers,
                                    min_speakers=req.min_speakers, max_speakers=req.max_speakers,
                                    itn=request.app.state.settings.itn.default if req.itn is None else req.itn,
                                    model=model, language=_sensevoice_query(req) if model == "sensevoice" else None,
                                    logprobs="logprobs" in req.include or req.response_format == "verbose_json")
        if req.stream:
            return await _stream(request, service.events(audio, options), req, audio)
        transcript = await _with_cancellation(request, service.transcribe(audio, options))
    except BaseException:
        audio.close()
        raise
    audio.close()
    return _render(transcript, req, request)


async def _stream(request: Request, events: AsyncIterator[dict], req: TranscriptionRequest,
                  audio: SpooledAudio) -> StreamingResponse:
    """SSE as the recording is recognised. The first event is awaited before answering, so what fails
    early (undecodable audio, limits, a busy server) is a plain HTTP error in OpenAI's shape; a client
    that disconnects later cancels the stream, which aborts the rest of the recording in Triton."""
    try:
        first = await _with_cancellation(request, events.__anext__())
    except BaseException:
        await events.aclose()
        raise

    async def cleanup() -> None:
        await events.aclose()
        audio.close()

    return StreamingResponse(sse(_live_events(first, events, req), cleanup), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/audio/translations", summary="Not supported: Paraformer transcribes, it does not translate",
             description="Always 400 `unsupported_task` once the request is valid (auth, form, model).",
             response_model=None, openapi_extra=_TRANSLATION_DOC)
async def create_translation(request: Request) -> Response:
    _authorize(request)
    form = await _read_form(request)
    try:
        req = _validate(TranslationRequest, _form_fields(form, TranslationRequest))
        request.app.state.service.check_model(req.model)
    finally:
        await form.close()
    raise AsrError("translation is not supported: the served Paraformer model transcribes Chinese/English speech but "
                   "does not translate; use POST /v1/audio/transcriptions", 400, "unsupported_task", "model")


def _sensevoice_query(req: TranscriptionRequest) -> str:
    """OpenAI's `language` (or the first of `languages`) as SenseVoice's language query; none: auto."""
    code = req.language or (req.languages[0] if req.languages else None)
    return SENSEVOICE_CODES[LANGUAGE_NAMES[code]] if code else "auto"


async def _models(request: Request) -> list[Model]:
    """The default model and its aliases, and SenseVoice-Small with its aliases when Triton serves its export."""
    m = request.app.state.settings.models
    names = [m.default, *m.aliases]
    if await request.app.state.service.sensevoice_available():
        names += [m.sensevoice, *m.sensevoice_aliases]
    return [Model(id=name, created=MODELS_CREATED, owned_by="funasr-triton") for name in dict.fromkeys(names)]


@router.get("/models", response_model=ModelList, summary="List the served models (what is exported and loaded) and aliases")
async def list_models(request: Request) -> ModelList:
    _authorize(request)
    return ModelList(data=await _models(request))


@router.get("/models/{model_id:path}", response_model=Model, summary="One model (404 if not served)")
async def retrieve_model(request: Request, model_id: str) -> Model:
    _authorize(request)
    for model in await _models(request):
        if model.id == model_id:
            return model
    raise AsrError(f"model {model_id!r} is not served here", 404, "model_not_found", "model")
