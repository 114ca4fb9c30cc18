"""Speaker windows over VAD speech and word-to-speaker assignment (pure numpy).

Windows follow FunASR's `sv_chunk`: 1.5 s every 0.75 s inside each VAD segment, the last one aligned
to the segment end, shorter segments zero-padded to 1.5 s, so every window has the same shape and
Triton batches them in `speaker_embedding`.
"""
from __future__ import annotations

import numpy as np

SAMPLES_PER_MS = 16
WINDOW_MS = 1500
HOP_MS = 750


def speech_windows(segments: list[list[int]], window_ms: int = WINDOW_MS, hop_ms: int = HOP_MS) -> list[tuple[int, int]]:
    """[(start_ms, end_ms)] of every window; a window never crosses its VAD segment."""
    out: list[tuple[int, int]] = []
    for beg, end in segments:
        last_end = beg
        for start in range(beg, end, hop_ms):
            stop = min(start + window_ms, end)
            if stop <= last_end:
                break
            last_end = stop
            out.append((max(beg, stop - window_ms), stop))
    return out


def window_samples(wav: np.ndarray, start_ms: int, end_ms: int, window_ms: int = WINDOW_MS) -> np.ndarray:
    chunk = wav[start_ms * SAMPLES_PER_MS: end_ms * SAMPLES_PER_MS]
    need = window_ms * SAMPLES_PER_MS
    if chunk.shape[0] < need:
        chunk = np.pad(chunk, (0, need - chunk.shape[0]))
    return np.ascontiguousarray(chunk[:need], dtype=np.float32)


def word_speakers(stamps: list[list[int]], windows: list[tuple[int, int]], labels: np.ndarray) -> list[int]:
    """Each word takes the label of the window whose centre is nearest to the word's centre,
    preferring windows that contain that centre."""
    if not windows:
        return [0] * len(stamps)
    starts = np.array([w[0] for w in windows], dtype=np.float64)
    ends = np.array([w[1] for w in windows], dtype=np.float64)
    centres = (starts + ends) / 2
    out = []
    for b, e in stamps:
        c = (b + e) / 2
        inside = (starts <= c) & (c <= ends)
        distance = np.abs(centres - c) + np.where(inside, 0.0, 1e9)
        out.append(int(labels[int(np.argmin(distance))]))
    return out
