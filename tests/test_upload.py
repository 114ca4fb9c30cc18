"""app/upload.py, the one bounded reader of request audio, against real Starlette requests fed by an ASGI receive
(a pure unit test: no server, no Triton)."""
from __future__ import annotations

import asyncio

import pytest
from starlette.datastructures import UploadFile
from starlette.requests import Request

from funasr_triton.app.upload import FORM_OVERHEAD_BYTES, read_body, read_form, spool, spool_part
from funasr_triton.errors import AsrError


def _request(chunks: list[bytes], headers: dict[str, str], disconnect: bool = False) -> Request:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    return Request(scope, receive)


def _error(coro) -> AsrError:
    with pytest.raises(AsrError) as e:
        asyncio.run(coro)
    return e.value


def test_body_is_spooled_and_bounded(tmp_path):
    audio = asyncio.run(read_body(_request([b"ab", b"cd"], {}), 4, "audio"))
    with audio:
        assert audio.size == 4 and audio.path.read_bytes() == b"abcd" and audio.head(2) == b"ab"
    assert not audio.path.exists()
    # past the limit while streaming (no Content-Length), and from the declared Content-Length before reading
    err = _error(read_body(_request([b"ab", b"cde"], {}), 4, "audio"))
    assert (err.status, err.code, err.param) == (413, "too_large", "audio")
    err = _error(read_body(_request([b"a"], {"content-length": "5"}), 4, "audio"))
    assert (err.status, err.code, err.param) == (413, "too_large", "audio")
    err = _error(read_body(_request([b"ab"], {}, disconnect=True), 4, "audio"))
    assert (err.status, err.code) == (499, "client_closed")


def test_form_is_parsed_as_it_streams_and_bounded():
    body = (b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--b--\r\n")
    headers = {"content-type": "multipart/form-data; boundary=b"}
    form = asyncio.run(read_form(_request([body[:30], body[30:]], headers), 10, "file", max_files=1, max_fields=4))
    assert form["model"] == "whisper-1" and isinstance(form["file"], UploadFile)

    async def spooled() -> bytes:
        with await spool_part(form["file"], 10, "file") as audio:
            return audio.path.read_bytes()

    assert asyncio.run(spooled()) == b"RIFF"
    big = {**headers, "content-length": str(10 + FORM_OVERHEAD_BYTES + 1)}
    err = _error(read_form(_request([body], big), 10, "file", max_files=1, max_fields=4))
    assert (err.status, err.code, err.param) == (413, "too_large", "file") and "10 byte" in err.message
    err = _error(read_form(_request([b"--x\r\nbroken"], headers), 10, "file", max_files=1, max_fields=4))
    assert (err.status, err.code) == (400, "invalid_multipart")
    err = _error(read_form(_request([body], headers), 10, "file", max_files=0, max_fields=4))
    assert (err.status, err.code) == (400, "invalid_multipart")
    # urlencoded forms are read too; any other content type is an empty form (the surface says what is missing)
    form = asyncio.run(read_form(_request([b"model=whisper-1"], {"content-type": "application/x-www-form-urlencoded"}),
                                 10, "file", max_files=1, max_fields=4))
    assert dict(form) == {"model": "whisper-1"}
    assert not asyncio.run(read_form(_request([b"{}"], {"content-type": "application/json"}), 10, "file",
                                     max_files=1, max_fields=4))


def test_a_file_part_past_the_limit_is_refused_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)

    async def blocks():
        for _ in range(3):
            yield b"x" * 4

    err = _error(spool(blocks(), 10, "files"))
    assert (err.status, err.code, err.param) == (413, "too_large", "files")
    assert list(tmp_path.iterdir()) == []
