"""Request audio spooled to a private temporary file, read in bounded blocks (never whole in memory).

Every HTTP surface takes its audio through here: a multipart file part (`spool_upload`: OpenAI, seed)
or a raw body (`spool_body`: Aliyun). The size limit is checked while reading, so an oversized body
is refused after at most `limit` + one block. The file is removed when the `SpooledAudio` closes.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import AsyncIterator, Callable

from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..errors import AsrError

BLOCK = 1 << 20


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


async def spool(blocks: AsyncIterator[bytes], limit: int, too_large: Callable[[], AsrError]) -> SpooledAudio:
    """Write the blocks to a new private temporary file; `too_large()` is raised past `limit` bytes."""
    fd, name = tempfile.mkstemp(prefix="funasr-triton-upload-")
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for block in blocks:
                size += len(block)
                if size > limit:
                    raise too_large()
                f.write(block)
    except BaseException:
        os.unlink(name)
        raise
    return SpooledAudio(Path(name), size)


async def _upload_blocks(upload: UploadFile) -> AsyncIterator[bytes]:
    while block := await upload.read(BLOCK):
        yield block


async def spool_upload(upload: UploadFile, limit: int, too_large: Callable[[], AsrError]) -> SpooledAudio:
    """A parsed multipart file part (itself spooled by the multipart parser) -> SpooledAudio."""
    return await spool(_upload_blocks(upload), limit, too_large)


async def spool_body(request: Request, limit: int, too_large: Callable[[], AsrError]) -> SpooledAudio:
    """A raw request body, read as it streams in -> SpooledAudio."""
    return await spool(request.stream(), limit, too_large)
