"""audio.DecodeStream with real ffmpeg: chunking, bounded memory, limits, cleanup, safety."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from funasr_triton import audio
from funasr_triton.audio import SAMPLE_RATE, DecodeStream, decode, probe_duration
from funasr_triton.errors import AsrError

from .synth import SENTENCES, compose, convert, write_wav

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None
                                or shutil.which("espeak-ng") is None, reason="needs ffmpeg, ffprobe and espeak-ng")

HOUR_S = 3600
SILENT_S = 5 * 3600


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True, capture_output=True)


def _old_decode(data: bytes, pcm_sample_rate: int | None = None) -> np.ndarray:
    """decode() as it was before the streaming decoder: the reference for bit-exactness and messages."""
    is_mp4 = pcm_sample_rate is None and data[4:8] == b"ftyp"
    tmp = None
    try:
        if is_mp4:
            fd, tmp = tempfile.mkstemp(prefix="old-", suffix=".mp4")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            source = ["-protocol_whitelist", "file", "-f", "mov", "-i", tmp]
        elif pcm_sample_rate is not None:
            source = ["-protocol_whitelist", "pipe", "-f", "s16le", "-ar", str(pcm_sample_rate), "-ac", "1",
                      "-i", "pipe:0"]
        else:
            source = ["-protocol_whitelist", "pipe", "-i", "pipe:0"]
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *source, "-map", "0:a:0", "-vn",
               "-ac", "1", "-ar", "16000", "-t", "14400.001", "-f", "f32le", "pipe:1"]
        proc = subprocess.run(cmd, input=None if is_mp4 else data, capture_output=True, timeout=60, check=False)
    finally:
        if tmp is not None:
            os.unlink(tmp)
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace")
        if tmp is not None:
            stderr = stderr.replace(tmp, "input")
        if "matches no streams" in stderr:
            raise AsrError("the file has no audio stream", 400, "bad_audio")
        raise AsrError(f"could not decode the audio: {stderr.strip().splitlines()[-1]}", 400, "bad_audio")
    return np.clip(np.nan_to_num(np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)), -1.0, 1.0)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Short speech in every input format, a 60-minute WAV, a 5-hour silent FLAC, and bad inputs."""
    d = tmp_path_factory.mktemp("media")
    speech = compose(SENTENCES[0], 0.3, SENTENCES[1])
    src = write_wav(d / "src.wav", speech)
    m = {"wav": write_wav(d / "stereo8k.wav", speech[::2].copy(), sr=8000, channels=2),
         "mp3": convert(src, d / "s.mp3", "-b:a", "48k"),
         "flac": convert(src, d / "s.flac", "-ar", "22050"),
         "ogg": convert(src, d / "s.ogg", "-c:a", "libopus", "-b:a", "24k"),
         "m4a": convert(src, d / "s.m4a", "-c:a", "aac", "-b:a", "48k")}
    pcm16 = (np.clip(speech, -1, 1 - 1 / 32768) * 32768).astype("<i2")
    (d / "s16k.pcm").write_bytes(pcm16.tobytes())
    (d / "s8k.pcm").write_bytes(pcm16[::2].tobytes())
    m["pcm16k"], m["pcm8k"] = d / "s16k.pcm", d / "s8k.pcm"
    # the hour: the clip looped (cheap to make and to decode, so the test measures the pipeline, not a codec)
    _ffmpeg("-stream_loop", "-1", "-i", str(src), "-t", str(HOUR_S), "-c:a", "pcm_s16le", str(d / "hour.wav"))
    m["hour"] = d / "hour.wav"
    # 5 hours of silence compress to ~3 MB of FLAC
    _ffmpeg("-f", "lavfi", "-i", f"anullsrc=r=16000:cl=mono:n=16384", "-t", str(SILENT_S), "-c:a", "flac",
            str(d / "silent.flac"))
    m["silent"] = d / "silent.flac"
    m["sixty"] = convert(m["hour"], d / "sixty.m4a", "-t", "60", "-c:a", "aac", "-b:a", "32k")
    return m


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch) -> Path:
    """A private directory for the decoder's temporary files, so leftovers can be checked."""
    tmp = tmp_path / "decoder-tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _children(names=("ffmpeg", "ffprobe")) -> list:
    psutil = pytest.importorskip("psutil")
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name() in names:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _assert_no_ffmpeg(wait_s: float = 3.0) -> None:
    """No ffmpeg child left, running or zombie (reaping may take a moment after a kill)."""
    deadline = time.monotonic() + wait_s
    while _children() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _children() == []


def _inputs(path: Path) -> dict[str, object]:
    return {"path": path, "str": str(path), "bytes": path.read_bytes()}


async def _chunks(source, **kwargs) -> tuple[list[np.ndarray], DecodeStream]:
    async with DecodeStream(source, **kwargs) as stream:
        return [c async for c in stream], stream


CASES = {"wav": None, "mp3": None, "flac": None, "ogg": None, "m4a": None, "pcm16k": 16000, "pcm8k": 8000}


@pytest.mark.parametrize("fmt", list(CASES))
def test_chunks_concatenate_to_decode_bit_exact(media, private_tmp, fmt):
    rate = CASES[fmt]
    data = media[fmt].read_bytes()
    whole = decode(data, pcm_sample_rate=rate)
    assert whole.dtype == np.float32 and whole.flags.c_contiguous and whole.flags.owndata
    assert np.array_equal(whole, _old_decode(data, rate))  # same samples as before the streaming decoder
    assert np.array_equal(decode(media[fmt], pcm_sample_rate=rate), whole)
    size = 7001  # not a divisor of any clip's length
    assert whole.size % size
    for kind, source in _inputs(media[fmt]).items():
        chunks, stream = asyncio.run(_chunks(source, chunk_samples=size, pcm_sample_rate=rate))
        assert [c.size for c in chunks[:-1]] == [size] * (len(chunks) - 1), kind
        assert 0 < chunks[-1].size < size
        assert all(c.dtype == np.float32 for c in chunks)
        assert np.array_equal(np.concatenate(chunks), whole), kind
        assert stream.samples_out == whole.size and stream.duration_s == whole.size / SAMPLE_RATE
    assert list(private_tmp.iterdir()) == []  # the m4a bytes' temporary copy is gone
    _assert_no_ffmpeg()


def test_hour_long_file_streams_in_bounded_memory(media):
    """Peak RSS of a fresh interpreter while it streams 60 minutes (230 MB of float32): a few MB."""
    script = textwrap.dedent("""
        import asyncio, json, resource, sys, time
        import psutil
        from funasr_triton.audio import DecodeStream, decode
        def peak_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        decode(sys.argv[2])  # warm up: imports, the event loop, a small decode
        base = peak_mb()
        def decoding():  # an ffmpeg child that has not exited
            return any(p.name() == "ffmpeg" and p.status() != psutil.STATUS_ZOMBIE for p in psutil.Process().children())
        async def stream():
            t0, first, n, running = time.monotonic(), None, 0, None
            async for chunk in DecodeStream(sys.argv[1]):
                if first is None:
                    first, running = time.monotonic() - t0, decoding()
                n += chunk.size
            return first, time.monotonic() - t0, n, running
        first, total, n, running = asyncio.run(stream())
        streamed = peak_mb()
        whole = decode(sys.argv[1])
        print(json.dumps({"first_s": first, "total_s": total, "samples": n, "running": running,
                          "stream_mb": streamed - base,
                          "decode_mb": peak_mb() - base, "decode_samples": int(whole.size)}))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(media["hour"]), str(media["wav"])],
                         capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["samples"] == r["decode_samples"] == HOUR_S * SAMPLE_RATE
    assert r["stream_mb"] < 100, r  # (about 10 MB here)
    # the first chunk comes while ffmpeg still decodes (it cannot finish before its output is read)
    assert r["running"] and r["first_s"] < r["total_s"] / 2, r
    # decode() holds the result once (230 MB): no copies of it, no ffmpeg output buffered beside it
    assert r["decode_mb"] < 230 * 1.12, r


def test_max_seconds_stops_a_long_silent_flac_early(media):
    assert asyncio.run(probe_duration(media["silent"])) == pytest.approx(SILENT_S)

    async def run():
        stream = DecodeStream(media["silent"], max_seconds=60)
        with pytest.raises(AsrError) as e:
            async for _ in stream:
                pass
        assert stream.samples_out <= 60 * SAMPLE_RATE
        return e.value

    t0 = time.monotonic()
    err = asyncio.run(run())
    elapsed = time.monotonic() - t0
    assert (err.status, err.code) == (400, "audio_too_long")
    assert elapsed < 5  # 60 s of 5 h decoded: a full decode would take ~300 times longer
    _assert_no_ffmpeg(wait_s=0.5)
    with pytest.raises(AsrError) as e:
        decode(media["silent"].read_bytes(), max_seconds=60)
    assert e.value.code == "audio_too_long"
    _assert_no_ffmpeg(wait_s=0.5)


def test_container_duration_is_known_early_for_flac(media):
    async def run():
        async with DecodeStream(media["silent"], chunk_samples=SAMPLE_RATE) as stream:
            for _ in range(5):
                await stream.__anext__()
                if stream.duration_s is not None:
                    return stream.duration_s
        return None

    assert asyncio.run(run()) == pytest.approx(SILENT_S)


def test_breaking_out_early_leaves_no_ffmpeg_and_no_temp_file(media, private_tmp):
    m4a = media["sixty"].read_bytes()

    async def unnamed():  # no aclose(): the dropped stream kills ffmpeg
        n = 0
        async for _ in DecodeStream(m4a, chunk_samples=SAMPLE_RATE):
            n += 1
            if n == 2:
                break
        assert list(private_tmp.iterdir()) == []
        for _ in range(100):
            if not _children():
                break
            await asyncio.sleep(0.02)  # the loop's child watcher reaps it

    async def scoped():
        async with DecodeStream(media["hour"], chunk_samples=SAMPLE_RATE) as stream:
            async for _ in stream:
                if stream.samples_out == 2 * SAMPLE_RATE:
                    break
        assert _children() == []  # aclose() killed and reaped it

    async def scoped_bytes():
        async with DecodeStream(m4a, chunk_samples=SAMPLE_RATE) as stream:
            await stream.__anext__()
            assert len(list(private_tmp.iterdir())) == 1
        assert _children() == [] and list(private_tmp.iterdir()) == []
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()

    for case in (unnamed, scoped, scoped_bytes):
        asyncio.run(case())
        _assert_no_ffmpeg()
        assert list(private_tmp.iterdir()) == []


def test_cancelling_the_consumer_leaves_no_ffmpeg_and_no_temp_file(media, private_tmp):
    m4a = media["sixty"].read_bytes()

    async def consume(stream: DecodeStream, seen: asyncio.Event, pause: float):
        async with stream:
            n = 0
            async for _ in stream:
                n += 1
                if n == 2:
                    seen.set()
                    await asyncio.sleep(pause)

    async def run(audio_filter, chunk_samples, pause):
        seen = asyncio.Event()
        stream = DecodeStream(m4a, chunk_samples=chunk_samples, audio_filter=audio_filter)
        task = asyncio.ensure_future(consume(stream, seen, pause))
        await asyncio.wait_for(seen.wait(), 30)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stream.samples_out == 2 * chunk_samples
        assert _children() == []
        assert list(private_tmp.iterdir()) == []

    asyncio.run(run(None, SAMPLE_RATE, 60))  # cancelled while it handles a chunk
    # cancelled inside the stream, waiting for the third chunk: ffmpeg runs at 4x real time (0.25 s a chunk)
    asyncio.run(run("arealtime=speed=4", SAMPLE_RATE, 0))
    _assert_no_ffmpeg()


def test_aclose_from_another_task_ends_the_iteration(media, private_tmp):
    async def run():
        stream = DecodeStream(media["sixty"].read_bytes(), chunk_samples=SAMPLE_RATE, audio_filter="arealtime=speed=4")
        got = []

        async def consume():
            async for chunk in stream:
                got.append(chunk)

        task = asyncio.ensure_future(consume())
        while len(got) < 2:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # the consumer waits for the third chunk
        await stream.aclose()
        await asyncio.wait_for(task, 5)  # its `async for` ends without an error
        assert len(got) == 2 and _children() == [] and list(private_tmp.iterdir()) == []

    asyncio.run(run())
    _assert_no_ffmpeg()


def test_timeout(media):
    t0 = time.monotonic()
    with pytest.raises(AsrError) as e:
        decode(media["hour"], timeout_s=0.2)
    assert (e.value.status, e.value.code) == (400, "decode_timeout")
    assert e.value.message == "decoding took longer than 0 s"
    assert time.monotonic() - t0 < 5
    _assert_no_ffmpeg(wait_s=0.5)


def _error(source, **kwargs) -> AsrError:
    with pytest.raises(AsrError) as e:
        decode(source, **kwargs)
    return e.value


def test_bad_input(media, tmp_path, private_tmp):
    text = b"this is not audio, just some text that ffmpeg cannot make sense of\n" * 20
    truncated_flac = media["flac"].read_bytes()[:40]
    truncated_m4a = media["m4a"].read_bytes()[:len(media["m4a"].read_bytes()) // 2]
    for data in (text, truncated_flac, truncated_m4a):
        err = _error(data)
        assert (err.status, err.code) == (400, "bad_audio")
        with pytest.raises(AsrError) as old:
            _old_decode(data)
        assert err.message == old.value.message  # the message decode() always gave
        path = tmp_path / "upload.bin"
        path.write_bytes(data)
        assert _error(path).code == "bad_audio"
        assert str(tmp_path) not in _error(path).message and "decoder-tmp" not in err.message
    assert _error(truncated_m4a).message.startswith("could not decode the audio: input: ")  # temp path hidden
    video = tmp_path / "video.mkv"
    _ffmpeg("-f", "lavfi", "-i", "color=c=black:s=16x16:d=0.2", "-c:v", "ffv1", str(video))
    assert _error(video.read_bytes()).message == "the file has no audio stream"
    header_only = write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    (tmp_path / "zero").write_bytes(b"")
    for source in (b"", tmp_path / "zero", header_only):
        err = _error(source)
        assert (err.status, err.code) == (400, "empty_audio")
    (tmp_path / "odd.pcm").write_bytes(b"\0" * 101)
    for source in (b"\0" * 101, tmp_path / "odd.pcm"):
        err = _error(source, pcm_sample_rate=16000)
        assert err.code == "bad_audio" and "even number of bytes" in err.message
    err = _error(media["wav"], ffmpeg=str(tmp_path / "no-ffmpeg"))
    assert (err.status, err.code) == (500, "ffmpeg_missing")
    assert list(private_tmp.iterdir()) == []
    _assert_no_ffmpeg()


def test_hls_playlist_cannot_read_local_files(media, tmp_path):
    fifo = tmp_path / "segment.mp3"
    os.mkfifo(fifo)  # anything that opened it for reading would block: no writer ever comes

    def playlist(segment: Path) -> bytes:
        return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
                f"#EXTINF:10.0,\n{segment}\n#EXT-X-ENDLIST\n").encode()

    real = tmp_path / "real.m3u8"
    real.write_bytes(playlist(media["mp3"]))
    # the playlist is valid: unrestricted ffmpeg follows it to the local file
    followed = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(real), "-f", "f32le", "pipe:1"],
                              capture_output=True, timeout=30)
    assert followed.returncode == 0 and len(followed.stdout) > 16000
    trap = tmp_path / "trap.m3u8"
    trap.write_bytes(playlist(fifo))
    for source in (real, real.read_bytes(), trap, trap.read_bytes()):
        err = _error(source, timeout_s=10)
        assert (err.status, err.code) == (400, "bad_audio")
        assert asyncio.run(probe_duration(source)) is None
    with pytest.raises(OSError) as e:  # nobody ever opened the FIFO for reading (nor holds it open)
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    assert e.value.errno == errno.ENXIO
    _assert_no_ffmpeg()


def test_probe_duration(media, tmp_path, private_tmp):
    expected = decode(media["flac"]).size / SAMPLE_RATE
    for fmt in ("wav", "mp3", "flac", "m4a"):
        for kind, source in _inputs(media[fmt]).items():
            got = asyncio.run(probe_duration(source))
            assert got == pytest.approx(expected, abs=0.1), (fmt, kind)
    assert asyncio.run(probe_duration(media["hour"])) == pytest.approx(HOUR_S, abs=0.01)
    assert asyncio.run(probe_duration(b"not audio at all" * 10)) is None
    assert asyncio.run(probe_duration(b"")) is None
    assert asyncio.run(probe_duration(media["wav"], ffprobe=str(tmp_path / "no-ffprobe"))) is None
    assert list(private_tmp.iterdir()) == []
    _assert_no_ffmpeg()


def test_decode_from_inside_a_running_loop(media):
    async def run():
        return decode(media["wav"].read_bytes())

    assert np.array_equal(asyncio.run(run()), decode(media["wav"]))


def test_nan_and_inf_become_zero_and_samples_are_clipped(tmp_path):
    raw = np.array([0.5, np.nan, np.inf, -np.inf, 3.0, -2.0, -0.25] * 1000, dtype="<f4")
    wav = tmp_path / "float.wav"
    proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "f32le", "-ar", "16000", "-ac", "1",
                           "-i", "pipe:0", "-c:a", "pcm_f32le", str(wav)], input=raw.tobytes(), capture_output=True)
    assert proc.returncode == 0, proc.stderr
    out = decode(wav)
    assert out.size == raw.size and np.isfinite(out).all()
    assert np.array_equal(out[:7], np.array([0.5, 0, 0, 0, 1, -1, -0.25], dtype=np.float32))


def test_bad_arguments():
    with pytest.raises(ValueError):
        DecodeStream(b"x", chunk_samples=0)
    with pytest.raises(TypeError):
        DecodeStream(123)  # type: ignore[arg-type]
    assert audio.DecodeStream is DecodeStream
