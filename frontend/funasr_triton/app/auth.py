"""API keys: none configured = open; configured = required (constant-time comparison).

HTTP surfaces declare `require_key(...)` as a route dependency (checked before any parameter or body is read);
WebSocket sessions, which refuse in their own protocol, call `key_ok` with `bearer`/`nls_token` themselves.
"""
from __future__ import annotations

import hmac
from typing import Awaitable, Callable

from fastapi import Request

from ..errors import AsrError
from .config import Settings

KeySource = Callable[[Request], "str | None"]


def key_ok(settings: Settings, presented: str | None) -> bool:
    keys = settings.auth.api_keys
    if not keys:
        return True
    if not presented:
        return False
    given = presented.encode("utf-8")
    ok = False
    for key in keys:  # compare against every key so timing does not reveal which matched
        ok |= hmac.compare_digest(given, key.get_secret_value().encode("utf-8"))
    return ok


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def nls_token(request: Request) -> str | None:
    return request.headers.get("x-nls-token") or request.query_params.get("token")


def require_key(message: str, code: str, param: str | None = None,
                sources: tuple[KeySource, ...] = (bearer,)) -> Callable[[Request], Awaitable[None]]:
    """A route dependency: one of `sources` must present an API key, else AsrError(message, 401, code, param),
    which the surface renders in its own shape."""

    async def dependency(request: Request) -> None:
        settings = request.app.state.settings
        if not any(key_ok(settings, source(request)) for source in sources):
            raise AsrError(message, 401, code, param)

    return dependency
