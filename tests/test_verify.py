"""`funasr-triton verify` on the test models: served stages agree with FunASR AutoModel."""
from __future__ import annotations

import json
import subprocess

import numpy as np

from tests.synth import SENTENCES, compose, convert, silence, write_wav


def _clips(tmp_path):
    s = SENTENCES
    clips = {
        "one_second": compose(s[9])[:16000],
        "single": compose(s[0]),
        "two_gap": compose(s[1], 2.0, s[2]),
        "short_gaps": compose(s[3], 0.3, s[4], 0.5, s[5]),
        "lead_trail_silence": compose(1.5, s[6], 2.0),
        "fast": compose(s[7], 1.0, s[8], speed=220),
        "slow": compose(s[10], speed=110),
        "english_mix": compose("hello world 人工智能", 0.8, s[11]),
        "noise": compose(s[2]) + np.random.default_rng(0).normal(0, 0.01, len(compose(s[2]))).astype(np.float32),
        "three_minutes": np.concatenate([compose(s[i % len(s)], 0.6 + 0.4 * (i % 3)) for i in range(40)])[: 180 * 16000],
    }
    paths = []
    for name, wav in clips.items():
        paths.append(write_wav(tmp_path / f"{name}.wav", wav))
    # other containers/rates go through the same ffmpeg decoding on both sides
    paths.append(convert(paths[2], tmp_path / "two_gap_8k.flac", "-ar", "8000"))
    paths.append(convert(paths[3], tmp_path / "short_gaps.mp3", "-ac", "2"))
    return paths


def test_verify_agrees_with_automodel(triton, repository, cli_env, tmp_path):
    paths = _clips(tmp_path)
    assert len(paths) >= 10
    out = subprocess.run(["funasr-triton", "--log-level", "WARNING", "verify", "--json", "--url", triton.grpc_url,
                          "--repository", str(repository), *map(str, paths)],
                         capture_output=True, text=True, env=cli_env, timeout=1200)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    failures = {k: v["failures"] for k, v in report.items() if v["failures"]}
    assert out.returncode == 0 and not failures, failures or out.stderr[-2000:]
    # every stage was really compared, not skipped
    assert report["vad"]["checks"] == len(paths)
    assert report["asr"]["checks"] >= 2 * len(paths) and report["asr+hotwords"]["checks"] == report["asr"]["checks"]
    assert report["punc"]["checks"] == len(paths)
    assert report["pipeline"]["checks"] == len(paths)
    assert report["speaker"]["checks"] >= len(paths) and report["speaker"]["worst"] >= 0.999
    assert report["vad"]["worst"] <= 10
    # one-frame CIF near-ties are reported, and must stay rare
    assert report["asr"]["ties"] <= report["asr"]["checks"] // 4


def test_verify_detects_disagreement(triton, repository, cli_env, tmp_path):
    """Against a different ASR checkpoint (another seed) verify must fail and say where."""
    from funasr_triton_export.testmodels.paraformer import build

    other = build(tmp_path / "other_asr", seed=7)
    wav = write_wav(tmp_path / "clip.wav", compose(SENTENCES[0], 1.0, SENTENCES[1]))
    out = subprocess.run(["funasr-triton", "--log-level", "WARNING", "verify", "--json", "--url", triton.grpc_url,
                          "--repository", str(repository), "--model-dir", f"asr={other}", str(wav)],
                         capture_output=True, text=True, env=cli_env, timeout=600)
    assert out.returncode == 1
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["asr"]["failures"] and not report["vad"]["failures"]


def test_silence_only(client):
    result = client.transcribe(silence(3.0))
    assert result["text"] == "" and result["sentences"] == [] and result["vad_segments"] == []
