"""Job callbacks: a JSON POST to a user's URL through the same SSRF guard as audio URLs (app/fetch.py).

The URL is parsed strictly, its host resolved once, every address checked (private, loopback and
link-local targets are refused unless `audio.url_allowed_hosts` lists the host:port), and the request
goes to that checked address itself. Redirects are not followed.
"""
from __future__ import annotations

import logging

import httpx

from ..app.config import AudioSettings
from ..app.fetch import parse_target, resolve
from ..errors import AsrError
from ..logs import event

log = logging.getLogger(__name__)


async def check_callback(url: str, settings: AudioSettings) -> None:
    """Refuse a callback URL now rather than when the job ends (malformed, or not public)."""
    await resolve(parse_target(url), settings)


async def post_json(url: str, body: dict, settings: AudioSettings, timeout_s: float) -> bool:
    try:
        target = parse_target(url)
        address = await resolve(target, settings)
        literal = f"[{address.split('%', 1)[0]}]" if ":" in address else address
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        async with httpx.AsyncClient(follow_redirects=False, timeout=timeout_s, trust_env=False) as client:
            r = await client.post(f"{target.scheme}://{literal}:{target.port}{target.path}", json=body,
                                  headers={"Host": target.host_header}, extensions=extensions)
        event(log, "job callback sent", status=r.status_code)
        return r.is_success
    except AsrError as err:
        event(log, "job callback refused", level=logging.WARNING, code=err.code, reason=err.message)
    except httpx.HTTPError as err:
        event(log, "job callback failed", level=logging.WARNING, error=type(err).__name__)
    return False
