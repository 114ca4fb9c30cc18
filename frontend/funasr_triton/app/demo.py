"""The browser demo at `/` and `/demo`: a static page (plain JS, no CDN) that streams the microphone over
the FunASR WebSocket protocol (`/ws/v1/funasr`) and uploads files to `POST /v1/audio/transcriptions`.

The page and its assets are public like `/docs`; the APIs they call keep their own authentication
(the page sends the key the user typed as `Authorization: Bearer` and `?token=`).
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ..errors import AsrError

STATIC = Path(__file__).with_name("static")
ASSETS = {  # the only files served, with their media types (an AudioWorklet module must be served as JavaScript)
    "app.js": "text/javascript; charset=utf-8",
    "recorder-worklet.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["demo"], include_in_schema=False)


@router.get("/")
@router.get("/demo")
async def demo_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=NO_CACHE)


@router.get("/demo/static/{name}")
async def demo_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise AsrError(f"no demo asset named {name!r}", 404, "not_found")
    return FileResponse(STATIC / name, media_type=media_type, headers=NO_CACHE)
