"""API keys: none configured = open; configured = required (constant-time comparison)."""
from __future__ import annotations

import hmac

from fastapi import Request

from .config import Settings


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
