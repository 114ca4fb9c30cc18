"""The seed-compatible `/api` (the FunASR + pyannote call-centre service): multipart `audio` (or `file`)
in, one line per sentence out, times in float seconds, errors as `{"code": <http status>, "msg", "data": []}`.
HTTP in and out here (also the key and the multipart form `/transcribe` uses); the fields' meaning and the
response are in serving.py.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import FormData, UploadFile

from ..app.auth import bearer, nls_token, require_key
from ..app.upload import read_form, spool_part
from ..contract import MAX_SPEAKERS
from ..errors import AsrError
from . import serving
from .protocol import SeedErrorResponse, SeedResponse

PREFIXES: tuple[str, ...] = ("/api",)

# any of: `Authorization: Bearer`, `X-NLS-Token`, `?token=` (also for /transcribe)
authorized = Depends(require_key("missing or invalid API key", "unauthorized", sources=(bearer, nls_token)))
router = APIRouter(tags=["seed"], dependencies=[authorized])


def render_error(request: Request, err: AsrError) -> Response:
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s is not None else None
    body = SeedErrorResponse(code=err.status, msg=err.message)
    return JSONResponse(body.model_dump(mode="json"), status_code=err.status, headers=headers)


async def multipart(request: Request, audio_limit: int, param: str, hint: str, max_files: int,
                    max_fields: int) -> FormData:
    """The multipart form, parsed as it streams in and abandoned once it passes `audio_limit` (plus the form's
    overhead); any other content type is a 400 that says what to send (`hint`)."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise AsrError(hint, 400, "invalid_request", param)
    return await read_form(request, audio_limit, param, max_files=max_files, max_fields=max_fields)


@router.post("/api", summary="Transcribe one call recording (seed /api shape)", response_model=SeedResponse,
             responses={400: {"model": SeedErrorResponse}, 401: {"model": SeedErrorResponse},
                        413: {"model": SeedErrorResponse}, 429: {"model": SeedErrorResponse},
                        503: {"model": SeedErrorResponse}},
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["audio"],
                 "properties": {"audio": {"type": "string", "format": "binary", "description": "or field `file`"},
                                "hotwords": {"type": "string", "description": "optional: \"词 20 词 15\""},
                                "num_speakers": {"type": "integer", "minimum": 1, "maximum": MAX_SPEAKERS,
                                                 "description": "optional: exact speaker count"},
                                "min_speakers": {"type": "integer", "minimum": 1, "maximum": MAX_SPEAKERS},
                                "max_speakers": {"type": "integer", "minimum": 1, "maximum": MAX_SPEAKERS},
                                "enable_speaker_diarization": {"type": "boolean", "default": True,
                                                               "description": "false when the server has "
                                                               "DIARIZATION__ENABLED off"},
                                "itn": {"type": "boolean", "default": False,
                                        "description": "inverse text normalization (三点一四 -> 3.14)"}}}}}}})
async def transcribe_call(request: Request) -> Response:
    service = request.app.state.service
    limit = service.settings.limits.max_upload_bytes
    form = await multipart(request, limit, "audio", "send multipart/form-data with the audio in the field 'audio'",
                           max_files=2, max_fields=8)
    try:
        upload = next((form[k] for k in serving.FILE_FIELDS if isinstance(form.get(k), UploadFile)), None)
        if upload is None:
            raise AsrError("the form has no file field 'audio' (or 'file')", 400, "invalid_request", "audio")
        audio = await spool_part(upload, limit, "audio")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    finally:
        await form.close()
    with audio:
        if not audio.size:
            raise AsrError("the uploaded file is empty", 400, "empty_audio", "audio")
        options = serving.call_options(fields, service.settings.diarization.enabled)
        transcript = await service.transcribe(audio, options)
    return JSONResponse(serving.to_response(transcript).model_dump(mode="json"))
