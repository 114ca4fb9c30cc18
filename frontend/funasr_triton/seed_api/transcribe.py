"""Seed 003's `POST /transcribe`: several recordings in one request, one result per file, in order.

Multipart: `files` (one part per recording), `keys` (optional, comma-separated names, one per file; the
file names otherwise), `lang` (auto, zh or en; Paraformer-zh recognises Mandarin with English words in
all three), `model` (optional: `sensevoice-small` — seed 003's own model — makes `lang` SenseVoice's language query,
which also takes yue, ja and ko, and each result's `language` the detected one), `itn` (optional). Answers `{message, processing_time, results}`. A file that fails (bad audio,
too large, empty) fails alone: its result has `status: "failed"` and `error`; the others are recognised.
The request as a whole fails (`{message, processing_time: 0, results: []}` with a 4xx status) only for
what concerns all files: authentication, the form, `keys`/`lang`, `jobs.max_files`, `jobs.max_job_bytes`.
"""
from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from ..app.upload import spool_part
from ..errors import AsrError
from . import serving
from .protocol import FileResult, TranscribeResponse
from .router import authorized, multipart

PREFIXES: tuple[str, ...] = ("/transcribe",)
router = APIRouter(tags=["seed"], dependencies=[authorized])
_ERRORS = (400, 401, 413, 429)


def render_error(request: Request, err: AsrError) -> Response:
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s is not None else None
    body = TranscribeResponse(message=err.message, processing_time=0.0, results=[])
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=err.status, headers=headers)


@router.post("/transcribe", summary="Transcribe several files (seed 003 shape)", response_model=TranscribeResponse,
             responses={s: {"model": TranscribeResponse} for s in _ERRORS},
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["files"],
                 "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                                "keys": {"type": "string", "description": "comma-separated, one per file"},
                                "lang": {"type": "string", "enum": list(serving.SENSEVOICE_LANGS), "default": "auto",
                                         "description": "yue, ja and ko with model sensevoice-small only"},
                                "model": {"type": "string", "description": "sensevoice-small, or the default model"},
                                "itn": {"type": "boolean", "default": False}}}}}}})
async def transcribe_files(request: Request) -> JSONResponse:
    t0 = time.perf_counter()
    service = request.app.state.service
    settings = service.settings
    max_files, per_file = settings.jobs.max_files, settings.limits.max_upload_bytes
    form = await multipart(request, settings.jobs.max_job_bytes, "files",
                           "send multipart/form-data with the recordings as `files` parts", max_files=max_files,
                           max_fields=16)
    try:
        uploads = [v for k, v in form.multi_items() if k in serving.BATCH_FILE_FIELDS and isinstance(v, UploadFile)]
        if not uploads:
            raise AsrError("no `files` part in the form", 400, "invalid_request", "files")
        keys = serving.file_keys(form.get("keys"), len(uploads))
        options, lang = await serving.batch_options(service, form.get("model"), form.get("lang"), form.get("itn"))
        results: list[FileResult] = []
        for i, upload in enumerate(uploads):
            key = keys[i] if keys else (upload.filename or f"file{i}")
            try:
                with await spool_part(upload, per_file, "files") as audio:
                    if not audio.size:
                        raise AsrError("the file is empty", 400, "empty_audio", "files")
                    results.append(serving.file_result(key, await service.transcribe(audio, options), options, lang))
            except AsrError as err:
                results.append(FileResult(key=key, status="failed", error=err.message, code=err.code))
    finally:
        await form.close()
    failed = sum(r.status == "failed" for r in results)
    message = "success" if not failed else f"{failed} of {len(results)} files failed"
    body = TranscribeResponse(message=message, processing_time=round(time.perf_counter() - t0, 3), results=results)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True))
