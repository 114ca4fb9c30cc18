"""Audio by URL (Aliyun `audio_address`), off unless enabled: http/https only, every hop's host resolved
and refused when private/loopback/link-local/reserved unless allow-listed, redirects re-checked,
size and total time bounded. The address actually connected to is checked again before any of the
body is read, so a DNS answer that changes between the check and the connection (rebinding) gains
nothing."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import httpx

from ..errors import AsrError
from .config import AudioSettings
from .upload import SpooledAudio, spool


def _blocked(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved
            or addr.is_multicast or addr.is_unspecified)


async def check_url(url: str, settings: AudioSettings) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AsrError("audio_address must be an http or https URL", 400, "invalid_url", "audio_address")
    host = parts.hostname
    if host in settings.url_allowed_hosts:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise AsrError(f"audio_address host {host!r} does not resolve", 400, "invalid_url", "audio_address")
    for info in infos:
        if _blocked(info[4][0]):
            raise AsrError(f"audio_address host {host!r} resolves to a private or local address", 400,
                           "forbidden_url", "audio_address")


def _check_peer(resp: httpx.Response, url: str, settings: AudioSettings) -> None:
    host = urlsplit(url).hostname or ""
    stream = resp.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if host not in settings.url_allowed_hosts and peer and _blocked(peer[0]):
        raise AsrError(f"audio_address host {host!r} connected to a private or local address", 400,
                       "forbidden_url", "audio_address")


async def fetch(url: str, settings: AudioSettings, max_bytes: int) -> SpooledAudio:
    if not settings.url_fetch_enabled:
        raise AsrError("audio by URL is disabled on this server", 400, "url_disabled", "audio_address")

    async def run() -> SpooledAudio:
        current = url
        async with httpx.AsyncClient(follow_redirects=False, timeout=settings.url_timeout_s) as client:
            for _ in range(settings.url_max_redirects + 1):
                await check_url(current, settings)
                async with client.stream("GET", current) as resp:
                    _check_peer(resp, current, settings)
                    if resp.is_redirect:
                        current = urljoin(current, resp.headers.get("location", ""))
                        continue
                    if resp.status_code != 200:
                        raise AsrError(f"audio_address answered HTTP {resp.status_code}", 400, "fetch_failed", "audio_address")
                    return await spool(resp.aiter_bytes(), max_bytes, lambda: AsrError(
                        f"audio_address body exceeds {max_bytes} bytes", 413, "too_large", "audio_address"))
        raise AsrError("audio_address redirects too many times", 400, "fetch_failed", "audio_address")

    try:
        return await asyncio.wait_for(run(), timeout=settings.url_timeout_s)
    except asyncio.TimeoutError:
        raise AsrError(f"audio_address took longer than {settings.url_timeout_s:.0f} s", 400, "fetch_timeout", "audio_address")
    except httpx.HTTPError as e:
        raise AsrError(f"could not fetch audio_address: {type(e).__name__}", 400, "fetch_failed", "audio_address")
