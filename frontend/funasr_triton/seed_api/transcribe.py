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
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..app.inputs import is_uint
from ..app.service import PARAFORMER, SENSEVOICE
from ..app.upload import spool_upload
from ..contract import TranscribeOptions
from ..errors import AsrError
from .router import MULTIPART_OVERHEAD, authorize, bounded

PREFIXES: tuple[str, ...] = ("/transcribe",)
LANGS = ("auto", "zh", "en")
SENSEVOICE_LANGS = (*LANGS, "yue", "ja", "ko")
router = APIRouter(tags=["seed"])
_ERRORS = (400, 401, 413, 429)


class FileSegment(BaseModel):
    start: float
    end: float
    text: str
    speaker: str | None = None


class FileResult(BaseModel):
    key: str
    status: str  # success | failed
    text: str = ""
    language: str | None = None
    duration: float | None = None  # seconds of audio
    segments: list[FileSegment] = Field(default_factory=list)
    error: str | None = None
    code: str | None = None


class TranscribeResponse(BaseModel):
    message: str
    processing_time: float  # seconds
    results: list[FileResult]


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
                                "lang": {"type": "string", "enum": list(SENSEVOICE_LANGS), "default": "auto",
                                         "description": "yue, ja and ko with model sensevoice-small only"},
                                "model": {"type": "string", "description": "sensevoice-small, or the default model"},
                                "itn": {"type": "boolean", "default": False}}}}}}})
async def transcribe_files(request: Request) -> JSONResponse:
    authorize(request)
    t0 = time.perf_counter()
    service = request.app.state.service
    settings = service.settings
    max_files, per_file = settings.jobs.max_files, settings.limits.max_upload_bytes
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise AsrError("send multipart/form-data with the recordings as `files` parts", 400, "invalid_request", "files")
    limit = settings.jobs.max_job_bytes + MULTIPART_OVERHEAD * max_files
    declared = request.headers.get("content-length", "")
    if is_uint(declared) and int(declared) > limit:
        raise AsrError(f"the request is {declared} bytes; at most {settings.jobs.max_job_bytes} of audio accepted",
                       413, "too_large", "files")
    try:
        form = await MultiPartParser(request.headers, bounded(request, limit), max_files=max_files,
                                     max_fields=16).parse()
    except MultiPartException as e:
        raise AsrError(f"malformed multipart body (at most {max_files} files): {e.message}", 400, "invalid_request",
                       "files")
    try:
        uploads = [v for k, v in form.multi_items() if k in ("files", "files[]", "file") and isinstance(v, UploadFile)]
        if not uploads:
            raise AsrError("no `files` part in the form", 400, "invalid_request", "files")
        raw_keys = form.get("keys")
        keys = [k.strip() for k in raw_keys.split(",")] if isinstance(raw_keys, str) and raw_keys.strip() else []
        if keys and len(keys) != len(uploads):
            raise AsrError(f"{len(keys)} keys for {len(uploads)} files: give one key per file", 400, "invalid_request",
                           "keys")
        model_field = form.get("model")
        name = model_field.strip() if isinstance(model_field, str) and model_field.strip() else None
        model = service.check_model(name) if name else PARAFORMER
        await service.require_model(model, name)
        langs = SENSEVOICE_LANGS if model == SENSEVOICE else LANGS
        lang = form.get("lang") or "auto"
        if not isinstance(lang, str) or lang.strip().lower() not in langs:
            raise AsrError(f"lang must be one of {', '.join(langs)}", 400, "invalid_request", "lang")
        lang = lang.strip().lower()
        itn_field = form.get("itn")
        itn = isinstance(itn_field, str) and itn_field.strip().lower() in ("true", "1", "yes")
        options = TranscribeOptions(punctuation=True, timestamps=True, itn=itn, model=model,
                                    language=lang if model == SENSEVOICE else None)
        results: list[FileResult] = []
        for i, upload in enumerate(uploads):
            key = keys[i] if keys else (upload.filename or f"file{i}")
            try:
                audio = await spool_upload(upload, per_file, lambda: AsrError(
                    f"the file is larger than {per_file} bytes", 413, "too_large", "files"))
                with audio:
                    if not audio.size:
                        raise AsrError("the file is empty", 400, "empty_audio", "files")
                    t = await service.transcribe(audio, options)
                results.append(FileResult(
                    key=key, status="success", text=t.text, language=t.language if model == SENSEVOICE else lang,
                    duration=round(t.duration_ms / 1000, 3),
                    segments=[FileSegment(start=round(s.start_ms / 1000, 3), end=round(s.end_ms / 1000, 3),
                                          text=s.text, speaker=s.speaker) for s in t.sentences]))
            except AsrError as err:
                results.append(FileResult(key=key, status="failed", error=err.message, code=err.code))
    finally:
        await form.close()
    failed = sum(r.status == "failed" for r in results)
    message = "success" if not failed else f"{failed} of {len(results)} files failed"
    body = TranscribeResponse(message=message, processing_time=round(time.perf_counter() - t0, 3), results=results)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True))
