"""Bounded WebSocket I/O shared by the real-time routers: one slow or silent client only costs its own session."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from fastapi import WebSocket, WebSocketDisconnect

from ..errors import AsrError


async def receive(ws: WebSocket, timeout_s: float, idle_message: str) -> dict:
    """The next text or binary message; WebSocketDisconnect when the client left, AsrError 408 on silence."""
    try:
        message = await asyncio.wait_for(ws.receive(), timeout_s)
    except asyncio.TimeoutError:
        raise AsrError(idle_message, 408, "idle_timeout") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return message


async def send_text(ws: WebSocket, text: str, timeout_s: float) -> None:
    """Send within timeout_s; a client that stops reading counts as gone (WebSocketDisconnect 1006)."""
    try:
        await asyncio.wait_for(ws.send_text(text), timeout_s)
    except (asyncio.TimeoutError, OSError, RuntimeError) as exc:
        raise WebSocketDisconnect(1006) from exc


async def close(ws: WebSocket, code: int, timeout_s: float) -> None:
    """Close within timeout_s, ignoring a connection that is already gone."""
    try:
        await asyncio.wait_for(ws.close(code), timeout_s)
    except (asyncio.TimeoutError, OSError, RuntimeError, WebSocketDisconnect):
        pass


async def run_session(serve: Callable[[], Awaitable[None]], fail: Callable[[AsrError], Awaitable[None]],
                      close: Callable[[], Awaitable[None]], log: logging.Logger, protocol: str) -> None:
    """One session: a client that left ends it quietly, an AsrError is answered by `fail` in the protocol's
    own shape, anything else is logged and failed as a 500; a session that ends normally is closed."""
    try:
        await serve()
    except WebSocketDisconnect:
        return
    except AsrError as err:
        await fail(err)
        return
    except Exception:
        log.exception("%s websocket session failed", protocol)
        await fail(AsrError("internal server error", 500, "internal_error"))
        return
    await close()
