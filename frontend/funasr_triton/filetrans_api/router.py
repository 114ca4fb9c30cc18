"""Alibaba FileTrans over durable jobs: `POST /?Action=SubmitTask` and `GET /?Action=GetTaskResult`.

The official `aliyun-python-sdk-core` sends every RPC action to `/` of the domain it is given, with
`Action`, `Version`, `AccessKeyId`, `Signature`… in the query string and SubmitTask's `Task` as a form
field. `/` is also the demo page (GET without `Action`) and FunASR's WebSocket (another scope type),
so this route dispatches on `Action`. With API keys configured the SDK's `AccessKeyId` must be one of
them (the signature is not checked: the server does not hold the SDK's AccessKeySecret).

The task's `file_link` is fetched by the job through the SSRF guard; its callback (`enable_callback`,
`callback_url`) POSTs the GetTaskResult body plus `RequestTime` through the same guard. HTTP in and out here;
the task's meaning and the replies are in serving.py.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import FormData

from ..app.auth import bearer, key_ok
from ..app.demo import demo_page
from ..app.upload import read_form
from ..errors import AsrError
from ..jobs.runner import runner_of
from . import protocol as p
from .serving import KIND, FileTransError, job_of, new_request_id, task_result

router = APIRouter(tags=["aliyun-filetrans"])


def _reply(model, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True), status_code=status_code)


def _error(err: FileTransError) -> JSONResponse:
    code, text = err.status
    return _reply(p.ErrorReply(RequestId=new_request_id(), Code=text, Message=err.message, StatusCode=code,
                               StatusText=text, TaskId=err.task_id), err.http_status)


async def _form(request: Request) -> FormData:
    """SubmitTask's form (no audio: bounded by the form overhead alone), its failures in FileTrans' shape."""
    try:
        return await read_form(request, 0, None, max_files=1000, max_fields=1000)
    except AsrError as err:
        raise FileTransError(err.status, p.PARAMETER_INVALID, err.message) from None


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


def _runner(request: Request):
    try:
        return runner_of(request.app)
    except AsrError as err:
        raise FileTransError(err.status, p.PARAMETER_INVALID, err.message) from None


async def _submit(request: Request, params: dict[str, str]) -> JSONResponse:
    jobs = _runner(request)
    job_params, files = await job_of(request.app, request.app.state.service, params.get("Task"))
    try:
        job = await jobs.submit(KIND, job_params, files, [None])
    except AsrError as err:
        if err.status == 429:
            raise FileTransError(429, p.TOO_MANY_TASKS, err.message) from None
        raise FileTransError(err.status, p.PARAMETER_INVALID, err.message) from None
    return _reply(p.SubmitReply(TaskId=job.id, RequestId=new_request_id(), StatusCode=p.SUCCESS[0],
                                StatusText=p.SUCCESS[1]))


async def _get(request: Request, params: dict[str, str]) -> JSONResponse:
    jobs = _runner(request)
    task_id = params.get("TaskId", "")
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
        form = await _form(request) if request.method == "POST" else None
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
