"""Audio by URL (Aliyun `audio_address`), off unless enabled.

Every hop (the URL and each redirect target) is parsed strictly (http/https, no user info, no
whitespace or control characters, a valid port), its host is resolved once, and every address it
resolves to must be public unless the hop's `host:port` is allow-listed. The request is then sent to
that validated address itself (the Host header, and SNI and certificate checks for https, keep the
original name), so a DNS answer that changes between the check and the connection (rebinding) cannot
send even a blind GET to an internal address. Size, redirects and total time are bounded; no proxy
from the environment is used.

`audio.url_allowed_hosts` entries are `host:port` (`[v6]:port` for IPv6 literals); a bare `host`
allows only ports 80 and 443 on it.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from ..errors import AsrError
from .config import AudioSettings
from .upload import SpooledAudio, spool

PARAM = "audio_address"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _blocked(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved
            or addr.is_multicast or addr.is_unspecified)


def _invalid(message: str) -> AsrError:
    return AsrError(f"audio_address: {message}", 400, "invalid_url", PARAM)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # lower-case name or IP literal, without brackets
    port: int
    path: str  # path and query, never empty

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == _DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"


def parse_target(url: str) -> Target:
    """A URL as a fetch target; AsrError(400, invalid_url) for anything malformed or unsupported."""
    if not isinstance(url, str) or not url or len(url) > 4096:
        raise _invalid("must be an http or https URL of at most 4096 characters")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7f for ch in url):
        raise _invalid("contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:  # bad port, unbalanced brackets, NFKC tricks in the netloc
        raise _invalid(f"malformed URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise _invalid("must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        raise _invalid("user info (user:password@) is not accepted")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise _invalid("the host name is not a valid international domain name") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host.lower(), port or _DEFAULT_PORTS[scheme], path)


def _allowed_pairs(settings: AudioSettings) -> set[tuple[str, int]]:
    pairs: set[tuple[str, int]] = set()
    for entry in settings.url_allowed_hosts:
        entry = entry.strip().lower()
        try:
            parts = urlsplit("//" + entry)
            port, host = parts.port, parts.hostname
        except ValueError:
            continue
        if not host:
            continue
        pairs.update({(host, port)} if port else {(host, 80), (host, 443)})
    return pairs


def allowed(target: Target, settings: AudioSettings) -> bool:
    return (target.host, target.port) in _allowed_pairs(settings)


async def resolve(target: Target, settings: AudioSettings) -> str:
    """The one address this hop connects to: every address the host resolves to is checked."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise AsrError(f"audio_address host {target.host!r} does not resolve", 400, "invalid_url", PARAM) from None
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise AsrError(f"audio_address host {target.host!r} does not resolve", 400, "invalid_url", PARAM)
    if not allowed(target, settings) and any(_blocked(a) for a in addresses):
        raise AsrError(f"audio_address host {target.host!r} resolves to a private or local address", 400,
                       "forbidden_url", PARAM)
    return addresses[0]


async def check_url(url: str, settings: AudioSettings) -> None:
    """Parse and resolve `url` as a fetch would (no request is sent)."""
    await resolve(parse_target(url), settings)


def _request(client: httpx.AsyncClient, target: Target, address: str):
    literal = f"[{address.split('%', 1)[0]}]" if ":" in address else address
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return client.stream("GET", f"{target.scheme}://{literal}:{target.port}{target.path}",
                         headers={"Host": target.host_header}, extensions=extensions)


async def fetch(url: str, settings: AudioSettings, max_bytes: int) -> SpooledAudio:
    if not settings.url_fetch_enabled:
        raise AsrError("audio by URL is disabled on this server", 400, "url_disabled", PARAM)

    async def run() -> SpooledAudio:
        current = url
        async with httpx.AsyncClient(follow_redirects=False, timeout=settings.url_timeout_s,
                                     trust_env=False) as client:
            for _ in range(settings.url_max_redirects + 1):
                target = parse_target(current)
                address = await resolve(target, settings)
                async with _request(client, target, address) as resp:
                    if resp.is_redirect:
                        try:
                            current = urljoin(current, resp.headers.get("location", ""))
                        except ValueError:
                            raise _invalid("redirected to a malformed URL") from None
                        continue
                    if resp.status_code != 200:
                        raise AsrError(f"audio_address answered HTTP {resp.status_code}", 400, "fetch_failed", PARAM)
                    return await spool(resp.aiter_bytes(), max_bytes, PARAM)
        raise AsrError("audio_address redirects too many times", 400, "fetch_failed", PARAM)

    try:
        return await asyncio.wait_for(run(), timeout=settings.url_timeout_s)
    except asyncio.TimeoutError:
        raise AsrError(f"audio_address took longer than {settings.url_timeout_s:.0f} s", 400, "fetch_timeout", PARAM)
    except httpx.InvalidURL:
        raise _invalid("malformed URL") from None
    except (httpx.HTTPError, httpx.StreamError) as e:
        raise AsrError(f"could not fetch audio_address: {type(e).__name__}", 400, "fetch_failed", PARAM)
