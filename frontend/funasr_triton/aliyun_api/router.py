"""Alibaba Cloud NLS REST (一句话识别): `POST /stream/v1/asr`, raw audio body or `audio_address`.

Real NLS clients must work unmodified: Alibaba's four body fields and the `task_id` header keep their
meaning, failures use Alibaba's envelope and status codes, and our extensions are only added fields.
"""
from __future__ import annotations

import math
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from ..app.auth import key_ok, nls_token
from ..app.hotwords import parse_hotwords
from ..app.inputs import check_speakers, is_uint
from ..app.upload import SpooledAudio, spool_body
from ..contract import TranscribeOptions, Transcript
from ..errors import AsrError
from ..nls import NlsStatus
from ..vocabularies.registry import looks_like_id, vocabulary_words
from .protocol import NlsAsrQuery, NlsAsrResponse, NlsErrorResponse, NlsSentence, NlsWord

PREFIXES: tuple[str, ...] = ("/stream/v1",)

SAMPLE_RATES = (16000, 8000)
# Formats ffmpeg decodes by content (the name only has to be a known one). Alibaba's own `opus`/`speex`
# packetisations without a container cannot be probed and fail as undecodable audio (40000002).
CONTAINER_FORMATS = frozenset({"wav", "opus", "ogg", "ogg-opus", "speex", "amr", "amr-nb", "amr-wb", "mp3", "aac",
                               "m4a", "mp4", "flac", "webm", "wma"})
# Headers that identify a container beyond doubt (no MPEG/ADTS frame sync: raw PCM may start like one).
_CONTAINER_MAGIC = (b"RIFF", b"RF64", b"ID3", b"OggS", b"fLaC", b"#!AMR", b"\x1aE\xdf\xa3", b"FORM", b"caff")
# AsrError codes that describe the audio itself: NLS "invalid message" rather than "invalid parameter".
_AUDIO_CODES = frozenset({"empty_audio", "bad_audio", "audio_too_long", "decode_timeout", "invalid_audio"})

router = APIRouter(tags=["aliyun-nls"])


def task_id_of(request: Request) -> str:
    """The request's 32-hex NLS task id, made once and shared by the response and any error."""
    task_id = getattr(request.state, "nls_task_id", None)
    if task_id is None:
        task_id = request.state.nls_task_id = uuid.uuid4().hex
    return task_id


def nls_status(err: AsrError) -> tuple[int, int]:
    """The one mapping of this surface: AsrError -> (HTTP status, NLS status)."""
    if err.status == 401:
        return 401, NlsStatus.AUTHENTICATION_FAILED
    if err.status == 429:
        return 429, NlsStatus.TOO_MANY_REQUESTS
    if err.status == 413:
        return 413, NlsStatus.DEFAULT_CLIENT_ERROR
    if err.status in (404, 405, 499):  # routing, or the client hung up: keep the HTTP meaning
        return err.status, NlsStatus.DEFAULT_CLIENT_ERROR
    if err.status < 500:
        if err.code == "unsupported_sample_rate":
            return 400, NlsStatus.UNSUPPORTED_SAMPLE_RATE
        if err.code in _AUDIO_CODES:
            return 400, NlsStatus.INVALID_MESSAGE
        return 400, NlsStatus.INVALID_PARAMETER if err.param else NlsStatus.DEFAULT_CLIENT_ERROR
    if err.status in (503, 504):  # backend unavailable / past the deadline: keep the HTTP meaning for retries
        return err.status, NlsStatus.DEFAULT_SERVER_ERROR
    if err.status == 502:  # Triton answered with a failure over gRPC
        return 500, NlsStatus.INTERNAL_GRPC_ERROR
    return 500, NlsStatus.DEFAULT_SERVER_ERROR


def render_error(request: Request, err: AsrError) -> Response:
    http_status, status = nls_status(err)
    task_id = task_id_of(request)
    headers = {"task_id": task_id}
    if err.retry_after_s is not None:
        headers["Retry-After"] = str(err.retry_after_s)
    body = NlsErrorResponse(task_id=task_id, status=status, message=err.message)
    return JSONResponse(body.model_dump(mode="json"), status_code=http_status, headers=headers)


async def require_token(request: Request) -> None:
    """X-NLS-Token header or `token` query parameter; checked before any parameter or body is read."""
    task_id_of(request)
    if not key_ok(request.app.state.settings, nls_token(request)):
        raise AsrError("Gateway:ACCESS_DENIED:The token is missing or invalid!", 401, "unauthorized", "token")


def check_format(name: str | None) -> str | None:
    if name is None or name == "":
        return None
    fmt = name.lower()
    if fmt != "pcm" and fmt not in CONTAINER_FORMATS:
        raise AsrError(f"format {name!r} is not supported; use pcm or one of {', '.join(sorted(CONTAINER_FORMATS))}",
                       400, "unsupported_format", "format")
    return fmt


def check_sample_rate(rate: int) -> int:
    if rate not in SAMPLE_RATES:
        raise AsrError(f"sample_rate {rate} is not supported; use 16000 or 8000", 400, "unsupported_sample_rate",
                       "sample_rate")
    return rate


def pcm_rate(fmt: str | None, sample_rate: int, data: bytes) -> int | None:
    """None: ffmpeg decodes by content; an int: the bytes are raw s16le mono at that rate.

    Alibaba's default format is pcm; bytes with an unmistakable container header (a wav sent without
    `format`, or with `format=pcm`) are decoded by content instead, their header being authoritative.
    """
    has_header = data.startswith(_CONTAINER_MAGIC) or data[4:8] == b"ftyp"
    if fmt is None:
        return None if has_header else sample_rate
    if fmt == "pcm":
        return None if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE" else sample_rate
    return None


async def read_body(request: Request, limit: int) -> SpooledAudio:
    """The raw body, spooled as it streams in and abandoned as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if is_uint(declared) and int(declared) > limit:
        raise AsrError(f"the body is {declared} bytes; at most {limit} accepted", 413, "too_large", "audio")
    return await spool_body(request, limit, lambda: AsrError(f"the body exceeds {limit} bytes", 413, "too_large",
                                                             "audio"))


def confidence(logprobs: list[float]) -> float:
    """Geometric mean of the probabilities: exp(mean log-probability), 0.0 with nothing recognised."""
    return round(math.exp(sum(logprobs) / len(logprobs)), 4) if logprobs else 0.0


def to_response(task_id: str, transcript: Transcript, words: bool, processing_ms: int) -> NlsAsrResponse:
    sentences = [NlsSentence(text=s.text, begin_time=s.start_ms, end_time=s.end_ms, speaker_id=s.speaker,
                             confidence=None if s.logprobs is None else confidence([x.logprob for x in s.logprobs]),
                             words=[NlsWord(text=w.text, begin_time=w.start_ms, end_time=w.end_ms) for w in s.words]
                             if words else None)
                 for s in transcript.sentences]
    every = [x.logprob for s in transcript.sentences for x in s.logprobs or []]
    # SenseVoice's CTC output has no decoder log-probabilities: no confidence rather than a made-up one
    overall = confidence(every) if transcript.model == "paraformer" else None
    return NlsAsrResponse(task_id=task_id, result=transcript.text, confidence=overall,
                          duration_ms=transcript.duration_ms,
                          processing_ms=processing_ms, sentences=sentences)


@router.post("/stream/v1/asr", summary="Recognise one recording (Alibaba NLS REST)",
             response_model=NlsAsrResponse, response_model_exclude_none=True,
             responses={400: {"model": NlsErrorResponse}, 401: {"model": NlsErrorResponse},
                        404: {"model": NlsErrorResponse, "description": "extension `model` names no served model"},
                        413: {"model": NlsErrorResponse}, 429: {"model": NlsErrorResponse},
                        500: {"model": NlsErrorResponse}, 503: {"model": NlsErrorResponse}},
             openapi_extra={"requestBody": {"required": False, "description": "the audio bytes (unless audio_address)",
                                            "content": {"application/octet-stream": {
                                                "schema": {"type": "string", "format": "binary"}}}}},
             dependencies=[Depends(require_token)])
async def create_recognition(request: Request, query: Annotated[NlsAsrQuery, Query()]) -> Response:
    t0 = time.perf_counter()
    task_id = task_id_of(request)
    service = request.app.state.service
    fmt = check_format(query.format)
    sample_rate = check_sample_rate(query.sample_rate)
    check_speakers(query.speaker_count, query.min_speakers, query.max_speakers,
                   ("speaker_count", "min_speakers", "max_speakers"))
    # enable_voice_detection and disfluency are accepted for compatibility: no disfluency model is served,
    # and VAD always segments the audio.
    # a stored vocabulary's id (vocab-…), or inline words as funasr-api takes them ("词 20 词 15")
    hotwords = (await vocabulary_words(request.app, query.vocabulary_id) if looks_like_id(query.vocabulary_id)
                else parse_hotwords(query.vocabulary_id))
    model = service.check_model(query.model) if query.model else "paraformer"
    await service.require_model(model, query.model)
    language = (query.language or "auto").lower() if model == "sensevoice" else None
    if language is not None and language not in ("auto", "zh", "en", "yue", "ja", "ko"):
        raise AsrError(f"language {query.language!r}: one of auto, zh, en, yue, ja, ko", 400, "invalid_parameter",
                       "language")
    if query.audio_address:
        audio = await service.fetch(query.audio_address)
    else:
        audio = await read_body(request, request.app.state.settings.limits.max_upload_bytes)
    with audio:
        if not audio.size:
            raise AsrError("no audio: send the audio bytes as the request body or set audio_address", 400,
                           "empty_audio", "audio")
        words = query.enable_words or query.word_timestamps
        options = TranscribeOptions(hotwords=hotwords, punctuation=query.enable_punctuation_prediction,
                                    timestamps=words, pcm_sample_rate=pcm_rate(fmt, sample_rate, audio.head()),
                                    diarize=query.enable_speaker_diarization, num_speakers=query.speaker_count,
                                    min_speakers=query.min_speakers, max_speakers=query.max_speakers,
                                    itn=query.enable_inverse_text_normalization, model=model, language=language,
                                    logprobs=True)
        transcript = await service.transcribe(audio, options)
    body = to_response(task_id, transcript, words, int((time.perf_counter() - t0) * 1000))
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers={"task_id": task_id})
