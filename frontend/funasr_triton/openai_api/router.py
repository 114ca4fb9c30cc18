"""OpenAI Audio API routes under /v1, HTTP in and out: the key (a dependency), the bounded form (app/upload.py),
the client's disconnect, the response. Decoding, options, rendering and SSE events are in serving.py.

Every failure is an AsrError rendered by `render_error` as `{"error": {"message", "type", "param", "code"}}`;
bad input is always 4xx (the SDK retries 5xx).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..app.auth import require_key
from ..app.inputs import check_speakers
from ..app.upload import SpooledAudio, read_form
from ..errors import AsrError
from . import serving
from .protocol import (TRANSCRIPTION_200, TRANSCRIPTION_FORM, TRANSLATION_FORM, ErrorResponse, Model, ModelList,
                       TranscriptionRequest, TranslationRequest)

T = TypeVar("T")

PREFIXES: tuple[str, ...] = ("/v1",)
MODELS_CREATED = int(time.time())
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 500, 503, 504)}
# the key, checked before the body is read (also by /v1/jobs and /v1/vocabularies, the same /v1 surface)
authorized = Depends(require_key("invalid or missing API key (send `Authorization: Bearer <key>`)", "invalid_api_key"))

router = APIRouter(prefix="/v1", tags=["openai"], responses=_ERRORS, dependencies=[authorized])


def render_error(request: Request, err: AsrError) -> Response:
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s else None
    return JSONResponse(serving.error_body(err).model_dump(mode="json"), status_code=err.status, headers=headers)


async def form_of(request: Request):
    """The request's form, bounded by the upload limit (plus the form's overhead)."""
    return await read_form(request, request.app.state.settings.limits.max_upload_bytes, "file",
                           max_files=serving.MAX_FORM_FILES, max_fields=serving.MAX_FORM_FIELDS)


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body is already read, so only `http.disconnect` can arrive)."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # cannot watch: never report a disconnect we did not see
        await asyncio.Event().wait()


async def _with_cancellation(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and freeing its admission slot) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise AsrError("the client closed the connection", 499, "client_closed")


@router.post("/audio/transcriptions", summary="Transcribe audio (OpenAI Audio API)", openapi_extra=TRANSCRIPTION_FORM,
             response_model=None, responses=TRANSCRIPTION_200)
async def create_transcription(request: Request) -> Response:
    service, settings = request.app.state.service, request.app.state.settings
    form = await form_of(request)
    audio = None
    try:
        req = serving.parse_form(form, TranscriptionRequest)
        model = service.check_model(req.model)
        await service.require_model(model, req.model)
        check_speakers(req.num_speakers, req.min_speakers, req.max_speakers)
        address = form.get("audio_address")  # funasr-api's extension: the audio by URL instead of `file`
        if form.get("file") is not None or not (isinstance(address, str) and address.strip()):
            audio = await serving.spool_file(form.get("file"), settings.limits.max_upload_bytes)
    finally:
        await form.close()
    if audio is None:
        audio = await service.fetch(address.strip())  # the SSRF-guarded fetch (app/fetch.py)
    try:
        options = await serving.options_of(request.app, req, model, logprobs="logprobs" in req.include
                                           or req.response_format == "verbose_json", words=serving.needs_words(req))
        if req.stream:
            return await _stream(request, service.events(audio, options), req, audio)
        transcript = await _with_cancellation(request, service.transcribe(audio, options))
    except BaseException:
        audio.close()
        raise
    audio.close()
    return serving.render(transcript, req, settings.subtitles)


async def _stream(request: Request, events: AsyncIterator[dict], req: TranscriptionRequest,
                  audio: SpooledAudio) -> StreamingResponse:
    """SSE as the recording is recognised. The first event is awaited before answering, so what fails
    early (undecodable audio, limits, a busy server) is a plain HTTP error in OpenAI's shape; a client
    that disconnects later cancels the stream, which aborts the rest of the recording in Triton."""
    try:
        first = await _with_cancellation(request, events.__anext__())
    except BaseException:
        await events.aclose()
        raise

    async def cleanup() -> None:
        await events.aclose()
        audio.close()

    return StreamingResponse(serving.sse(serving.live_events(first, events, req), cleanup),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache",
                                                                      "X-Accel-Buffering": "no"})


@router.post("/audio/translations", summary="Not supported: Paraformer transcribes, it does not translate",
             description="Always 400 `unsupported_task` once the request is valid (auth, form, model).",
             response_model=None, openapi_extra=TRANSLATION_FORM)
async def create_translation(request: Request) -> Response:
    form = await form_of(request)
    try:
        req = serving.parse_form(form, TranslationRequest)
        request.app.state.service.check_model(req.model)
    finally:
        await form.close()
    raise AsrError("translation is not supported: the served Paraformer model transcribes Chinese/English speech but "
                   "does not translate; use POST /v1/audio/transcriptions", 400, "unsupported_task", "model")


async def _models(request: Request) -> list[Model]:
    return await serving.served_models(request.app.state.settings, request.app.state.service, MODELS_CREATED)


@router.get("/models", response_model=ModelList, summary="List the served models (what is exported and loaded) and aliases")
async def list_models(request: Request) -> ModelList:
    return ModelList(data=await _models(request))


@router.get("/models/{model_id:path}", response_model=Model, summary="One model (404 if not served)")
async def retrieve_model(request: Request, model_id: str) -> Model:
    for model in await _models(request):
        if model.id == model_id:
            return model
    raise AsrError(f"model {model_id!r} is not served here", 404, "model_not_found", "model")
