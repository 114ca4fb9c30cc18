"""DashScope async transcription over durable jobs, for the official `dashscope` SDK
(`dashscope.base_http_api_url = "<this server>/api/v1"`, `Transcription.async_call / wait / fetch`).

- `POST /api/v1/services/audio/asr/transcription` (header `X-DashScope-Async: enable`): one job for the
  task's `file_urls` (fetched by the job through the SSRF guard, recognised in order).
- `GET /api/v1/tasks/{task_id}`: PENDING / RUNNING / SUCCEEDED / FAILED (/ CANCELED) with one result per
  file; a file that failed fails alone (`subtask_status` FAILED), the task fails when all did.
- `transcription_url` = `GET /api/v1/tasks/{task_id}/transcriptions/{n}`: the transcript document. Like
  DashScope's pre-signed result URLs it needs no header: with API keys configured it carries a signature
  (`sig`, HMAC-SHA256 of the path under the first API key) instead.
Errors are `{request_id, code, message}` with the HTTP status, as DashScope answers them. HTTP in and out here
(the key, signatures, URLs); the task's meaning and the replies are in serving.py.
"""
from __future__ import annotations

import hashlib
import hmac
import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ..app.auth import bearer, key_ok, require_key
from ..contract import Transcript
from ..errors import AsrError
from ..jobs.runner import runner_of
from ..jobs.store import SUCCEEDED, Job
from . import protocol as p
from . import serving

KIND = serving.KIND
PREFIXES: tuple[str, ...] = ("/api/v1/services", "/api/v1/tasks")
router = APIRouter(prefix="/api/v1", tags=["dashscope"],
                   responses={s: {"model": p.ErrorReply} for s in (400, 401, 404, 413, 429, 503)})
# the key (a task's transcription_url may carry a signature instead: get_transcription checks that itself)
authorized = [Depends(require_key("Invalid API-key provided.", "invalid_api_key"))]


def render_error(request: Request, err: AsrError) -> Response:
    body = p.ErrorReply(request_id=str(uuid.uuid4()), code=serving.error_code(err.status), message=err.message)
    return JSONResponse(body.model_dump(), status_code=err.status)


def _signature(request: Request, path: str) -> str | None:
    keys = request.app.state.settings.auth.api_keys
    if not keys:
        return None
    return hmac.new(keys[0].get_secret_value().encode(), path.encode(), hashlib.sha256).hexdigest()


def _base_url(request: Request) -> str:
    public = request.app.state.settings.jobs.public_url
    return (public or str(request.base_url)).rstrip("/")


@router.post("/services/audio/asr/transcription", summary="Submit a DashScope async transcription task",
             dependencies=authorized)
async def submit(request: Request) -> JSONResponse:
    jobs = runner_of(request.app)
    if request.headers.get("x-dashscope-async", "").lower() != "enable":
        raise AsrError("current user api does not support synchronous calls (send X-DashScope-Async: enable)", 400,
                       "invalid_value")
    body = serving.parse_submit(await request.body())
    params, files = await serving.job_of(request.app, request.app.state.service, body)
    job = await jobs.submit(KIND, params, files, [None] * len(files))
    return JSONResponse(serving.submit_reply(job).model_dump())


async def _job(request: Request, task_id: str) -> Job:
    job = await runner_of(request.app).get(task_id)
    if job is None or job.kind != KIND:
        raise AsrError(f"task {task_id!r} not found", 404, "not_found")
    return job


@router.get("/tasks/{task_id}", summary="A DashScope task's status and results", dependencies=authorized)
async def get_task(request: Request, task_id: str) -> JSONResponse:
    job = await _job(request, task_id)

    def transcription_url(i: int) -> str:
        path = f"/api/v1/tasks/{job.id}/transcriptions/{i}"
        sig = _signature(request, path)
        return _base_url(request) + path + (f"?sig={sig}" if sig else "")

    return JSONResponse(serving.task_reply(job, transcription_url).model_dump(mode="json", exclude_none=True))


@router.get("/tasks/{task_id}/transcriptions/{n}", summary="A file's transcript (a task's transcription_url)")
async def get_transcription(request: Request, task_id: str, n: int, sig: str | None = None) -> JSONResponse:
    expected = _signature(request, request.url.path)
    if expected is not None and not (sig and hmac.compare_digest(sig, expected)) and not key_ok(
            request.app.state.settings, bearer(request)):
        raise AsrError("this transcription URL needs its signature (sig) or an API key", 401, "invalid_api_key")
    job = await _job(request, task_id)
    if not job.results or n < 0 or n >= len(job.results) or job.results[n]["status"] != SUCCEEDED:
        raise AsrError(f"task {task_id} has no transcript for file {n}", 404, "not_found")
    doc = serving.document(job.files[n]["url"], Transcript.model_validate(job.results[n]["transcript"]))
    return JSONResponse(doc.model_dump(mode="json", exclude_none=True))
