"""The OpenAI Audio API's serving: request -> service call -> wire model, with no HTTP in it.

Form decoding follows openai-python's multipart encoding: lists as `name[]` (the bare `name` and `name[0]`
also work), dicts as `name[key]` (`chunking_strategy[type]=server_vad`), or `chunking_strategy=auto` / JSON
text; unknown fields are ignored. Then the options (`TranscribeOptions`), the rendering of a `Transcript` in
each response_format, and the SSE events of stream=true. Shared by /v1/audio/transcriptions and /v1/jobs.
"""
from __future__ import annotations

import json
import logging
import math
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from ..app.config import Settings, SubtitleSettings
from ..app.hotwords import check_hotword, parse_hotwords
from ..app.inputs import loads
from ..app.service import PARAFORMER, SENSEVOICE
from ..app.subtitles import to_srt, to_vtt
from ..app.upload import SpooledAudio, spool_part
from ..contract import TokenLogprob, TranscribeOptions, Transcript
from ..errors import AsrError
from ..jobs.store import SUCCEEDED, Job
from ..vocabularies.registry import vocabulary_words
from .protocol import (LANGUAGE_NAMES, SENSEVOICE_CODES, SENSEVOICE_NAMES, ErrorInfo, ErrorResponse, InputTokenDetails,
                       Logprob, Model, TranscriptionDiarized, TranscriptionDiarizedSegment, TranscriptionRequest,
                       TranscriptionResponse, TranscriptionResponseVerbose, TranscriptionSegment, TranscriptionWord,
                       TranscriptTextDelta, TranscriptTextDone, TranscriptTextSegment, UsageDuration, UsageTokens)

log = logging.getLogger(__name__)
MAX_FORM_FILES, MAX_FORM_FIELDS = 8, 256


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


# ---------------------------------------------------------------- form decoding

def text_values(form: FormData, key: str) -> list[str]:
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
            values = [v for k in keys if k == name or re.fullmatch(rf"{name}\[\d*\]", k) for v in text_values(form, k)]
            if len(values) == 1 and values[0].lstrip().startswith("["):
                try:
                    values = loads(values[0])
                except ValueError:
                    pass
            if values:
                fields[name] = values
            continue
        sub = {k[len(name) + 1:-1]: text_values(form, k)[-1] for k in keys if re.fullmatch(rf"{name}\[[^\]]+\]", k)}
        if name in form:
            raw = text_values(form, name)[-1]
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


def parse_form(form: FormData, model: type[BaseModel]) -> BaseModel:
    """The form's fields as `model` (TranscriptionRequest, TranslationRequest); the first error is a 400 naming
    its parameter."""
    try:
        return model.model_validate(_form_fields(form, model))
    except ValidationError as exc:
        first = exc.errors()[0]
        param = str(first["loc"][0]) if first["loc"] else None
        msg = first["msg"].removeprefix("Value error, ")
        value = first.get("input")
        if isinstance(value, str) and len(value) > 80:
            value = value[:80] + "…"
        got = f" (got {value!r})" if isinstance(value, (str, int, float)) and first["type"] != "value_error" else ""
        raise AsrError(f"{param}: {msg}{got}" if param else msg, 400, "invalid_value", param)


async def spool_file(upload: object, limit: int) -> SpooledAudio:
    """The form's `file` value (a file part, else a 400 naming `file`) spooled to disk, non-empty."""
    if upload is None:
        raise AsrError("file: required (multipart field `file` with the audio)", 400, "missing_file", "file")
    if not isinstance(upload, UploadFile):
        raise AsrError("file: must be an uploaded file (multipart part with a filename)", 400, "invalid_value", "file")
    audio = await spool_part(upload, limit, "file")
    if not audio.size:
        audio.close()
        raise AsrError("file: the uploaded file is empty", 400, "empty_file", "file")
    return audio


def _hotwords(req: TranscriptionRequest, settings: Settings) -> list[str]:
    """Hotwords from `prompt`, the `hotwords` extension and `keywords[]`, in order, without repeats; a hotword
    too long is named by its parameter (the service checks the merged list's count)."""
    words: list[str] = []
    for param, texts in (("prompt", [req.prompt]), ("hotwords", req.hotwords), ("keywords", req.keywords)):
        for w in (w for text in texts for w in parse_hotwords(text)):
            if check_hotword(w, settings.limits, param) not in words:
                words.append(w)
    return words


def needs_words(req: TranscriptionRequest) -> bool:
    """Whether rendering the request needs each word's times: verbose_json with word granularity, and subtitles
    (a long sentence is cut at word times). Without them Triton's result is sentence-sized: a 4 h transcript
    with every word held ~130 MB in the frontend, without them a few MB."""
    return req.response_format in ("srt", "vtt") or (req.response_format == "verbose_json"
                                                     and "word" in req.timestamp_granularities)


async def options_of(app, req: TranscriptionRequest, model: str = PARAFORMER, logprobs: bool = False,
                     words: bool = True) -> TranscribeOptions:
    """TranscribeOptions of a transcription request: a stored vocabulary's words, then the inline hotwords;
    diarization when asked for (diarized_json, the -diarize model), `known_speaker_names` as the speaker count;
    word timestamps when `words` (needs_words; a /v1/jobs result may be rendered in any format later)."""
    settings: Settings = app.state.settings
    hotwords = [*await vocabulary_words(app, req.vocabulary_id), *_hotwords(req, settings)]
    diarize = (req.enable_speaker_diarization or req.response_format == "diarized_json"
               or req.model == "gpt-4o-transcribe-diarize")
    num_speakers = req.num_speakers
    if diarize and num_speakers is None and req.max_speakers is None and req.known_speaker_names:
        num_speakers = len(req.known_speaker_names)
    return TranscribeOptions(hotwords=hotwords, punctuation=True, timestamps=words, diarize=diarize,
                             num_speakers=num_speakers, min_speakers=req.min_speakers, max_speakers=req.max_speakers,
                             itn=settings.itn.default if req.itn is None else req.itn, model=model,
                             language=_sensevoice_query(req) if model == SENSEVOICE else None, logprobs=logprobs)


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
    words = t.word_count
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


async def live_events(first: dict, events: AsyncIterator[dict], req: TranscriptionRequest) -> AsyncIterator[BaseModel]:
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


def render(t: Transcript, req: TranscriptionRequest, subtitles: SubtitleSettings) -> Response:
    """The transcript in the request's response_format."""
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


def _sensevoice_query(req: TranscriptionRequest) -> str:
    """OpenAI's `language` (or the first of `languages`) as SenseVoice's language query; none: auto."""
    code = req.language or (req.languages[0] if req.languages else None)
    return SENSEVOICE_CODES[LANGUAGE_NAMES[code]] if code else "auto"


async def served_models(settings: Settings, service, created: int) -> list[Model]:
    """The default model and its aliases, and SenseVoice-Small with its aliases when Triton serves its export."""
    m = settings.models
    names = [m.default, *m.aliases]
    if await service.sensevoice_available():
        names += [m.sensevoice, *m.sensevoice_aliases]
    return [Model(id=name, created=created, owned_by="funasr-triton") for name in dict.fromkeys(names)]


# ---------------------------------------------------------------- /v1/jobs

def job_request(job: Job, response_format: str | None) -> TranscriptionRequest:
    """The transcription request a job was submitted with, in `response_format` when one is asked for."""
    fields = dict(job.params.get("openai") or {})
    if response_format:
        fields["response_format"] = response_format
    return TranscriptionRequest.model_validate(fields)


def _rendered(job: Job, i: int, req: TranscriptionRequest, subtitles: SubtitleSettings):
    """File i's result in the request's format: JSON formats as objects, text formats as strings."""
    r = job.results[i]
    if r["status"] != SUCCEEDED:
        return None
    response = render(Transcript.model_validate(r["transcript"]), req, subtitles)
    body = response.body.decode("utf-8")
    return json.loads(body) if response.media_type == "application/json" else body


def job_view(job: Job, subtitles: SubtitleSettings, response_format: str | None = None) -> dict:
    """A /v1/jobs job: status, progress, files, and each finished file's result in the response_format."""
    req = job_request(job, response_format)
    files = []
    for i, f in enumerate(job.files or []):
        entry = {"name": f.get("name")}
        if f.get("url"):
            entry["url"] = f["url"]
        if f.get("size"):
            entry["bytes"] = f["size"]
        if job.results and i < len(job.results):
            r = job.results[i]
            entry["status"] = r["status"]
            if r["status"] == SUCCEEDED:
                entry["result"] = _rendered(job, i, req, subtitles)
            else:
                entry["error"] = r.get("error")
        files.append(entry)
    view = {"id": job.id, "object": "transcription.job", "kind": job.kind, "status": job.state,
            "created_at": int(job.created_at), "started_at": int(job.started_at) if job.started_at else None,
            "finished_at": int(job.finished_at) if job.finished_at else None, "attempts": job.attempts,
            "response_format": req.response_format, "progress": job.progress, "files": files,
            "result": files[0].get("result") if len(files) == 1 else None, "error": job.error}
    return view
