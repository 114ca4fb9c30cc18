"""Test audio made at test time: espeak-ng Mandarin speech, silence gaps, ffmpeg conversions."""
from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np

from funasr_triton_tools.speech import SENTENCES, SR, espeak  # noqa: F401  (re-exported)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), dtype=np.float32)


def compose(*parts: str | float, voice: str = "cmn", speed: int = 160) -> np.ndarray:
    """Concatenate speech (str) and silence (float seconds)."""
    chunks = [silence(p) if isinstance(p, (int, float)) else espeak(p, voice, speed) for p in parts]
    return np.concatenate(chunks).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, sr: int = SR, channels: int = 1) -> Path:
    pcm = np.clip(samples, -1.0, 1.0 - 1.0 / 32768)
    data = (pcm * 32768.0).astype("<i2")
    if channels > 1:
        data = np.repeat(data[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(data.tobytes())
    return path


def convert(src: Path, dst: Path, *ffmpeg_args: str) -> Path:
    """Re-encode `src` with ffmpeg (container picked from `dst`'s suffix)."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *ffmpeg_args, str(dst)],
                   check=True, capture_output=True)
    return dst
