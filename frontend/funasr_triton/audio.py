"""Audio decoding with ffmpeg: any container/codec in, 16 kHz mono float32 out.

ffmpeg runs without a shell, reads the bytes through a pipe and may open nothing else
(`-protocol_whitelist pipe`), so playlists (HLS, concat) cannot make it read files or URLs.
MP4/M4A/MOV files may keep their index at the end, which a pipe cannot reach: those (recognised
by their `ftyp` box) go through a private temporary file with the demuxer forced to `mov`, so
no playlist demuxer can be chosen, and the file is removed afterwards.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np

from .errors import AsrError

SAMPLE_RATE = 16000


def decode(data: bytes, max_seconds: float = 14400.0, timeout_s: float = 300.0, ffmpeg: str = "ffmpeg",
           audio_filter: str | None = None, pcm_sample_rate: int | None = None) -> np.ndarray:
    """Bytes of any audio/video container -> 16 kHz mono float32 in [-1, 1].

    pcm_sample_rate: the bytes are raw s16le mono at that rate (Aliyun `format=pcm`).
    audio_filter: an ffmpeg -af chain (the optional denoise stage).
    """
    if not data:
        raise AsrError("the audio is empty", 400, "empty_audio")
    if shutil.which(ffmpeg) is None:
        raise AsrError("ffmpeg is not installed on the server", 500, "ffmpeg_missing")
    if pcm_sample_rate is not None and len(data) % 2:
        raise AsrError("raw PCM must be 16-bit samples (an even number of bytes)", 400, "bad_audio")
    is_mp4 = pcm_sample_rate is None and data[4:8] == b"ftyp"
    tmp = None
    try:
        if is_mp4:
            fd, tmp = tempfile.mkstemp(prefix="funasr-triton-", suffix=".mp4")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            source = ["-protocol_whitelist", "file", "-f", "mov", "-i", tmp]
        elif pcm_sample_rate is not None:
            source = ["-protocol_whitelist", "pipe", "-f", "s16le", "-ar", str(pcm_sample_rate), "-ac", "1",
                      "-i", "pipe:0"]
        else:
            source = ["-protocol_whitelist", "pipe", "-i", "pipe:0"]
        filters = ["-af", audio_filter] if audio_filter else []
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *source,
               "-map", "0:a:0", "-vn", *filters, "-ac", "1", "-ar", str(SAMPLE_RATE),
               "-t", f"{max_seconds + 0.001:.3f}", "-f", "f32le", "pipe:1"]
        proc = subprocess.run(cmd, input=None if is_mp4 else data, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise AsrError(f"decoding took longer than {timeout_s:.0f} s", 400, "decode_timeout")
    finally:
        if tmp is not None:
            os.unlink(tmp)
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace")
        if tmp is not None:
            stderr = stderr.replace(tmp, "input")
        if "matches no streams" in stderr:
            raise AsrError("the file has no audio stream", 400, "bad_audio")
        reason = stderr.strip().splitlines()
        raise AsrError(f"could not decode the audio: {reason[-1] if reason else 'ffmpeg failed'}", 400, "bad_audio")
    samples = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if samples.size == 0:
        raise AsrError("the file holds no audio samples", 400, "empty_audio")
    if samples.size > max_seconds * SAMPLE_RATE:
        raise AsrError(f"the audio is longer than the {max_seconds:.0f} s limit", 400, "audio_too_long")
    return np.clip(np.nan_to_num(samples), -1.0, 1.0)
