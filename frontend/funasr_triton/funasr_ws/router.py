"""FunASR runtime WebSocket: `/ws/v1/funasr`, and `/` for FunASR's own clients (subprotocol "binary" accepted
when offered).

The endpoint accepts the socket, checks the token (?token= or Authorization: Bearer, when API keys are
configured) and hands the connection to `session.FunasrSession`, which holds the conversation, answers a bad
token with an error message and closes.
"""
from __future__ import annotations

from fastapi import APIRouter, WebSocket

from ..app.auth import bearer, key_ok
from .session import FunasrSession

router = APIRouter(tags=["funasr-realtime"])

PATH = "/ws/v1/funasr"
ROOT_PATH = "/"  # where FunASR's own clients connect
SUBPROTOCOL = "binary"


def token_of(websocket: WebSocket) -> str | None:
    """?token= (browsers cannot set WebSocket headers) or Authorization: Bearer."""
    return websocket.query_params.get("token") or bearer(websocket)  # type: ignore[arg-type]


async def serve(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    await FunasrSession(websocket, authorized=key_ok(websocket.app.state.settings, token_of(websocket))).run()


@router.websocket(PATH)
async def funasr_realtime(websocket: WebSocket) -> None:
    """FunASR runtime protocol (token: ?token= or Authorization: Bearer, when API keys are configured)."""
    await serve(websocket)


@router.websocket(ROOT_PATH)
async def funasr_realtime_root(websocket: WebSocket) -> None:
    """The same at `/`: FunASR's own clients (funasr_wss_client.py, funasr-wss-client, the HTML5 page) connect to
    ws://host:port with no path. WebSocket only: HTTP requests to `/` are not affected."""
    await serve(websocket)
