"""The one bounded reader of request audio: bodies and forms read as they stream in, audio spooled to a private
temporary file in bounded blocks (never whole in memory).

Every HTTP surface takes its audio through here: a raw body (`read_body`: Aliyun), a form (`read_form`, then
`spool_part` for each file part: OpenAI, /v1/jobs, seed) or a fetched URL (`spool`, from app/fetch.py). The
size limit is checked in one place, `_bounded`: from the declared Content-Length before anything is read, then
while reading, so an oversized body is refused after at most `limit` + one block. Its failure is an AsrError
(413 `too_large`) that each surface renders in its own shape. The file is removed when the `SpooledAudio` closes.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import AsyncIterator

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import FormParser, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from ..errors import AsrError
from .inputs import is_uint

BLOCK = 1 << 20
FORM_OVERHEAD_BYTES = 1024 * 1024  # multipart framing and text fields on top of a form's audio limit


class SpooledAudio:
    """A temporary file holding one request's audio (`path` for ffmpeg), removed by `close()`."""

    def __init__(self, path: Path, size: int):
        self.path = path
        self.size = size

    def head(self, n: int = 16) -> bytes:
        """The first bytes (format sniffing)."""
        with open(self.path, "rb") as f:
            return f.read(n)

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "SpooledAudio":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bounded(blocks: AsyncIterator[bytes], limit: int, param: str | None, declared: str | None = None,
             audio_limit: int | None = None) -> AsyncIterator[bytes]:
    """The size limit: the declared Content-Length is checked now, `blocks` are passed on until they pass
    `limit` bytes. The error names `audio_limit` when the limit adds a form's overhead to it."""
    def too_large() -> AsrError:
        return AsrError(f"the upload is larger than the {audio_limit or limit} byte limit", 413, "too_large", param)

    if declared is not None and is_uint(declared) and int(declared) > limit:
        raise too_large()

    async def checked() -> AsyncIterator[bytes]:
        size = 0
        async for block in blocks:
            size += len(block)
            if size > limit:
                raise too_large()
            yield block

    return checked()


def _body(request: Request, limit: int, param: str | None, audio_limit: int | None = None) -> AsyncIterator[bytes]:
    """The request body as it streams in, bounded; a client that hangs up is a 499."""
    blocks = _bounded(request.stream(), limit, param, request.headers.get("content-length", ""), audio_limit)

    async def read() -> AsyncIterator[bytes]:
        try:
            async for block in blocks:
                yield block
        except ClientDisconnect:
            raise AsrError("the client closed the connection during the upload", 499, "client_closed") from None

    return read()


async def _spool(blocks: AsyncIterator[bytes]) -> SpooledAudio:
    fd, name = tempfile.mkstemp(prefix="funasr-triton-upload-")
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for block in blocks:
                size += len(block)
                f.write(block)
    except BaseException:
        os.unlink(name)
        raise
    return SpooledAudio(Path(name), size)


async def spool(blocks: AsyncIterator[bytes], limit: int, param: str | None) -> SpooledAudio:
    """Write the blocks to a new private temporary file; 413 `too_large` past `limit` bytes."""
    return await _spool(_bounded(blocks, limit, param))


async def read_body(request: Request, limit: int, param: str | None) -> SpooledAudio:
    """A raw request body -> SpooledAudio, abandoned as soon as it passes `limit` bytes."""
    return await _spool(_body(request, limit, param))


async def read_form(request: Request, audio_limit: int, param: str | None, *, max_files: int,
                    max_fields: int) -> FormData:
    """A multipart (or urlencoded) form parsed as the body streams in, the body bounded by `audio_limit` plus
    FORM_OVERHEAD_BYTES (413 naming `param`); any other content type is an empty form. A malformed body is a 400
    `invalid_multipart`."""
    blocks = _body(request, audio_limit + FORM_OVERHEAD_BYTES, param, audio_limit)  # the Content-Length: checked now
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "multipart/form-data":
        parser = MultiPartParser(request.headers, blocks, max_files=max_files, max_fields=max_fields)
    elif content_type == "application/x-www-form-urlencoded":
        parser = FormParser(request.headers, blocks, max_fields=max_fields)
    else:
        return FormData()
    try:
        return await parser.parse()
    except AsrError:
        raise
    except Exception as exc:  # any parser failure is the caller's malformed body
        detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise AsrError(f"malformed {content_type} body: {detail}", 400, "invalid_multipart") from None


async def _part_blocks(upload: UploadFile) -> AsyncIterator[bytes]:
    while block := await upload.read(BLOCK):
        yield block


async def spool_part(upload: UploadFile, limit: int, param: str | None) -> SpooledAudio:
    """A file part of a parsed form -> SpooledAudio, refused past `limit` bytes."""
    return await spool(_part_blocks(upload), limit, param)
