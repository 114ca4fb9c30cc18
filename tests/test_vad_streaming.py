"""Streaming FSMN-VAD (fsmn_vad.OnlineVad, used by streaming_asr) against funasr AutoModel in streaming mode.

funasr's streaming call: generate(input=chunk, cache=cache, is_final=..., chunk_size=600), with a fixed
max_end_silence_time or without one (funasr's default: the dynamic end-silence schedule, speech/noise
threshold 0.5); it returns [beg, -1] when a start is confirmed and [-1, end] at the end. Our port must
return the same lists chunk by chunk. The weights are the real FSMN-VAD's; the dynamic mode is also
checked on real recordings (tests/data, FunASR's own examples).
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.synth import compose
from tests.test_vad_port import SOURCE_DIR, exported, fsmn_vad  # noqa: F401  (exported: fixture)

CHUNK_MS = 600


@pytest.fixture(scope="module")
def funasr_vad():
    from funasr import AutoModel

    def make(max_end_silence_ms: int | None):
        extra = {} if max_end_silence_ms is None else {"max_end_silence_time": max_end_silence_ms}
        return AutoModel(model=str(SOURCE_DIR), disable_update=True, disable_pbar=True, disable_log=True, **extra)
    return make


@pytest.fixture(scope="module")
def port_vad(exported):
    return fsmn_vad.FsmnVad(exported)


def _chunks(wav: np.ndarray, chunk_ms: int = CHUNK_MS):
    step = chunk_ms * 16
    n = max(1, -(-wav.shape[0] // step))
    return [(wav[i * step:(i + 1) * step], i == n - 1) for i in range(n)]


def _compare(funasr_vad, port_vad, wav: np.ndarray, silence_ms: int | None, chunk_ms: int = CHUNK_MS):
    """Both VADs chunk by chunk; the segments (all the same) they returned."""
    import torch

    model = funasr_vad(silence_ms)
    cache: dict = {}
    online = fsmn_vad.OnlineVad(port_vad, max_end_silence_ms=silence_ms, chunk_ms=chunk_ms)
    extra = {} if silence_ms is None else {"max_end_silence_time": silence_ms}
    got_all = []
    for k, (chunk, is_final) in enumerate(_chunks(wav, chunk_ms)):
        res = model.generate(input=torch.from_numpy(chunk.copy()), cache=cache, is_final=is_final,
                             chunk_size=chunk_ms, **extra)
        expected = [list(map(int, s)) for s in res[0]["value"]]
        got = online.accept(chunk, is_final)
        assert got == expected, f"chunk {k}: funasr {expected}, port {got}"
        got_all += got
    starts = [s for s in got_all if s[0] != -1]
    ends = [s for s in got_all if s[1] != -1]
    assert starts and len(starts) == len(ends), got_all
    return got_all


@pytest.mark.parametrize("silence_ms", [500, 800, None])
@pytest.mark.parametrize("parts", [
    (0.4, "今天天气很好，我们去公园散步吧。", 1.5, "请问附近有没有地铁站？", 1.2),
    ("下雨了，记得带伞。", 0.3, "欢迎使用离线语音转写服务。"),  # speech to the very end: closed by is_final
])
def test_streaming_segments_match_funasr(funasr_vad, port_vad, silence_ms, parts):
    _compare(funasr_vad, port_vad, compose(*parts), silence_ms)


def _recording(name: str) -> np.ndarray:
    from tests.test_vad_longfile import _recording as load

    return load(name)


def _recordings_with_pauses() -> np.ndarray:
    """Real speech (FunASR's example recordings): the 30 s one, then the short ones between pauses
    of 0.9 s and 1.5 s: longer than 800 ms, shorter than the dynamic schedule's first 2000 ms."""
    parts = [_recording("vad_30s_mono_48k.wav")]
    for name, pause in (("asr_example.wav", 0.9), ("api_example.wav", 1.5), ("triton_5s.wav", 0.9)):
        parts += [np.zeros(int(pause * 16000), np.float32), _recording(name)]
    parts.append(np.zeros(3 * 16000, np.float32))
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("chunk_ms", [600, 480])
def test_dynamic_silence_matches_funasr_on_real_recordings(funasr_vad, port_vad, chunk_ms):
    """funasr's streaming default (no max_end_silence_time): the dynamic schedule, chunk by chunk."""
    wav = _recordings_with_pauses()
    dynamic = _compare(funasr_vad, port_vad, wav, None, chunk_ms)
    fixed = _compare(funasr_vad, port_vad, wav, 800, chunk_ms)
    assert dynamic != fixed, "the recordings do not tell the dynamic schedule from a fixed 800 ms"


def test_online_vad_default_is_dynamic(port_vad):
    assert fsmn_vad.OnlineVad(port_vad).dynamic_silence
    assert not fsmn_vad.OnlineVad(port_vad, 800).dynamic_silence
    with pytest.raises(ValueError):
        fsmn_vad.OnlineVad(port_vad, chunk_ms=0)
