"""`funasr-triton verify --pipeline`: the whole served result (VAD + ASR + punctuation) against one
AutoModel(model=asr, vad_model=vad, punc_model=punc), on files over two minutes made of FunASR's real
recordings (tests/data, see NOTICE) and synthetic speech, with and without noise-only stretches."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from tests.synth import SENTENCES, compose, silence, write_wav

DATA = Path(__file__).parent / "data"
SR = 16000


def _real() -> list[np.ndarray]:
    from funasr_triton.audio import decode

    return [decode((DATA / name).read_bytes()) for name in
            ("vad_30s_mono_48k.wav", "asr_example.wav", "api_example.wav", "triton_5s.wav")]


def _long_file(noise: bool, seconds: float = 125.0) -> np.ndarray:
    """Real recordings and espeak-ng sentences, over `seconds`; with `noise`, 0.2 s white-noise bursts
    (a segment of their own for the VAD, and no tokens for the ASR) between them."""
    rng = np.random.default_rng(1)
    real, parts, i = _real(), [], 0
    while sum(len(p) for p in parts) < seconds * SR:
        parts += [real[i % len(real)], silence(1.0), compose(SENTENCES[i % len(SENTENCES)]), silence(1.5)]
        if noise and i % 2 == 0:
            parts += [rng.normal(0, 0.1, int(0.2 * SR)).astype(np.float32), silence(2.5)]
        i += 1
    return np.concatenate(parts).astype(np.float32)


def _verify(cli_env, triton, repository, *args):
    out = subprocess.run(["funasr-triton", "--log-level", "WARNING", "verify", "--pipeline", "--json",
                          "--url", triton.grpc_url, "--repository", str(repository), *map(str, args)],
                         capture_output=True, text=True, env=cli_env, timeout=1500)
    assert out.stdout.strip(), out.stderr[-3000:]
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])["pipeline"]


def test_pipeline_equals_automodel_on_long_real_files(triton, repository, cli_env, tmp_path):
    with_noise = write_wav(tmp_path / "real_with_noise.wav", _long_file(noise=True))
    speech_only = write_wav(tmp_path / "real_speech.wav", _long_file(noise=False))
    synthetic = write_wav(tmp_path / "synthetic.wav", compose(SENTENCES[0], 0.8, SENTENCES[1], 1.5, SENTENCES[2]))
    rc, report = _verify(cli_env, triton, repository, with_noise, speech_only, synthetic)
    assert rc == 0 and not report["failures"], report
    assert report["files"] == 3 and report["checks"] == 6
    # the noise bursts are segments without tokens: AutoModel blanks that file, the served pipeline does
    # not; it is then compared with AutoModel's stages (the random-weight ASR also fires no token on some
    # real segment, so the speech-only real file may be blanked too). The synthetic file is compared with
    # AutoModel's own whole-file result.
    assert str(with_noise) in report["blanked"] and str(synthetic) not in report["blanked"]
    assert report["worst_ms"] <= 20


def test_pipeline_mode_detects_disagreement(triton, repository, cli_env, tmp_path):
    """Against another ASR checkpoint the pipeline comparison fails."""
    from funasr_triton_export.testmodels.paraformer import build

    other = build(tmp_path / "other_asr", seed=7)
    wav = write_wav(tmp_path / "clip.wav", compose(SENTENCES[0], 1.0, SENTENCES[1]))
    rc, report = _verify(cli_env, triton, repository, "--model-dir", f"asr={other}", wav)
    assert rc == 1 and report["failures"]
