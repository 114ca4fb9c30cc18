"""DashScope async transcription over durable jobs, for the official `dashscope` SDK
(`dashscope.base_http_api_url = "<this server>/api/v1"`, `Transcription.async_call / wait / fetch`).

- `POST /api/v1/services/audio/asr/transcription` (header `X-DashScope-Async: enable`): one job for the
  task's `file_urls` (fetched by the job through the SSRF guard, recognised in order).
- `GET /api/v1/tasks/{task_id}`: PENDING / RUNNING / SUCCEEDED / FAILED (/ CANCELED) with one result per
  file; a file that failed fails alone (`subtask_status` FAILED), the task fails when all did.
- `transcription_url` = `GET /api/v1/tasks/{task_id}/transcriptions/{n}`: the transcript document. Like
  DashScope's pre-signed result URLs it needs no header: with API keys configured it carries a signature
  (`sig`, HMAC-SHA256 of the path under the first API key) instead.
Errors are `{request_id, code, message}` with the HTTP status, as DashScope answers them.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from ..app.auth import bearer, key_ok
from ..app.fetch import parse_target
from ..contract import TranscribeOptions, Transcript
from ..errors import AsrError
from ..vocabularies.registry import vocabulary_words
from ..jobs.store import CANCELLED, EXPIRED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job
from . import protocol as p

KIND = "dashscope"
PREFIXES: tuple[str, ...] = ("/api/v1/services", "/api/v1/tasks")
MODELS = re.compile(r"(paraformer|fun-asr)[a-z0-9.\-]*", re.I)
_TRAILING_PUNCT = re.compile(r"[，。？！、,.?!;；:：]+$")
_CODES = {400: "InvalidParameter", 401: "InvalidApiKey", 404: "NotFound", 409: "Conflict", 413: "InvalidParameter",
          429: "Throttling"}
router = APIRouter(prefix="/api/v1", tags=["dashscope"],
                   responses={s: {"model": p.ErrorReply} for s in (400, 401, 404, 413, 429, 503)})


def render_error(request: Request, err: AsrError) -> Response:
    code = _CODES.get(err.status, "InternalError") if err.status < 500 else "InternalError"
    body = p.ErrorReply(request_id=str(uuid.uuid4()), code=code, message=err.message)
    return JSONResponse(body.model_dump(), status_code=err.status)


def _authorize(request: Request) -> None:
    if not key_ok(request.app.state.settings, bearer(request)):
        raise AsrError("Invalid API-key provided.", 401, "invalid_api_key")


def _jobs(request: Request):
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise AsrError("jobs are disabled on this server", 404, "jobs_disabled")
    return jobs


def _signature(request: Request, path: str) -> str | None:
    keys = request.app.state.settings.auth.api_keys
    if not keys:
        return None
    return hmac.new(keys[0].get_secret_value().encode(), path.encode(), hashlib.sha256).hexdigest()


def _time(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _base_url(request: Request) -> str:
    public = request.app.state.settings.jobs.public_url
    return (public or str(request.base_url)).rstrip("/")


@router.post("/services/audio/asr/transcription", summary="Submit a DashScope async transcription task")
async def submit(request: Request) -> JSONResponse:
    _authorize(request)
    jobs = _jobs(request)
    settings = request.app.state.settings
    if request.headers.get("x-dashscope-async", "").lower() != "enable":
        raise AsrError("current user api does not support synchronous calls (send X-DashScope-Async: enable)", 400,
                       "invalid_value")
    try:
        body = p.TranscriptionSubmit.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise AsrError(f"{where}: {first['msg']}" if where else first["msg"], 400, "invalid_value") from None
    if not MODELS.fullmatch(body.model) and body.model != settings.models.default:
        raise AsrError(f"Model not exist: {body.model!r} (this server answers paraformer-* and fun-asr* names)", 400,
                       "model_not_found")
    if not settings.audio.url_fetch_enabled:
        raise AsrError("audio by URL is disabled on this server", 400, "url_disabled")
    if len(body.input.file_urls) > settings.jobs.max_files:
        raise AsrError(f"{len(body.input.file_urls)} file_urls; at most {settings.jobs.max_files}", 400,
                       "too_many_files")
    for url in body.input.file_urls:
        try:
            parse_target(url)
        except AsrError as err:
            raise AsrError(err.message.replace("audio_address", "file_urls"), 400, err.code) from None
    par = body.parameters
    if par.diarization_enabled and not settings.diarization.enabled:
        raise AsrError("speaker diarization is disabled on this server", 400, "diarization_disabled")
    options = TranscribeOptions(punctuation=True, timestamps=True, diarize=par.diarization_enabled,
                                num_speakers=par.speaker_count if par.diarization_enabled else None,
                                hotwords=request.app.state.service.merged_hotwords(
                                    await vocabulary_words(request.app, par.vocabulary_id, "parameters.vocabulary_id")))
    params = {"options": options.model_dump(mode="json"),
              "dashscope": {"model": body.model, "parameters": par.model_dump(mode="json", exclude_none=True)}}
    files = [{"name": u.rsplit("/", 1)[-1] or u, "url": u} for u in body.input.file_urls]
    job = await jobs.submit(KIND, params, files, [None] * len(files))
    return JSONResponse(p.SubmitReply(request_id=str(uuid.uuid4()),
                                      output=p.SubmitOutput(task_id=job.id, task_status="PENDING")).model_dump())


_STATUS = {QUEUED: "PENDING", RUNNING: "RUNNING", SUCCEEDED: "SUCCEEDED", FAILED: "FAILED", CANCELLED: "CANCELED",
           EXPIRED: "UNKNOWN"}


async def _job(request: Request, task_id: str) -> Job:
    job = await _jobs(request).get(task_id)
    if job is None or job.kind != KIND:
        raise AsrError(f"task {task_id!r} not found", 404, "not_found")
    return job


@router.get("/tasks/{task_id}", summary="A DashScope task's status and results")
async def get_task(request: Request, task_id: str) -> JSONResponse:
    _authorize(request)
    job = await _job(request, task_id)
    status = _STATUS[job.state]
    results, metrics, seconds = None, None, 0.0
    if job.results is not None:
        results = []
        for i, (f, r) in enumerate(zip(job.files, job.results)):
            if r["status"] == SUCCEEDED:
                path = f"/api/v1/tasks/{job.id}/transcriptions/{i}"
                sig = _signature(request, path)
                url = _base_url(request) + path + (f"?sig={sig}" if sig else "")
                results.append(p.SubtaskResult(file_url=f["url"], transcription_url=url, subtask_status="SUCCEEDED"))
                seconds += r["transcript"]["duration_ms"] / 1000
            else:
                e = r.get("error") or {}
                results.append(p.SubtaskResult(file_url=f["url"], subtask_status="FAILED",
                                               code=_CODES.get(e.get("status", 500), "InternalError"),
                                               message=e.get("message")))
        ok = sum(r.subtask_status == "SUCCEEDED" for r in results)
        metrics = {"TOTAL": len(results), "SUCCEEDED": ok, "FAILED": len(results) - ok}
    output = p.TaskOutput(task_id=job.id, task_status=status, submit_time=_time(job.created_at),
                          scheduled_time=_time(job.started_at), end_time=_time(job.finished_at), results=results,
                          task_metrics=metrics)
    if job.state == FAILED and job.error:
        output.code, output.message = "InternalError" if job.error.get("status", 500) >= 500 else "InvalidFile", \
            job.error.get("message")
    if job.state == EXPIRED:
        output.code, output.message = "TaskExpired", "the task's results were purged after the retention period"
    reply = p.TaskReply(request_id=str(uuid.uuid4()), output=output,
                        usage={"duration": round(seconds)} if results is not None else None)
    return JSONResponse(reply.model_dump(mode="json", exclude_none=True))


def document(file_url: str, t: Transcript) -> p.TranscriptionDocument:
    sentences = []
    for i, s in enumerate(t.sentences):
        punct = _TRAILING_PUNCT.search(s.text)
        words = [p.Word(begin_time=w.start_ms, end_time=w.end_ms, text=w.text) for w in s.words]
        if words and punct:
            words[-1].punctuation = punct.group(0)
        sentences.append(p.Sentence(begin_time=s.start_ms, end_time=s.end_ms, text=s.text, sentence_id=i + 1,
                                    speaker_id=s.speaker_index, words=words))
    content = sum(s.end_ms - s.start_ms for s in t.sentences)
    return p.TranscriptionDocument(
        file_url=file_url, properties=p.Properties(original_duration_in_milliseconds=t.duration_ms),
        transcripts=[p.ChannelTranscript(channel_id=0, content_duration_in_milliseconds=content, text=t.text,
                                         sentences=sentences)])


@router.get("/tasks/{task_id}/transcriptions/{n}", summary="A file's transcript (a task's transcription_url)")
async def get_transcription(request: Request, task_id: str, n: int, sig: str | None = None) -> JSONResponse:
    expected = _signature(request, request.url.path)
    if expected is not None and not (sig and hmac.compare_digest(sig, expected)) and not key_ok(
            request.app.state.settings, bearer(request)):
        raise AsrError("this transcription URL needs its signature (sig) or an API key", 401, "invalid_api_key")
    job = await _job(request, task_id)
    if not job.results or n < 0 or n >= len(job.results) or job.results[n]["status"] != SUCCEEDED:
        raise AsrError(f"task {task_id} has no transcript for file {n}", 404, "not_found")
    doc = document(job.files[n]["url"], Transcript.model_validate(job.results[n]["transcript"]))
    return JSONResponse(doc.model_dump(mode="json", exclude_none=True))
