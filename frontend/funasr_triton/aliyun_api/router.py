"""Alibaba Cloud NLS REST (一句话识别): `POST /stream/v1/asr`, raw audio body or `audio_address`. HTTP in and
out here; the query's meaning and the response are in serving.py.

Real NLS clients must work unmodified: Alibaba's four body fields and the `task_id` header keep their
meaning, failures use Alibaba's envelope and status codes, and our extensions are only added fields.
"""
from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from ..app.auth import nls_token, require_key
from ..app.upload import read_body
from ..errors import AsrError
from . import serving
from .protocol import NlsAsrQuery, NlsAsrResponse, NlsErrorResponse

PREFIXES: tuple[str, ...] = ("/stream/v1",)

router = APIRouter(tags=["aliyun-nls"])
# X-NLS-Token header or `token` query parameter; checked before any parameter or body is read
require_token = require_key("Gateway:ACCESS_DENIED:The token is missing or invalid!", "unauthorized", "token",
                            (nls_token,))


def task_id_of(request: Request) -> str:
    """The request's 32-hex NLS task id, made once and shared by the response and any error."""
    task_id = getattr(request.state, "nls_task_id", None)
    if task_id is None:
        task_id = request.state.nls_task_id = uuid.uuid4().hex
    return task_id


def render_error(request: Request, err: AsrError) -> Response:
    http_status, status = serving.nls_status(err)
    task_id = task_id_of(request)
    headers = {"task_id": task_id}
    if err.retry_after_s is not None:
        headers["Retry-After"] = str(err.retry_after_s)
    body = NlsErrorResponse(task_id=task_id, status=status, message=err.message)
    return JSONResponse(body.model_dump(mode="json"), status_code=http_status, headers=headers)


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
    options, fmt = await serving.options_of(request.app, service, query)
    if query.audio_address:
        audio = await service.fetch(query.audio_address)
    else:
        audio = await read_body(request, request.app.state.settings.limits.max_upload_bytes, "audio")
    with audio:
        if not audio.size:
            raise AsrError("no audio: send the audio bytes as the request body or set audio_address", 400,
                           "empty_audio", "audio")
        options.pcm_sample_rate = serving.pcm_rate(fmt, query.sample_rate, audio.head())
        transcript = await service.transcribe(audio, options)
    body = serving.to_response(task_id, transcript, serving.words_asked(query), int((time.perf_counter() - t0) * 1000))
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers={"task_id": task_id})
