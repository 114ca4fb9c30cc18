"""Streaming FSMN-VAD (fsmn_vad.OnlineVad, used by streaming_asr) against funasr AutoModel in streaming mode.

funasr's streaming call: generate(input=chunk, cache=cache, is_final=..., chunk_size=600) with a fixed
max_end_silence_time; it returns [beg, -1] when a start is confirmed and [-1, end] at the end.
Our port must return the same lists chunk by chunk.
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

    def make(max_end_silence_ms: int):
        return AutoModel(model=str(SOURCE_DIR), disable_update=True, disable_pbar=True, disable_log=True,
                         max_end_silence_time=max_end_silence_ms)
    return make


@pytest.fixture(scope="module")
def port_vad(exported):
    return fsmn_vad.FsmnVad(exported)


def _chunks(wav: np.ndarray, chunk_ms: int = CHUNK_MS):
    step = chunk_ms * 16
    n = max(1, -(-wav.shape[0] // step))
    return [(wav[i * step:(i + 1) * step], i == n - 1) for i in range(n)]


@pytest.mark.parametrize("silence_ms", [500, 800])
@pytest.mark.parametrize("parts", [
    (0.4, "今天天气很好，我们去公园散步吧。", 1.5, "请问附近有没有地铁站？", 1.2),
    ("下雨了，记得带伞。", 0.3, "欢迎使用离线语音转写服务。"),  # speech to the very end: closed by is_final
])
def test_streaming_segments_match_funasr(funasr_vad, port_vad, silence_ms, parts):
    import torch

    wav = compose(*parts)
    model = funasr_vad(silence_ms)
    cache: dict = {}
    online = fsmn_vad.OnlineVad(port_vad, max_end_silence_ms=silence_ms)
    expected_all, got_all = [], []
    for chunk, is_final in _chunks(wav):
        res = model.generate(input=torch.from_numpy(chunk.copy()), cache=cache, is_final=is_final,
                             chunk_size=CHUNK_MS, max_end_silence_time=silence_ms)
        expected = [list(map(int, s)) for s in res[0]["value"]]
        got = online.accept(chunk, is_final)
        assert got == expected, f"chunk ending {len(expected_all)}: funasr {expected}, port {got}"
        expected_all += expected
        got_all += got
    starts = [s for s in got_all if s[0] != -1]
    ends = [s for s in got_all if s[1] != -1]
    assert starts and len(starts) == len(ends), got_all
