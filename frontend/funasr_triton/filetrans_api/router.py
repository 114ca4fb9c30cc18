"""Alibaba FileTrans over durable jobs: `POST /?Action=SubmitTask` and `GET /?Action=GetTaskResult`.

The official `aliyun-python-sdk-core` sends every RPC action to `/` of the domain it is given, with
`Action`, `Version`, `AccessKeyId`, `Signature`… in the query string and SubmitTask's `Task` as a form
field. `/` is also the demo page (GET without `Action`) and FunASR's WebSocket (another scope type),
so this route dispatches on `Action`. With API keys configured the SDK's `AccessKeyId` must be one of
them (the signature is not checked: the server does not hold the SDK's AccessKeySecret).

The task's `file_link` is fetched by the job through the SSRF guard; its callback (`enable_callback`,
`callback_url`) POSTs the GetTaskResult body plus `RequestTime` through the same guard.
"""
from __future__ import annotations

import json
import logging
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from ..app.auth import bearer, key_ok
from ..app.demo import demo_page
from ..app.fetch import parse_target
from ..contract import TranscribeOptions, Transcript
from ..errors import AsrError
from ..vocabularies.registry import vocabulary_words
from ..jobs.callbacks import check_callback, post_json
from ..jobs.store import CANCELLED as JOB_CANCELLED
from ..jobs.store import EXPIRED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job
from . import protocol as p

log = logging.getLogger(__name__)
KIND = "filetrans"
router = APIRouter(tags=["aliyun-filetrans"])
_DOWNLOAD_CODES = {"fetch_failed", "invalid_url", "forbidden_url", "fetch_timeout", "url_disabled"}
_PARSE_CODES = {"bad_audio", "empty_audio", "decode_timeout", "audio_too_long"}


class FileTransError(Exception):
    def __init__(self, http_status: int, status: tuple[int, str], message: str, task_id: str | None = None):
        super().__init__(message)
        self.http_status, self.status, self.message, self.task_id = http_status, status, message, task_id


def _request_id() -> str:
    return str(uuid.uuid4()).upper()


def _reply(model, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True), status_code=status_code)


def _error(err: FileTransError) -> JSONResponse:
    code, text = err.status
    return _reply(p.ErrorReply(RequestId=_request_id(), Code=text, Message=err.message, StatusCode=code,
                               StatusText=text, TaskId=err.task_id), err.http_status)


def _status_of_error(error: dict | None) -> tuple[int, str]:
    code = (error or {}).get("code", "")
    if code in _DOWNLOAD_CODES:
        return p.FILE_DOWNLOAD_FAILED
    if code == "too_large":
        return p.FILE_TOO_LARGE
    if code in _PARSE_CODES:
        return p.FILE_PARSE_FAILED
    return p.INTERNAL_ERROR


def _result(t: Transcript, words: bool, split: bool) -> p.FileTransResult:
    sentences, all_words, previous_end = [], [], 0
    for s in t.sentences:
        channel = (s.speaker_index or 0) if split else 0
        minutes = max(s.end_ms - s.start_ms, 1) / 60000
        sentences.append(p.FileTransSentence(
            BeginTime=s.start_ms, EndTime=s.end_ms, Text=s.text, ChannelId=channel,
            SpeechRate=round(len(s.text.replace(" ", "")) / minutes),
            SilenceDuration=max(0, s.start_ms - previous_end) // 1000, SpeakerId=s.speaker))
        previous_end = s.end_ms
        if words:
            all_words.extend(p.FileTransWord(Word=w.text, BeginTime=w.start_ms, EndTime=w.end_ms, ChannelId=channel)
                             for w in s.words)
    return p.FileTransResult(Sentences=sentences, Words=all_words if words else None)


def task_result(job: Job, request_id: str | None = None) -> p.TaskResult:
    base = {"TaskId": job.id, "RequestId": request_id or _request_id()}
    if job.state == QUEUED:
        return p.TaskResult(**base, StatusCode=p.QUEUEING[0], StatusText=p.QUEUEING[1])
    if job.state == RUNNING:
        return p.TaskResult(**base, StatusCode=p.RUNNING[0], StatusText=p.RUNNING[1])
    if job.state == EXPIRED:
        return p.TaskResult(**base, StatusCode=p.TASK_EXPIRED[0], StatusText=p.TASK_EXPIRED[1])
    if job.state == JOB_CANCELLED:
        return p.TaskResult(**base, StatusCode=p.CANCELLED[0], StatusText=p.CANCELLED[1])
    solve = int((job.finished_at or time.time()) * 1000)
    r = (job.results or [{}])[0]
    if job.state == FAILED or r.get("status") != SUCCEEDED:
        error = r.get("error") or job.error
        code, text = _status_of_error(error)
        return p.TaskResult(**base, StatusCode=code, StatusText=text, SolveTime=solve,
                            Message=(error or {}).get("message"))
    t = Transcript.model_validate(r["transcript"])
    ft = job.params.get("filetrans", {})
    result = _result(t, ft.get("enable_words", False), ft.get("auto_split", False))
    status = p.SUCCESS if result.Sentences else p.SUCCESS_WITH_NO_VALID_FRAGMENT
    return p.TaskResult(**base, StatusCode=status[0], StatusText=status[1], BizDuration=t.duration_ms,
                        SolveTime=solve, RecDuration=t.duration_ms, Result=result)


def _params(request: Request, form) -> dict[str, str]:
    params = dict(request.query_params)
    for k, v in (form or {}).items():
        if isinstance(v, str):
            params.setdefault(k, v)
    return params


def _authorize(request: Request, params: dict[str, str]) -> None:
    """The SDK's AccessKeyId, or (plain HTTP clients) `Authorization: Bearer`, must be an API key."""
    settings = request.app.state.settings
    if not (key_ok(settings, params.get("AccessKeyId")) or key_ok(settings, bearer(request))):
        raise FileTransError(401, p.UNAUTHORIZED, "AccessKeyId is not an API key of this server")


async def _submit(request: Request, params: dict[str, str]) -> JSONResponse:
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise FileTransError(404, p.PARAMETER_INVALID, "jobs are disabled on this server")
    settings = request.app.state.settings
    raw = params.get("Task")
    if not raw:
        raise FileTransError(400, p.PARAMETER_INVALID, "the form field Task (JSON) is required")
    try:
        task = p.FileTransTask.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise FileTransError(400, p.PARAMETER_INVALID, f"Task is not a valid task JSON: {str(exc)[:200]}") from None
    if not task.appkey:
        raise FileTransError(400, p.EMPTY_APPKEY, "Task.appkey is required")
    if not task.file_link:
        raise FileTransError(400, p.INVALID_FILE_URL, "Task.file_link is required")
    if not settings.audio.url_fetch_enabled:
        raise FileTransError(400, p.INVALID_FILE_URL, "audio by URL is disabled on this server")
    try:
        parse_target(task.file_link)
    except AsrError as err:
        raise FileTransError(400, p.INVALID_FILE_URL, err.message.replace("audio_address", "file_link")) from None
    if task.enable_callback:
        if not task.callback_url:
            raise FileTransError(400, p.INVALID_CALLBACK, "enable_callback needs callback_url")
        try:
            await check_callback(task.callback_url, settings.audio)
        except AsrError as err:
            raise FileTransError(400, p.INVALID_CALLBACK, err.message.replace("audio_address", "callback_url")) from None
    diarize = task.auto_split or task.enable_speaker_diarization
    if diarize and not settings.diarization.enabled:
        raise FileTransError(400, p.PARAMETER_INVALID, "speaker diarization is disabled on this server")
    try:
        hotwords = request.app.state.service.merged_hotwords(await vocabulary_words(request.app, task.vocabulary_id,
                                                                                    "vocabulary_id"))
    except AsrError as err:
        raise FileTransError(400, p.PARAMETER_INVALID, err.message) from None
    options = TranscribeOptions(punctuation=task.enable_punctuation_prediction, timestamps=True, diarize=diarize,
                                num_speakers=task.speaker_num or (2 if task.auto_split else None),
                                itn=task.enable_inverse_text_normalization, hotwords=hotwords)
    params_ = {"options": options.model_dump(mode="json"), "filetrans": task.model_dump(mode="json")}
    try:
        job = await jobs.submit(KIND, params_, [{"name": task.file_link.rsplit("/", 1)[-1], "url": task.file_link}],
                                [None])
    except AsrError as err:
        if err.status == 429:
            raise FileTransError(429, p.TOO_MANY_TASKS, err.message) from None
        raise FileTransError(err.status, p.PARAMETER_INVALID, err.message) from None
    return _reply(p.SubmitReply(TaskId=job.id, RequestId=_request_id(), StatusCode=p.SUCCESS[0],
                                StatusText=p.SUCCESS[1]))


async def _get(request: Request, params: dict[str, str]) -> JSONResponse:
    jobs = getattr(request.app.state, "jobs", None)
    task_id = params.get("TaskId", "")
    if jobs is None:
        raise FileTransError(404, p.PARAMETER_INVALID, "jobs are disabled on this server")
    if not task_id:
        raise FileTransError(400, p.PARAMETER_INVALID, "TaskId is required")
    job = await jobs.get(task_id)
    if job is None or job.kind != KIND:
        raise FileTransError(404, p.PARAMETER_INVALID, f"no task {task_id!r}", task_id)
    return _reply(task_result(job))


ACTIONS = {("POST", "SubmitTask"): _submit, ("GET", "GetTaskResult"): _get, ("POST", "GetTaskResult"): _get}


@router.api_route("/", methods=["GET", "POST"], include_in_schema=False)
async def root(request: Request) -> Response:
    """GET without `Action`: the demo page. Otherwise an Alibaba RPC call (FileTrans)."""
    action = request.query_params.get("Action")
    if request.method == "GET" and action is None:
        return await demo_page()
    try:
        form = await request.form() if request.method == "POST" else None
        try:
            params = _params(request, form)
        finally:
            if form is not None:
                await form.close()
        _authorize(request, params)
        action = params.get("Action")
        handler = ACTIONS.get((request.method, action or ""))
        if handler is None:
            raise FileTransError(400, p.PARAMETER_INVALID, f"unsupported action {action!r} for {request.method}; "
                                 "this server answers nls-filetrans SubmitTask (POST) and GetTaskResult")
        if params.get("Version", p.VERSION) != p.VERSION:
            raise FileTransError(400, p.PARAMETER_INVALID, f"Version {params['Version']!r}; this server speaks {p.VERSION}")
        return await handler(request, params)
    except FileTransError as err:
        return _error(err)


def setup(jobs) -> None:
    """Register the callback hook on the job runner."""

    async def callback(job: Job) -> None:
        ft = job.params.get("filetrans", {})
        if not (ft.get("enable_callback") and ft.get("callback_url")):
            return
        body = task_result(job)
        body.RequestTime = int(job.created_at * 1000)
        await post_json(ft["callback_url"], body.model_dump(mode="json", exclude_none=True),
                        jobs.settings.audio, jobs.cfg.callback_timeout_s)

    jobs.hooks[KIND] = callback
