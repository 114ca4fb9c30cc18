"""The seed-compatible `/api` (the FunASR + pyannote call-centre service): multipart `audio` (or `file`)
in, one line per sentence out, times in float seconds, errors as `{"code": <http status>, "msg", "data": []}`.
"""
from __future__ import annotations

from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..app.auth import bearer, key_ok, nls_token
from ..app.hotwords import parse_hotwords
from ..app.inputs import check_speakers, is_uint
from ..app.upload import SpooledAudio, spool_upload
from ..contract import TranscribeOptions, Transcript
from ..errors import AsrError
from .protocol import SeedErrorResponse, SeedLine, SeedResponse

PREFIXES: tuple[str, ...] = ("/api",)

UNKNOWN_SPEAKER = "SPEAKER_00"
FILE_FIELDS = ("audio", "file")
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and small fields around the one file

router = APIRouter(tags=["seed"])


def render_error(request: Request, err: AsrError) -> Response:
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s is not None else None
    body = SeedErrorResponse(code=err.status, msg=err.message)
    return JSONResponse(body.model_dump(mode="json"), status_code=err.status, headers=headers)


def seconds(ms: int) -> float:
    return round(ms / 1000, 3)


def to_response(transcript: Transcript) -> SeedResponse:
    return SeedResponse(data=[SeedLine(line=i, speaker=s.speaker or UNKNOWN_SPEAKER, start_time=seconds(s.start_ms),
                                       end_time=seconds(s.end_ms), text=s.text)
                              for i, s in enumerate(transcript.sentences, start=1)])


def authorize(request: Request) -> None:
    """Any of: `Authorization: Bearer`, `X-NLS-Token`, `?token=`."""
    settings = request.app.state.settings
    if not (key_ok(settings, bearer(request)) or key_ok(settings, nls_token(request))):
        raise AsrError("missing or invalid API key", 401, "unauthorized")


async def bounded(request: Request, limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise AsrError(f"the upload exceeds {limit} bytes", 413, "too_large", "audio")
        yield chunk


async def read_upload(request: Request, max_bytes: int) -> tuple[SpooledAudio, dict[str, str]]:
    """The uploaded audio (field `audio`, else `file`) and the other (text) fields; the body is
    parsed as it streams in and abandoned once it passes the upload limit."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise AsrError("send multipart/form-data with the audio in the field 'audio'", 400, "invalid_request", "audio")
    limit = max_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if is_uint(declared) and int(declared) > limit:
        raise AsrError(f"the upload is {declared} bytes; at most {max_bytes} accepted", 413, "too_large", "audio")
    try:
        form = await MultiPartParser(request.headers, bounded(request, limit), max_files=2, max_fields=8).parse()
    except MultiPartException as e:
        raise AsrError(f"malformed multipart body: {e.message}", 400, "invalid_request", "audio")
    try:
        upload = next((form[k] for k in FILE_FIELDS if isinstance(form.get(k), UploadFile)), None)
        if upload is None:
            raise AsrError("the form has no file field 'audio' (or 'file')", 400, "invalid_request", "audio")
        audio = await spool_upload(upload, max_bytes, lambda: AsrError(
            f"the upload exceeds {max_bytes} bytes", 413, "too_large", "audio"))
        return audio, {k: v for k, v in form.items() if isinstance(v, str)}
    finally:
        await form.close()


def _count(fields: dict[str, str], name: str) -> int | None:
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    if not is_uint(raw) or not 1 <= int(raw) <= 32:
        raise AsrError(f"{name} must be an integer between 1 and 32", 400, "invalid_request", name)
    return int(raw)


@router.post("/api", summary="Transcribe one call recording (seed /api shape)", response_model=SeedResponse,
             responses={400: {"model": SeedErrorResponse}, 401: {"model": SeedErrorResponse},
                        413: {"model": SeedErrorResponse}, 429: {"model": SeedErrorResponse},
                        503: {"model": SeedErrorResponse}},
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["audio"],
                 "properties": {"audio": {"type": "string", "format": "binary", "description": "or field `file`"},
                                "hotwords": {"type": "string", "description": "optional: \"词 20 词 15\""},
                                "num_speakers": {"type": "integer", "minimum": 1, "maximum": 32,
                                                 "description": "optional: exact speaker count"},
                                "min_speakers": {"type": "integer", "minimum": 1, "maximum": 32},
                                "max_speakers": {"type": "integer", "minimum": 1, "maximum": 32},
                                "enable_speaker_diarization": {"type": "boolean", "default": True,
                                                               "description": "false when the server has "
                                                               "DIARIZATION__ENABLED off"},
                                "itn": {"type": "boolean", "default": False,
                                        "description": "inverse text normalization (三点一四 -> 3.14)"}}}}}}})
async def transcribe_call(request: Request) -> Response:
    authorize(request)
    service = request.app.state.service
    audio, fields = await read_upload(request, service.settings.limits.max_upload_bytes)
    with audio:
        if not audio.size:
            raise AsrError("the uploaded file is empty", 400, "empty_audio", "audio")
        counts = {k: _count(fields, k) for k in ("num_speakers", "min_speakers", "max_speakers")}
        check_speakers(counts["num_speakers"], counts["min_speakers"], counts["max_speakers"])
        default = "true" if service.settings.diarization.enabled else "false"
        diarize = fields.get("enable_speaker_diarization", default).strip().lower() not in ("false", "0", "no")
        itn = fields.get("itn", "false").strip().lower() in ("true", "1", "yes")
        transcript = await service.transcribe(audio, TranscribeOptions(
            hotwords=parse_hotwords(fields.get("hotwords")), timestamps=False, diarize=diarize, itn=itn, **counts))
    return JSONResponse(to_response(transcript).model_dump(mode="json"))
