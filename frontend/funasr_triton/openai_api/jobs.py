"""Native jobs under /v1 (OpenAI error shape): submit a recording, collect its transcript later.

`POST /v1/jobs` takes the form of `POST /v1/audio/transcriptions` (same fields, same validation) with
the audio as `file` parts or as `url` / `audio_address` fields (fetched by the job, through the SSRF
guard). `GET /v1/jobs/{id}` gives status, progress and, once done, the result in the job's
`response_format` (or the one asked for in the query); `GET /v1/jobs/{id}/result` answers exactly what
/v1/audio/transcriptions would have. `DELETE /v1/jobs/{id}` cancels; `GET /v1/jobs` lists.
"""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from ..app.fetch import parse_target
from ..app.inputs import check_speakers
from ..app.upload import SpooledAudio
from ..contract import Transcript
from ..errors import AsrError
from ..jobs.runner import runner_of
from ..jobs.store import FINISHED, SUCCEEDED, Job
from . import serving
from .protocol import JOB_FORM, ErrorResponse, ResponseFormat, TranscriptionRequest
from .router import authorized, form_of

KIND = "openai"
URL_FIELDS = ("url", "audio_address")
router = APIRouter(prefix="/v1", tags=["jobs"], dependencies=[authorized],
                   responses={s: {"model": ErrorResponse} for s in (400, 401, 404, 409, 413, 429)})


def _view(request: Request, job: Job, response_format: str | None = None) -> dict:
    return serving.job_view(job, request.app.state.settings.subtitles, response_format)


async def _get_job(request: Request, job_id: str) -> Job:
    job = await runner_of(request.app).get(job_id)
    if job is None:
        raise AsrError(f"no job {job_id!r}", 404, "job_not_found", "job_id")
    return job


@router.post("/jobs", status_code=202, summary="Submit a transcription job (form of /v1/audio/transcriptions)",
             openapi_extra=JOB_FORM)
async def submit_job(request: Request) -> JSONResponse:
    jobs = runner_of(request.app)
    settings = request.app.state.settings
    service = request.app.state.service
    form = await form_of(request)
    audio: list[SpooledAudio | None] = []
    files: list[dict] = []
    try:
        req = serving.parse_form(form, TranscriptionRequest)
        service.check_model(req.model)
        check_speakers(req.num_speakers, req.min_speakers, req.max_speakers)
        options = await serving.options_of(request.app, req)
        if req.stream:
            raise AsrError("stream: a job is not streamed; poll GET /v1/jobs/{id}", 400, "invalid_value", "stream")
        uploads = form.getlist("file")
        urls = [u for key in URL_FIELDS for k in list(dict.fromkeys(form.keys()))
                if k == key or k == key + "[]" for u in serving.text_values(form, k) if u.strip()]
        if not uploads and not urls:
            raise AsrError("file: required (multipart `file` parts with the audio, or `url` fields)", 400,
                           "missing_file", "file")
        if len(uploads) + len(urls) > settings.jobs.max_files:
            raise AsrError(f"{len(uploads) + len(urls)} files in one job; at most {settings.jobs.max_files}", 400,
                           "too_many_files", "file")
        if urls and not settings.audio.url_fetch_enabled:
            raise AsrError("audio by URL is disabled on this server", 400, "url_disabled", "url")
        for i, upload in enumerate(uploads):
            audio.append(await serving.spool_file(upload, settings.limits.max_upload_bytes))
            files.append({"name": upload.filename or f"file{i}"})
        for url in urls:
            parse_target(url)  # malformed URLs are refused now; the address checks run when fetched
            audio.append(None)
            files.append({"name": url.rsplit("/", 1)[-1] or url, "url": url})
    except BaseException:
        for a in audio:
            if a is not None:
                a.close()
        raise
    finally:
        await form.close()
    params = {"options": options.model_dump(mode="json"), "openai": req.model_dump(mode="json")}
    try:
        job = await jobs.submit(KIND, params, files, audio)
    finally:
        for a in audio:
            if a is not None:
                a.close()  # moved into the data directory when accepted; removed otherwise
    return JSONResponse(_view(request, job), status_code=202)


@router.get("/jobs", summary="List jobs, newest first")
async def list_jobs(request: Request, limit: int = Query(20, ge=1, le=100),
                    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"] | None = None,
                    kind: str | None = None, before: float | None = Query(None, description="created_at bound "
                                                                          "(paging: the last item's created_at)")):
    rows = await runner_of(request.app).list(kind, status, limit + 1, before)
    return {"object": "list", "data": [_view(request, j) for j in rows[:limit]], "has_more": len(rows) > limit}


@router.get("/jobs/{job_id}", summary="A job: status, progress, result")
async def get_job(request: Request, job_id: str, response_format: ResponseFormat | None = None):
    return _view(request, await _get_job(request, job_id), response_format)


@router.get("/jobs/{job_id}/result", response_model=None,
            summary="A finished job's transcript, exactly as /v1/audio/transcriptions answers it")
async def get_job_result(request: Request, job_id: str, response_format: ResponseFormat | None = None,
                         file: int = Query(0, ge=0, description="which file of the job")) -> Response:
    job = await _get_job(request, job_id)
    if job.state not in FINISHED or not job.results:
        raise AsrError(f"job {job_id} is {job.state}; its result is not available", 409, "job_not_finished")
    if file >= len(job.results):
        raise AsrError(f"job {job_id} has {len(job.results)} files", 400, "invalid_value", "file")
    r = job.results[file]
    if r["status"] != SUCCEEDED:
        e = r["error"]
        raise AsrError(e["message"], e["status"] if 400 <= e["status"] < 500 else 422, e["code"], "file")
    return serving.render(Transcript.model_validate(r["transcript"]), serving.job_request(job, response_format),
                          request.app.state.settings.subtitles)


@router.delete("/jobs/{job_id}", summary="Cancel a job (queued or running)")
async def cancel_job(request: Request, job_id: str):
    jobs = runner_of(request.app)
    await _get_job(request, job_id)
    state = await jobs.cancel(job_id)
    job = await _get_job(request, job_id)
    if state not in ("cancelled",):
        raise AsrError(f"job {job_id} already finished ({job.state})", 409, "job_finished")
    return _view(request, job)
