"""Audio decoding with ffmpeg: any container/codec in, 16 kHz mono float32 out, as a stream of chunks.

`DecodeStream` runs ffmpeg as an asyncio subprocess and yields fixed-size chunks while it decodes, so an
hour-long upload never sits in memory as one buffer: its memory is a chunk plus the pipe buffers.
`decode()` (and `decode_async()`) collect such a stream into one array.

ffmpeg runs without a shell and reads the input through a pipe, so it may open nothing else
(`-protocol_whitelist pipe`) and playlists (HLS, concat) cannot make it read files or URLs. A path is
opened here and handed to ffmpeg as its stdin; bytes are written into that pipe. MP4/M4A/MOV files may
keep their index at the end, which a pipe cannot reach: those (recognised by their `ftyp` box) are
given to ffmpeg by path with the demuxer forced to `mov`, so no playlist demuxer can be chosen; bytes
of such a file go through a private temporary file, removed afterwards.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import math
import os
import re
import shutil
import tempfile
from typing import Union

import numpy as np

from .errors import AsrError

SAMPLE_RATE = 16000

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

_READ_BYTES = 1 << 16  # one read from ffmpeg's stdout
_STDERR_LINES = 16  # error lines kept from ffmpeg's stderr (each cut to _STDERR_LINE_CHARS)
_STDERR_LINE_CHARS = 512
# what the log line looks like with `-loglevel level+info`: "[ctx @ 0x..] [error] message"
_LOG_LINE = re.compile(r"^((?:\[[^\[\]]* @ [^\[\]]*\] )*)\[(quiet|panic|fatal|error|warning|info|verbose|debug|trace)\] ?(.*)$")
_ERROR_LEVELS = ("panic", "fatal", "error")  # what `-loglevel error` prints
_DURATION = re.compile(r"^\[info\]   Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?),")
# demuxers ffprobe may pick for a path (the file protocol is allowed there): single-file formats only,
# none that opens other files or URLs (no hls, dash, concat, image2, imf, ...)
_PROBE_FORMATS = ",".join([
    "wav", "w64", "mp3", "flac", "ogg", "mov", "matroska", "aac", "ac3", "eac3", "dts", "truehd", "mlp", "amr",
    "amrnb", "amrwb", "aiff", "caf", "au", "wv", "ape", "tta", "tak", "asf", "avi", "flv", "mpegts", "mpeg",
    "mpc", "mpc8", "gsm", "voc", "rm", "dsf", "xwma", "loas", "s16le"])


class _StderrTail:
    """What ffmpeg's stderr says, kept bounded: the last error lines and the container's duration."""

    def __init__(self):
        self.errors: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self.no_streams = False
        self.duration_s: float | None = None
        self._level = "error"

    def line(self, raw: bytes) -> None:
        for text in raw.decode("utf-8", "replace").split("\r"):
            if not text.strip():
                continue
            m = _LOG_LINE.match(text)
            if m:
                self._level = m.group(2)
                if self.duration_s is None and self._level == "info":
                    d = _DURATION.match(text)
                    if d:
                        self.duration_s = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))
                text = m.group(1) + m.group(3)
            if self._level in _ERROR_LEVELS:  # untagged lines continue the previous message
                self.no_streams = self.no_streams or "matches no streams" in text
                self.errors.append(text[:_STDERR_LINE_CHARS])


async def _drain_stderr(stream: asyncio.StreamReader, tail: _StderrTail) -> None:
    """Read stderr to its end so ffmpeg never blocks on it, keeping only `tail` (not the stream)."""
    pending = b""
    while True:
        block = await stream.read(4096)
        if not block:
            break
        *lines, pending = (pending + block).split(b"\n")
        for line in lines:
            tail.line(line)
        pending = pending[-_STDERR_LINE_CHARS * 4:]
    if pending:
        tail.line(pending)


async def _feed(stdin: asyncio.StreamWriter, data: memoryview) -> None:
    """Write `data` into ffmpeg's stdin; ffmpeg may stop reading early (error, -t), which is fine."""
    try:
        for i in range(0, len(data), _READ_BYTES):
            stdin.write(data[i:i + _READ_BYTES])
            await stdin.drain()
        stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass


def _private_copy(data, suffix: str = ".mp4") -> str:
    fd, path = tempfile.mkstemp(prefix="funasr-triton-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        os.unlink(path)
        raise
    return path


class DecodeStream:
    """ffmpeg's decode of one input as 16 kHz mono float32 chunks, in bounded memory.

        async with DecodeStream(path) as stream:
            async for chunk in stream:   # float32, exactly chunk_samples long, the last one shorter
                ...

    source: a path to the audio (opened here, given to ffmpeg as its stdin) or bytes (small inputs).
    chunk_samples: samples per chunk. Each chunk is a new array the caller owns, in [-1, 1] with NaN/inf
    set to 0.
    max_seconds: as soon as more than this much audio has come out ffmpeg is killed and AsrError
    `audio_too_long` raised; the rest is never decoded.
    timeout_s: how long the stream may wait on ffmpeg in all (starting it, each chunk, its exit): past
    that ffmpeg is killed and AsrError `decode_timeout` raised. Time the consumer spends between chunks is
    not counted, so a consumer that reads straight through (`decode()`) gets a wall-clock limit for the
    whole decode.
    audio_filter: an ffmpeg -af chain (the optional denoise stage).
    pcm_sample_rate: the input is raw s16le mono at that rate (Aliyun `format=pcm`).

    Errors are AsrError with the codes `decode()` always had: empty_audio, ffmpeg_missing (500), bad_audio,
    audio_too_long, decode_timeout; a bad_audio from ffmpeg's exit comes after the chunks decoded before it.

    Attributes: `samples_out`, the samples yielded so far; `duration_s`, the container's reported duration
    (from ffmpeg's log, untrusted; None when the container does not say, e.g. an MP3 or WAV read through
    a pipe), set to the exact `samples_out / SAMPLE_RATE` once the stream has ended.

    ffmpeg is killed and reaped, the temporary file removed and the input file closed on every way out:
    the end, an error, `aclose()` / leaving `async with`, cancellation of the consuming task. A consumer
    that breaks out of `async for` without `async with` or `aclose()` gets the same when the stream is
    garbage-collected (ffmpeg is killed then; CPython does it at once for an unnamed stream).
    """

    def __init__(self, source: Source, *, chunk_samples: int = SAMPLE_RATE * 10, max_seconds: float = 14400.0,
                 timeout_s: float = 300.0, ffmpeg: str = "ffmpeg", audio_filter: str | None = None,
                 pcm_sample_rate: int | None = None):
        if chunk_samples < 1:
            raise ValueError("chunk_samples must be at least 1")
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._data: memoryview | None = memoryview(source).cast("B")
            self._path: str | None = None
        elif isinstance(source, (str, os.PathLike)):
            self._data, self._path = None, os.path.abspath(os.fspath(source))
        else:
            raise TypeError(f"source must be a path or bytes, not {type(source).__name__}")
        self.chunk_samples = int(chunk_samples)
        self.max_seconds = max_seconds
        self.timeout_s = timeout_s
        self.ffmpeg = ffmpeg
        self.audio_filter = audio_filter
        self.pcm_sample_rate = pcm_sample_rate
        self.samples_out = 0
        self._duration_s: float | None = None  # exact, once the stream has ended
        self._left_s = timeout_s  # what is left of timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task] = []
        self._tail = _StderrTail()
        self._tmp: str | None = None
        self._hide: str | None = None  # a path ffmpeg's messages name, shown as "input"
        self._started = self._ended = self._closed = False
        self._busy = False  # a task is inside __anext__

    @property
    def duration_s(self) -> float | None:
        return self._duration_s if self._duration_s is not None else self._tail.duration_s

    # -- async iterator / context manager
    def __aiter__(self) -> DecodeStream:
        return self

    async def __aenter__(self) -> DecodeStream:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def __anext__(self) -> np.ndarray:
        if self._closed or self._ended:
            await self.aclose()
            raise StopAsyncIteration
        self._busy = True
        try:
            chunk = await self._timed(self._next_chunk())
        except BaseException:
            self._busy = False
            await self.aclose()
            raise
        self._busy = False
        if chunk is None:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Stop: kill and reap ffmpeg, remove the temporary file. Safe to call more than once, and from
        another task while one waits for a chunk (that one then ends its iteration)."""
        if self._closed:
            return
        self._closed = True
        proc, tasks = self._proc, self._tasks
        try:
            if proc is not None:
                if proc.returncode is None:
                    _kill(proc)
                if proc.stdin is not None:
                    proc.stdin.close()
                # read to its end, so the pipe's transport closes (bounded: the pipe buffers); a task inside
                # __anext__ is reading it already
                if proc.stdout is not None and not self._busy:
                    while await proc.stdout.read(_READ_BYTES):
                        pass
                await proc.wait()
        finally:
            for task in tasks:
                task.cancel()
            self._remove_tmp()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def __del__(self):
        # not closed: the consumer dropped the stream without aclose(); do the synchronous part
        if getattr(self, "_closed", True):
            return
        self._closed = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            transport = getattr(proc, "_transport", None)  # close() kills ffmpeg and closes the pipes
            try:
                transport.close() if transport is not None else _kill(proc)
            except Exception:  # noqa: BLE001  (the loop may be gone)
                _kill(proc)
        self._remove_tmp()

    # -- decoding
    async def _timed(self, coro):
        """Await `coro` against what is left of timeout_s."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            return await asyncio.wait_for(coro, max(self._left_s, 0.0))
        except asyncio.TimeoutError:
            if self._proc is not None and self._proc.returncode is None:
                _kill(self._proc)
            raise AsrError(f"decoding took longer than {self.timeout_s:.0f} s", 400, "decode_timeout") from None
        finally:
            self._left_s -= loop.time() - t0

    async def _next_chunk(self) -> np.ndarray | None:
        if not self._started:
            self._started = True
            await self._start()
            if self._closed:  # aclose() from another task while ffmpeg started
                _kill(self._proc)
        proc = self._proc
        buf = np.empty(self.chunk_samples, dtype=np.float32)
        view = memoryview(buf).cast("B")
        want, got = len(view), 0
        limit = self.max_seconds * SAMPLE_RATE
        while got < want:
            block = await proc.stdout.read(min(_READ_BYTES, want - got))
            if not block:
                break
            if self._closed:  # aclose() from another task: the rest is ffmpeg's last output
                continue
            view[got:got + len(block)] = block
            got += len(block)
            if self.samples_out + got // 4 > limit:
                _kill(proc)
                raise AsrError(f"the audio is longer than the {self.max_seconds:.0f} s limit", 400, "audio_too_long")
        n = got // 4
        if self._closed:
            await proc.wait()
            return None
        if got < want:  # ffmpeg's output ended
            await proc.wait()
            await asyncio.gather(*self._tasks)  # stderr read to its end, stdin written
            if proc.returncode != 0:
                raise self._failure()
            if self.samples_out + n == 0:
                raise AsrError("the file holds no audio samples", 400, "empty_audio")
            self._ended = True
            self._duration_s = (self.samples_out + n) / SAMPLE_RATE
            if n == 0:
                return None
            buf = buf[:n].copy()
        np.nan_to_num(buf, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(buf, -1.0, 1.0, out=buf)
        self.samples_out += n
        return buf

    async def _start(self) -> None:
        stdin_file = None
        try:
            if self._path is not None:
                stdin_file = open(self._path, "rb", buffering=0)  # noqa: SIM115  (handed to ffmpeg, closed below)
                size = os.fstat(stdin_file.fileno()).st_size
                head = os.pread(stdin_file.fileno(), 8, 0)  # ffmpeg reads from the descriptor's offset, still 0
            else:
                size, head = len(self._data), bytes(self._data[:8])
            if size == 0:
                raise AsrError("the audio is empty", 400, "empty_audio")
            if shutil.which(self.ffmpeg) is None:
                raise AsrError("ffmpeg is not installed on the server", 500, "ffmpeg_missing")
            if self.pcm_sample_rate is not None and size % 2:
                raise AsrError("raw PCM must be 16-bit samples (an even number of bytes)", 400, "bad_audio")
            stdin = asyncio.subprocess.PIPE
            if self.pcm_sample_rate is None and head[4:8] == b"ftyp":
                if self._path is None:
                    self._tmp = path = _private_copy(self._data)
                else:
                    path = self._path
                    stdin_file.close()
                    stdin_file = None
                self._hide = path
                source = ["-protocol_whitelist", "file", "-f", "mov", "-i", path]
                stdin = asyncio.subprocess.DEVNULL
            else:
                if self._path is not None:
                    self._hide = self._path
                    stdin = stdin_file
                if self.pcm_sample_rate is not None:
                    source = ["-protocol_whitelist", "pipe", "-f", "s16le", "-ar", str(self.pcm_sample_rate),
                              "-ac", "1", "-i", "pipe:0"]
                else:
                    source = ["-protocol_whitelist", "pipe", "-i", "pipe:0"]
            filters = ["-af", self.audio_filter] if self.audio_filter else []
            cmd = [self.ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info", *source,
                   "-map", "0:a:0", "-vn", *filters, "-ac", "1", "-ar", str(SAMPLE_RATE),
                   "-t", f"{self.max_seconds + 0.001:.3f}", "-f", "f32le", "pipe:1"]
            self._proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        finally:
            if stdin_file is not None:
                stdin_file.close()  # ffmpeg has its own descriptor
        self._tasks.append(asyncio.ensure_future(_drain_stderr(self._proc.stderr, self._tail)))
        if stdin is asyncio.subprocess.PIPE:
            self._tasks.append(asyncio.ensure_future(_feed(self._proc.stdin, self._data)))

    def _failure(self) -> AsrError:
        if self._tail.no_streams:
            return AsrError("the file has no audio stream", 400, "bad_audio")
        reason = self._tail.errors[-1].strip() if self._tail.errors else "ffmpeg failed"
        if self._hide is not None:
            reason = reason.replace(self._hide, "input")
        return AsrError(f"could not decode the audio: {reason}", 400, "bad_audio")

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        proc.kill()
    except ProcessLookupError:
        pass


async def decode_async(source: Source, max_seconds: float = 14400.0, timeout_s: float = 300.0,
                       ffmpeg: str = "ffmpeg", audio_filter: str | None = None,
                       pcm_sample_rate: int | None = None) -> np.ndarray:
    """`decode()` without a thread: the whole audio as one array, grown in place as chunks come (its peak
    memory is about the result's size)."""
    out, n = None, 0
    async with DecodeStream(source, chunk_samples=SAMPLE_RATE * 30, max_seconds=max_seconds, timeout_s=timeout_s,
                            ffmpeg=ffmpeg, audio_filter=audio_filter, pcm_sample_rate=pcm_sample_rate) as stream:
        async for chunk in stream:
            if out is None:  # the first chunk (a new array, nobody else's) is the start of the result
                out, n = chunk, chunk.size
                continue
            # grown by exactly a chunk: realloc remaps a large array rather than copying it, and resize()
            # zero-fills what it adds, so room kept ahead would cost memory as if it were used
            out.resize(n + chunk.size, refcheck=False)
            out[n:n + chunk.size] = chunk
            n += chunk.size
    return out if out is not None else np.empty(0, dtype=np.float32)


def decode(data: bytes, max_seconds: float = 14400.0, timeout_s: float = 300.0, ffmpeg: str = "ffmpeg",
           audio_filter: str | None = None, pcm_sample_rate: int | None = None) -> np.ndarray:
    """Bytes (or a path) of any audio/video container -> 16 kHz mono float32 in [-1, 1].

    pcm_sample_rate: the bytes are raw s16le mono at that rate (Aliyun `format=pcm`).
    audio_filter: an ffmpeg -af chain (the optional denoise stage).
    Blocking (its own event loop); from async code use `decode_async()` or `DecodeStream`.
    """
    if isinstance(data, (bytes, bytearray, memoryview)) and not len(data):
        raise AsrError("the audio is empty", 400, "empty_audio")
    coro = decode_async(data, max_seconds, timeout_s, ffmpeg, audio_filter, pcm_sample_rate)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from a running loop's thread
        return pool.submit(asyncio.run, coro).result()


async def probe_duration(path_or_bytes: Source, ffprobe: str = "ffprobe", timeout_s: float = 10.0) -> float | None:
    """The container's reported duration in seconds, for rejecting an over-long file before decoding.

    None when it is unknown: ffprobe missing, a format it does not know, no duration in the container,
    an error or timeout. Untrusted (a header can lie): `DecodeStream`'s max_seconds is the real limit.
    ffprobe reads the file itself (a seekable input is what makes MP3/WAV durations known), with only the
    file protocol and only single-file demuxers allowed, so a playlist cannot make it open anything else.
    """
    if shutil.which(ffprobe) is None:
        return None
    tmp = None
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        if not len(path_or_bytes):
            return None
        tmp = path = _private_copy(path_or_bytes, suffix="")  # no extension to sway ffprobe's guess
    else:
        path = os.path.abspath(os.fspath(path_or_bytes))
    proc = None
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        forced = ["-f", "mov"] if head[4:8] == b"ftyp" else []
        cmd = [ffprobe, "-v", "error", "-protocol_whitelist", "file", "-format_whitelist", _PROBE_FORMATS,
               *forced, "-show_entries", "format=duration", "-of", "default=noprint_wrappers=1:nokey=1",
               "-i", "file:" + path]
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        if proc.returncode != 0:
            return None
        try:
            seconds = float(out.decode("ascii", "replace").strip().splitlines()[0])
        except (ValueError, IndexError):
            return None  # "N/A"
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    except (asyncio.TimeoutError, OSError):
        return None
    finally:
        if proc is not None and proc.returncode is None:
            _kill(proc)
            await proc.wait()
        if tmp is not None:
            os.unlink(tmp)
