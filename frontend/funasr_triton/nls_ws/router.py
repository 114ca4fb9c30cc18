"""Alibaba Cloud NLS real-time WebSocket: `/ws/v1` (Alibaba's path) and `/ws/v1/asr` (funasr-api's).

The endpoint accepts the socket, checks the token (X-NLS-Token header or ?token=) and hands the connection
to `session.NlsSession`, which holds the conversation, answers a bad token with TaskFailed and closes.
"""
from __future__ import annotations

from fastapi import APIRouter, WebSocket

from ..app.auth import key_ok, nls_token
from .session import NlsSession

router = APIRouter(tags=["aliyun-nls-realtime"])


def accept_sdk_handshake() -> None:
    """Let Alibaba's official SDK connect: it sends `Sec-WebSocket-Key` and `Sec-WebSocket-Version` twice.

    nls (Python SDK 1.0.x) passes a fixed `Sec-WebSocket-Key`/`-Version` header list to its bundled
    websocket-client, which adds its own random key and version first. Alibaba's gateway answers the first
    key (the one websocket-client checks `Sec-WebSocket-Accept` against); websockets, uvicorn's default
    WebSocket implementation, refuses a repeated key with HTTP 400. This keeps the first value of each,
    as the gateway does, in websockets' sans-I/O server (uvicorn `ws="auto"` / `"websockets-sansio"`); only
    requests that repeat these headers are affected. Applied once, when this module is imported."""
    try:
        from websockets.server import ServerProtocol
    except ImportError:  # another WebSocket implementation: nothing to adapt
        return
    original = ServerProtocol.accept
    if getattr(original, "keeps_first_key", False):
        return

    def accept(self, request):
        for name in ("Sec-WebSocket-Key", "Sec-WebSocket-Version"):
            values = request.headers.get_all(name)
            if len(values) > 1:
                del request.headers[name]
                request.headers[name] = values[0]
        return original(self, request)

    accept.keeps_first_key = True
    ServerProtocol.accept = accept


accept_sdk_handshake()


async def serve(websocket: WebSocket) -> None:
    await websocket.accept()
    await NlsSession(websocket, authorized=key_ok(websocket.app.state.settings, nls_token(websocket))).run()


@router.websocket("/ws/v1")
async def nls_realtime(websocket: WebSocket) -> None:
    """Alibaba NLS SpeechTranscriber / SpeechRecognizer (token: X-NLS-Token header or ?token=)."""
    await serve(websocket)


@router.websocket("/ws/v1/asr")
async def nls_realtime_asr(websocket: WebSocket) -> None:
    """The same service at funasr-api's path."""
    await serve(websocket)
