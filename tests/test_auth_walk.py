"""Every route of the app's route table × (no key, wrong key, right key) against the real frontend with API keys
set. The routes come from `create_app().routes`, so a new route that skips authentication fails here until it is
either protected or added to OPEN (probes, docs and the static demo page) on purpose."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.conftest import start_frontend

KEY = "walk-key"
OPEN = {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/", "/demo",
        "/demo/static/{name}"}
PROTECTED_ON_OPEN_PATHS = {("POST", "/")}  # Alibaba FileTrans RPC on `/` (GET / without `Action` is the demo page)
PATH_PARAMS = {"model_id": "whisper-1", "name": "app.js", "job_id": "0" * 32, "task_id": "0" * 32, "n": "0",
               "vocabulary_id": "vocab-" + "0" * 32}
NLS_START = json.dumps({"header": {"namespace": "SpeechTranscriber", "name": "StartTranscription", "task_id": "a" * 32,
                                   "message_id": "b" * 32, "appkey": "any"},
                        "payload": {"format": "pcm", "sample_rate": 16000}})
FUNASR_START = json.dumps({"mode": "offline", "wav_name": "walk", "is_speaking": True})
WS_PROTOCOL = {"/ws/v1": "nls", "/ws/v1/asr": "nls", "/ws/v1/funasr": "funasr", "/": "funasr"}


def _routes():
    from fastapi.routing import APIWebSocketRoute
    from starlette.routing import Route, WebSocketRoute

    from funasr_triton.app.config import Settings
    from funasr_triton.app.main import create_app

    def walk(routes):
        for r in routes:
            if hasattr(r, "original_router"):  # FastAPI's included router
                yield from walk(r.original_router.routes)
            elif hasattr(r, "routes") and not isinstance(r, (Route, WebSocketRoute)):
                yield from walk(r.routes)
            else:
                yield r

    http_routes, ws_routes = [], []
    for r in walk(create_app(Settings()).routes):
        if isinstance(r, (APIWebSocketRoute, WebSocketRoute)):
            ws_routes.append(r.path)
        elif isinstance(r, Route):
            http_routes.extend((m, r.path) for m in sorted(r.methods or ()) if m != "HEAD")
        else:
            raise AssertionError(f"a route of unknown kind {type(r).__name__}: teach this test about it")
    return http_routes, ws_routes


HTTP_ROUTES, WS_ROUTES = _routes()


def _url(path: str) -> str:
    for name, value in PATH_PARAMS.items():
        path = path.replace("{" + name + "}", value).replace("{" + name + ":path}", value)
    assert "{" not in path, f"no value for a path parameter of {path}: add it to PATH_PARAMS"
    return path


@pytest.fixture(scope="module")
def keyed(triton, tmp_path_factory):
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("auth-walk"), FUNASR_TRITON_AUTH__API_KEYS=f'["{KEY}"]')
    yield fe
    fe.stop()


def _headers(key: str | None) -> dict:
    return {} if key is None else {"Authorization": f"Bearer {key}", "X-NLS-Token": key}


def test_the_walk_covers_every_surface():
    assert {p for _, p in HTTP_ROUTES} >= {"/v1/audio/transcriptions", "/stream/v1/asr", "/api", "/health", "/"}
    assert set(WS_ROUTES) == set(WS_PROTOCOL), "a WebSocket route without a protocol here: add it to WS_PROTOCOL"


@pytest.mark.parametrize("method, path", HTTP_ROUTES, ids=[f"{m} {p}" for m, p in HTTP_ROUTES])
def test_http_route(keyed, method, path):
    with httpx.Client(base_url=keyed.base_url, timeout=60) as c:
        answers = {who: c.request(method, _url(path), headers=_headers(key))
                   for who, key in (("none", None), ("wrong", "not-the-key"), ("right", KEY))}
    for who, r in answers.items():
        assert r.status_code < 500, (who, r.status_code, r.text[:300])
    if path in OPEN and (method, path) not in PROTECTED_ON_OPEN_PATHS:
        assert all(r.status_code == 200 for r in answers.values()), {w: r.status_code for w, r in answers.items()}
        return
    for who in ("none", "wrong"):
        assert answers[who].status_code == 401, (who, answers[who].text[:300])
    assert answers["right"].status_code != 401, answers["right"].text[:300]


async def _ws_answer(url: str, protocol: str, key: str | None) -> tuple[dict, int | None]:
    """The first message the server sends after the protocol's start (and end, for FunASR), and the close code
    if it closed after it (None: still open)."""
    query = f"?token={key}" if key is not None else ""
    async with websockets.connect(url + query, ping_interval=None) as ws:
        if protocol == "nls":
            await ws.send(NLS_START)
        else:
            await ws.send(FUNASR_START)
            await ws.send(json.dumps({"is_speaking": False}))
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        try:
            await asyncio.wait_for(ws.recv(), 2)
        except websockets.ConnectionClosed as closed:
            return message, closed.rcvd.code if closed.rcvd else None
        except asyncio.TimeoutError:
            pass
        return message, None


def _refused(protocol: str, message: dict) -> bool:
    if protocol == "nls":
        return message["header"]["name"] == "TaskFailed" and message["header"]["status"] == 40000001
    return message.get("error", {}).get("code") == "unauthorized"


@pytest.mark.parametrize("path", WS_ROUTES)
def test_websocket_route(keyed, path):
    protocol = WS_PROTOCOL[path]
    url = keyed.base_url.replace("http://", "ws://") + path
    for key in (None, "not-the-key"):
        message, code = asyncio.run(_ws_answer(url, protocol, key))
        assert _refused(protocol, message), message
        assert code is not None, "the connection is closed after the refusal"
    message, _ = asyncio.run(_ws_answer(url, protocol, KEY))
    assert not _refused(protocol, message), message
    if protocol == "nls":
        assert message["header"]["name"] == "TranscriptionStarted", message
    else:
        assert "error" not in message and message["is_final"] is True, message
