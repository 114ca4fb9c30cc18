"""create_app(): one FastAPI app, one router per API surface, errors rendered in each surface's shape."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import AsrError
from ..triton_client import AsyncTritonAsrClient, required_models
from .config import Settings
from .metrics import Metrics
from .service import TranscriptionService
from .streaming import StreamingService

log = logging.getLogger(__name__)
Renderer = Callable[[Request, AsrError], Response]


def _status_error(exc: StarletteHTTPException) -> AsrError:
    codes = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    return AsrError(str(exc.detail), exc.status_code, codes.get(exc.status_code, "http_error"))


def _validation_error(exc: RequestValidationError) -> AsrError:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(x) for x in first.get("loc", []) if x not in ("body", "query", "header", "form")]
    param = loc[-1] if loc else None
    msg = first.get("msg", "invalid request")
    return AsrError(f"{param}: {msg}" if param else msg, 400, "invalid_request", param)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        client = AsyncTritonAsrClient(settings.triton.url, settings.triton.timeout_s, settings.triton.ready_timeout_s)
        app.state.service = TranscriptionService(settings, client, metrics)
        app.state.streaming = StreamingService(settings, client, metrics, hotwords=app.state.service.merged_hotwords)
        jobs = None
        if settings.jobs.enabled:
            from ..jobs.runner import JobRunner

            jobs = JobRunner(settings, app.state.service, metrics.registry)
            for setup in app.state.job_setups:  # each job-backed API registers its hooks (callbacks)
                setup(jobs)
            await jobs.start()
        app.state.jobs = jobs
        yield
        if jobs is not None:
            await jobs.stop()
        await client.close()

    app = FastAPI(title="funasr-triton", version="0.1.0", lifespan=lifespan,
                  description="FunASR speech recognition on Triton: OpenAI audio API, Alibaba NLS REST, seed /api")
    app.state.settings = settings
    app.state.metrics = metrics
    renderers: list[tuple[str, Renderer]] = []
    app.state.renderers = renderers
    app.state.job_setups = []

    from ..aliyun_api.router import PREFIXES as ALIYUN_PREFIXES
    from ..aliyun_api.router import render_error as aliyun_error
    from ..aliyun_api.router import router as aliyun_router
    from ..funasr_ws.router import router as funasr_ws_router
    from ..nls_ws.router import router as nls_ws_router
    from ..openai_api.router import PREFIXES as OPENAI_PREFIXES
    from ..openai_api.router import render_error as openai_error
    from ..openai_api.router import router as openai_router
    from ..seed_api.router import PREFIXES as SEED_PREFIXES
    from ..seed_api.router import render_error as seed_error
    from ..seed_api.router import router as seed_router
    from ..dashscope_api.router import PREFIXES as DASHSCOPE_PREFIXES
    from ..dashscope_api.router import render_error as dashscope_error
    from ..dashscope_api.router import router as dashscope_router
    from ..filetrans_api.router import router as filetrans_router
    from ..seed_api.transcribe import PREFIXES as SEED_BATCH_PREFIXES
    from ..seed_api.transcribe import render_error as seed_batch_error
    from ..seed_api.transcribe import router as seed_batch_router
    from ..filetrans_api.serving import setup as filetrans_setup
    from ..openai_api.jobs import router as jobs_router
    from ..vocabularies.registry import setup as vocabularies_setup
    from ..openai_api.vocabularies import router as vocabularies_router
    from .demo import router as demo_router

    for prefixes, render, router in ((OPENAI_PREFIXES, openai_error, openai_router),
                                     (ALIYUN_PREFIXES, aliyun_error, aliyun_router),
                                     (SEED_PREFIXES, seed_error, seed_router)):
        app.include_router(router)
        renderers.extend((p, render) for p in prefixes)
    app.include_router(jobs_router)  # under /v1: OpenAI's error shape
    app.include_router(vocabularies_router)  # under /v1 too; its table lives in the job store
    app.state.job_setups.append(vocabularies_setup)
    app.include_router(filetrans_router)  # `/` with `Action` (before the demo page, which it serves without one)
    app.state.job_setups.append(filetrans_setup)
    app.include_router(dashscope_router)
    renderers[0:0] = [(p, dashscope_error) for p in DASHSCOPE_PREFIXES]  # before the seed API's `/api`
    app.include_router(seed_batch_router)  # seed 003's POST /transcribe (several files)
    renderers.extend((p, seed_batch_error) for p in SEED_BATCH_PREFIXES)
    app.include_router(nls_ws_router)  # WebSocket routes: failures are protocol messages, not HTTP errors
    app.include_router(funasr_ws_router)
    app.include_router(demo_router)

    def render(request: Request, err: AsrError) -> Response:
        path = request.url.path
        for prefix, fn in renderers:
            if path == prefix or path.startswith(prefix + "/"):
                return fn(request, err)
        return openai_error(request, err)

    @app.exception_handler(AsrError)
    async def on_asr_error(request: Request, exc: AsrError):
        return render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        return render(request, _validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        return render(request, _status_error(exc))

    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(request: Request, exc: ClientDisconnect):
        # the client hung up while its body was read: nobody reads this answer; counted as 499, not logged
        return render(request, AsrError("the client closed the connection during the upload", 499, "client_closed"))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception):
        log.exception("unhandled error")
        return render(request, AsrError("internal server error", 500, "internal_error"))

    @app.middleware("http")
    async def count(request: Request, call_next):
        t0 = time.perf_counter()
        status = 500  # an exception escaping the handlers becomes a 500 (rendered by on_unexpected)
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            path = getattr(request.scope.get("route"), "path", "unmatched")
            metrics.requests.labels(path, str(status)).inc()
            metrics.latency.labels(path).observe(time.perf_counter() - t0)

    @app.get("/health", tags=["operations"])
    async def health():
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], responses={503: {"description": "Triton or a needed model is not ready; "
                                                             "`missing` names the models"}})
    async def ready(request: Request):
        models = required_models(settings.streaming.enabled, settings.diarization.enabled)
        missing = await request.app.state.service.client.unready(models)
        body = {"status": "unavailable" if missing else "ready", "triton": settings.triton.url, "models": list(models)}
        if missing:
            body["missing"] = missing
        return JSONResponse(body, status_code=503 if missing else 200)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse,
             responses={200: {"description": "Prometheus text exposition",
                              "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}})
    async def prometheus_metrics():
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
