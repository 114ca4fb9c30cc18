"""What both real-time WebSocket surfaces (nls_ws, funasr_ws) do the same way, below them.

Bounded I/O (one slow or silent client only costs its own session), text frames as JSON, validation errors
as AsrError, and `Session`: the skeleton of one connection. A surface's session subclasses it with its
conversation (`serve`) and its failure rendering (`fail`); its router only accepts the socket, checks the
token and hands over:

    await websocket.accept()
    await SurfaceSession(websocket, authorized=key_ok(settings, token)).run()
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator, Callable, TypeVar

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ValidationError

from ..errors import AsrError
from .inputs import loads
from .streaming import Stream, StreamOptions

T = TypeVar("T")


def invalid_message(message: str) -> AsrError:
    """A message the protocol does not allow here (both surfaces: code invalid_message)."""
    return AsrError(message, 400, "invalid_message")


def validation_error(exc: ValidationError, where: str) -> AsrError:
    """A wire model's first validation error, named by its field path (`where` when it has none)."""
    first = exc.errors()[0]
    param = ".".join(str(x) for x in first["loc"]) or where
    return AsrError(f"{param}: {first['msg']}", 400, "invalid_parameter", param)


def text_json(message: dict):
    """A text message's JSON value (which may be null); binary (audio) messages are the caller's to tell apart
    first (`message.get("text") is None`)."""
    try:
        return loads(message["text"])
    except ValueError:
        raise invalid_message("a text message is not JSON") from None


class Session:
    """One real-time WebSocket connection. Subclasses set `protocol` (the metrics and log label), `log` and
    `idle_text`, and implement `serve` (the conversation) and `fail` (an AsrError in the protocol's shape,
    then close: see `answer_failure`)."""

    protocol = ""
    log = logging.getLogger(__name__)
    idle_text = "no {waiting_for} within {timeout_s:g} s"  # the AsrError 408 message of a silent client

    def __init__(self, websocket: WebSocket, authorized: bool):
        self.ws = websocket
        self.app = websocket.app
        self.settings = websocket.app.state.settings
        self.limits = self.settings.streaming
        self.authorized = authorized

    async def serve(self) -> None:
        raise NotImplementedError

    async def fail(self, err: AsrError) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        """A client that left ends the session quietly, an AsrError is answered by `fail`, anything else is
        logged and failed as a 500; a session that ends normally is closed."""
        try:
            await self.serve()
        except WebSocketDisconnect:
            return
        except AsrError as err:
            await self.fail(err)
            return
        except Exception:
            self.log.exception("%s websocket session failed", self.protocol)
            await self.fail(AsrError("internal server error", 500, "internal_error"))
            return
        await self.close()

    # ---- transport ----------------------------------------------------------------------------------------

    async def receive(self, timeout_s: float, waiting_for: str) -> dict:
        """The next text or binary message; WebSocketDisconnect when the client left, AsrError 408 on silence."""
        try:
            message = await asyncio.wait_for(self.ws.receive(), timeout_s)
        except asyncio.TimeoutError:
            raise AsrError(self.idle_text.format(waiting_for=waiting_for, timeout_s=timeout_s), 408,
                           "idle_timeout") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return message

    async def send(self, message: BaseModel) -> None:
        """Send within streaming.idle_timeout_s; a client that stops reading counts as gone (WebSocketDisconnect
        1006)."""
        try:
            await asyncio.wait_for(self.ws.send_text(message.model_dump_json(exclude_none=True)),
                                   self.limits.idle_timeout_s)
        except (asyncio.TimeoutError, OSError, RuntimeError) as exc:
            raise WebSocketDisconnect(1006) from exc

    async def close(self, code: int = 1000) -> None:
        """Close within streaming.idle_timeout_s, ignoring a connection that is already gone."""
        try:
            await asyncio.wait_for(self.ws.close(code), self.limits.idle_timeout_s)
        except (asyncio.TimeoutError, OSError, RuntimeError, WebSocketDisconnect):
            pass

    async def answer_failure(self, message: BaseModel, code: int = 1000) -> None:
        """The failure message, then the close (nothing when the client is already gone)."""
        try:
            await self.send(message)
        except WebSocketDisconnect:
            return
        await self.close(code)

    # ---- the session --------------------------------------------------------------------------------------

    async def first(self, waiting_for: str, denied: AsrError, parse: Callable[[dict], T]) -> T:
        """The first message (within streaming.start_timeout_s), parsed. Without a good token the client gets
        `denied`, but only after its first message parsed (NLS echoes the task_id it carries)."""
        try:
            message = await self.receive(self.limits.start_timeout_s, waiting_for)
        except AsrError:
            if not self.authorized:
                raise denied from None
            raise
        parsed = parse(message)
        if not self.authorized:
            raise denied
        return parsed

    @contextlib.asynccontextmanager
    async def stream(self, options: StreamOptions) -> AsyncIterator[Stream]:
        """A StreamingService stream for this connection (AsrError 429 when full). A failure inside counts as
        a failed stream in the metrics, a vanished client as a dropped one; its Triton state is freed either way."""
        async with self.app.state.streaming.open(options, protocol=self.protocol) as stream:
            try:
                yield stream
            except WebSocketDisconnect:
                raise
            except Exception:
                stream.fail()
                raise
