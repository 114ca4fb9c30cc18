"""`funasr-triton export --speaker-model pyannote`: pyannote.audio 3.x's WeSpeaker ResNet34 in the
`speaker_embedding` slot instead of CAM++.

A random-weight WeSpeakerResNet34 checkpoint (pyannote's own class and checkpoint format) is exported
by the CLI into a copy of the test repository, which a second real Triton serves. Its embeddings must
equal pyannote.audio's own `model(waveform)` (torchaudio fbank + ResNet, run in the pyannote
interpreter) on espeak-ng speech, and the pipeline must diarize with it (mechanics only: random weights).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from funasr_triton.triton_client import TranscribeOptions
from funasr_triton_export.exporters.wespeaker import PYTHON_ENV, reference_embeddings
from tests.conftest import BIN, CACHE, ROOT, start_triton
from tests.synth import SENTENCES, espeak, silence

VOICES = [dict(voice="cmn", pitch=30, speed=150), dict(voice="cmn+f3", pitch=80, speed=175)]
MIN_COSINE = 0.999



def _export(repo, *extra, env=None):
    return subprocess.run([str(BIN / "funasr-triton"), "--log-level", "WARNING", "export", "--source", "test",
                           "--stages", "speaker", "--speaker-model", "pyannote", "--repository", str(repo),
                           "--cache-dir", str(CACHE), *extra], capture_output=True, text=True, cwd=ROOT,
                          timeout=900, env=env)


@pytest.fixture(scope="module")
def pyannote_repo(repository, tmp_path_factory):
    """The session's test repository with speaker_embedding re-exported from the pyannote checkpoint."""
    repo = tmp_path_factory.mktemp("pyannote") / "model_repository"
    shutil.copytree(repository, repo, symlinks=True)
    out = _export(repo)
    assert out.returncode == 0, out.stderr[-3000:]
    return repo


@pytest.fixture(scope="module")
def pyannote_triton(pyannote_repo, tmp_path_factory):
    handle = start_triton(pyannote_repo, tmp_path_factory.mktemp("pyannote-logs"))
    yield handle
    handle.server.stop()


def test_export_replaces_the_slot(pyannote_repo):
    version = pyannote_repo / "speaker_embedding" / "1"
    exported = sorted(p.name for p in version.iterdir() if p.suffix != ".py" and not p.is_symlink() and p.is_file())
    assert exported == ["embedding.json", "model.onnx"], "CAM++'s files are gone, only the new model's remain"
    conf = json.loads((version / "embedding.json").read_text())
    assert conf["model_class"] == "WeSpeakerResNet34" and conf["source"] == "pyannote.audio"
    assert conf["pyannote_audio"].startswith("3.")
    assert conf["embedding_size"] == 256 and conf["feat_dim"] == 80
    feats = conf["features"]
    assert feats["window_type"] == "hamming" and feats["waveform_scale"] == 32768.0 and feats["subtract_mean"]
    manifest = json.loads((pyannote_repo / "MANIFEST.json").read_text())["stages"]
    assert manifest["speaker"]["origin"] == "test:wespeaker" and manifest["speaker"]["model"] == "pyannote"
    assert set(manifest["speaker"]["files"]) == {"speaker_embedding/1/embedding.json", "speaker_embedding/1/model.onnx"}


def test_other_stages_untouched(repository, pyannote_repo):
    before = json.loads((repository / "MANIFEST.json").read_text())["stages"]
    after = json.loads((pyannote_repo / "MANIFEST.json").read_text())["stages"]
    assert set(after) == set(before)
    for stage in set(before) - {"speaker"}:
        assert after[stage] == before[stage]
    assert before["speaker"]["model"] == "cam++" and after["speaker"]["model"] == "pyannote"


def test_served_embedding_equals_pyannote_forward(pyannote_triton, pyannote_repo):
    """Triton (kaldi-native-fbank features + ONNX ResNet) vs pyannote.audio's own forward
    (torchaudio kaldi fbank ×32768, hamming, mean subtraction + PyTorch ResNet)."""
    from funasr_triton.triton_client import TritonAsrClient

    clips = []
    for i, seconds in enumerate((0.3, 1.5, 3.0, 7.5)):
        speech = espeak(SENTENCES[i], **VOICES[i % 2])
        while speech.shape[0] < seconds * 16000:
            speech = np.concatenate([speech, silence(0.2), speech])
        clips.append(np.ascontiguousarray(speech[: int(seconds * 16000)], dtype=np.float32))
    expected = reference_embeddings(CACHE / "test" / "speaker-pyannote", clips)
    assert expected.shape == (len(clips), 256)

    client = TritonAsrClient(pyannote_triton.grpc_url, timeout_s=300)
    try:
        for k, wav in enumerate(clips):
            if wav.shape[0] < 4000:  # below the slot's min_samples: refused with the limit named
                with pytest.raises(Exception, match="samples"):
                    client.speaker_embedding(wav)
                continue
            emb = client.speaker_embedding(wav).reshape(-1)
            assert emb.shape == (256,)
            cos = float(emb @ expected[k] / (np.linalg.norm(emb) * np.linalg.norm(expected[k])))
            assert cos >= MIN_COSINE, f"clip {k} ({wav.shape[0] / 16000:.1f} s): cosine {cos:.6f}"
            np.testing.assert_allclose(emb, expected[k], rtol=0, atol=2e-3 * float(np.abs(expected[k]).max()))
    finally:
        client.close()


def test_pipeline_diarizes_with_pyannote_embeddings(pyannote_triton):
    from funasr_triton.triton_client import TritonAsrClient

    parts = [silence(0.3)]
    for i in range(4):
        parts += [espeak(SENTENCES[i], **VOICES[i % 2]), silence(1.2)]
    wav = np.concatenate(parts)
    client = TritonAsrClient(pyannote_triton.grpc_url, timeout_s=300)
    try:
        for num in (1, 2, 3):
            result = client.transcribe(wav, TranscribeOptions(diarize=True, num_speakers=num))
            speakers = [s["speaker"] for s in result["sentences"]]
            assert result["num_speakers"] == num and set(speakers) == set(range(num))
            assert speakers[0] == 0
        est = client.transcribe(wav, TranscribeOptions(diarize=True, min_speakers=1, max_speakers=3))
        assert 1 <= est["num_speakers"] <= 3 and all("speaker" in s for s in est["sentences"])
        plain = client.transcribe(wav)
        assert [w for s in est["sentences"] for w in s["words"]] == [w for s in plain["sentences"] for w in s["words"]]
    finally:
        client.close()


def test_missing_interpreter_is_named(tmp_path):
    import os

    env = {**os.environ, PYTHON_ENV: str(tmp_path / "no-such-python")}
    out = _export(tmp_path / "repo", env=env)
    assert out.returncode == 2 and PYTHON_ENV in out.stderr and "no such interpreter" in out.stderr


def test_interpreter_without_pyannote_gets_the_fix(pyannote_repo, tmp_path):
    """The project's own interpreter has no pyannote.audio (by design): the error says what to run."""
    import os

    (tmp_path / "ckpt").mkdir()
    shutil.copy(CACHE / "test" / "speaker-pyannote" / "pytorch_model.bin", tmp_path / "ckpt" / "pytorch_model.bin")
    env = {**os.environ, PYTHON_ENV: sys.executable}
    out = _export(tmp_path / "repo", "--model-dir", f"speaker={tmp_path / 'ckpt'}", env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "make pyannote-env" in out.stderr and "pyannote" in out.stderr


def test_verify_compares_with_pyannote(pyannote_triton, pyannote_repo, cli_env, tmp_path):
    """`funasr-triton verify` on a pyannote deployment: the speaker stage is checked against
    pyannote.audio's forward (no AutoModel exists for it); the other stages against AutoModel as usual."""
    from tests.synth import compose, write_wav

    wav = write_wav(tmp_path / "clip.wav", compose(SENTENCES[0], 1.0, SENTENCES[1]))
    out = subprocess.run([str(BIN / "funasr-triton"), "--log-level", "WARNING", "verify", "--json",
                          "--url", pyannote_triton.grpc_url, "--repository", str(pyannote_repo), str(wav)],
                         capture_output=True, text=True, env=cli_env, timeout=900)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    failures = {k: v["failures"] for k, v in report.items() if v["failures"]}
    assert out.returncode == 0 and not failures, failures or out.stderr[-2000:]
    assert report["speaker"]["checks"] >= 1 and report["speaker"]["worst"] >= MIN_COSINE
    assert report["asr"]["checks"] >= 1
