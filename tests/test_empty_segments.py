"""Segments where the CIF predictor never fires (noise, a click, a frame or two) answer empty text, as
FunASR answers no tokens for them, and the file or stream they are part of goes on.

The tiny test ASR model's predictor is calibrated so that silence and noise do not fire while espeak-ng
speech does (testmodels/paraformer.py), as a trained model behaves."""
from __future__ import annotations

import concurrent.futures as cf
import json
import subprocess

import numpy as np
import onnxruntime as ort
import pytest

from tests.synth import SENTENCES, compose, silence, write_wav

SR = 16000


def _noise(seconds: float, level: float = 0.1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, level, int(seconds * SR)).astype(np.float32)


@pytest.fixture(scope="module")
def speech_noise_speech():
    """Speech, a 0.2 s white-noise burst alone between long pauses, speech: the VAD makes the burst a
    segment of its own. Returns (samples, (noise_begin_ms, noise_end_ms))."""
    first = compose(SENTENCES[1])
    gap = silence(2.5)
    noise = _noise(0.2)
    wav = np.concatenate([first, gap, noise, gap, compose(SENTENCES[2])]).astype(np.float32)
    begin_ms = (len(first) + len(gap)) // 16
    return wav, (begin_ms, begin_ms + len(noise) // 16)


def _stats(client, model):
    s = client.statistics(model)["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


def test_graph_answers_zero_tokens_for_a_row_that_never_fires(repository):
    """The exported graph itself: a one-frame row alone, and padded next to a long row."""
    session = ort.InferenceSession(str(repository / "paraformer" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    from funasr_triton_models.features import AsrFrontend

    frontend = AsrFrontend.from_dir(repository / "feature_extractor" / "1")
    long, short = frontend(compose(SENTENCES[0])), frontend(_noise(0.03))
    assert len(short) == 1

    def run(rows):
        t = max(len(r) for r in rows)
        speech = np.zeros((len(rows), t, 560), np.float32)
        for i, r in enumerate(rows):
            speech[i, :len(r)] = r
        return session.run(None, {
            "speech": speech, "speech_lengths": np.array([len(r) for r in rows], np.int32),
            "hotword_ids": np.ones((len(rows), 1, 1), np.int32), "hotword_lengths": np.ones((len(rows), 1), np.int32)})

    assert run([short])[1].tolist() == [0]
    ids, num, alphas, peaks, _ = run([short, long])
    ref_ids, ref_num, ref_alphas, ref_peaks, _ = run([long])
    assert num[0] == 0 and num[1] == ref_num[0] > 0
    assert np.array_equal(ids[1, :num[1]], ref_ids[0, :ref_num[0]])
    assert np.abs(alphas[1] - ref_alphas[0]).max() < 1e-5 and np.abs(peaks[1] - ref_peaks[0]).max() < 1e-5


def test_asr_empty_row_batched_next_to_speech(client):
    """`asr` (feature_extractor -> paraformer -> asr_decode) on very short / noise-only segments sent
    together with long speech: empty results for those, each speech segment exactly as alone."""
    speech = [compose(SENTENCES[i], 0.3, SENTENCES[i + 4]) for i in range(4)]
    empty = [_noise(0.03), _noise(0.04, seed=1), _noise(0.3, seed=2), np.concatenate([silence(0.2), _noise(0.2, seed=3)])]
    alone = [client.recognize_segment(w) for w in speech]
    assert all(r["text"] and len(r["words"]) == len(r["timestamps"]) > 0 for r in alone)
    inf0, exe0 = _stats(client, "paraformer")
    clips = [w for pair in zip(empty, speech) for w in pair] * 2
    with cf.ThreadPoolExecutor(len(clips)) as pool:
        results = list(pool.map(client.recognize_segment, clips))
    inf1, exe1 = _stats(client, "paraformer")
    assert inf1 - inf0 == len(clips) and exe1 - exe0 < len(clips), "the segments were never batched together"
    for clip, result in zip(clips, results):
        index = next((i for i, w in enumerate(speech) if w is clip), None)
        if index is None:
            assert result == {"text": "", "words": [], "timestamps": [], "logprobs": []}
        else:  # the log-probabilities of a padded batch row equal its own up to float rounding
            assert np.allclose(result.pop("logprobs"), alone[index]["logprobs"], atol=1e-4)
            assert result == {k: v for k, v in alone[index].items() if k != "logprobs"}


def test_pipeline_goes_on_past_a_noise_only_segment(client, speech_noise_speech):
    wav, (noise_begin, noise_end) = speech_noise_speech
    result = client.transcribe(wav)
    segments = result["vad_segments"]
    noise_segments = [s for s in segments if s[0] <= noise_end and s[1] >= noise_begin]
    assert len(segments) == 3 and len(noise_segments) == 1, segments
    (nb, ne), = noise_segments
    assert client.recognize_segment(wav[nb * 16:ne * 16])["text"] == ""
    speech_texts = [client.recognize_segment(wav[b * 16:e * 16])["text"] for b, e in segments if [b, e] != [nb, ne]]
    assert all(speech_texts)
    assert result["raw_text"] == " ".join(speech_texts)
    assert result["text"]
    words = [t for s in result["sentences"] for t in s["timestamps"]]
    assert words and not [t for t in words if t[1] > nb and t[0] < ne], "words inside the noise segment"


def test_two_pass_stream_goes_on_past_a_noise_only_sentence(client, speech_noise_speech):
    wav, (noise_begin, noise_end) = speech_noise_speech
    stream = client.open_stream({})
    events = []
    for i in range(0, wav.shape[0], 9600):
        events += stream.send(wav[i:i + 9600])
    events += stream.send(np.zeros(0, np.float32), end=True)
    ends = [e for e in events if e["event"] == "sentence_end"]
    noise = [e for e in ends if e["begin_ms"] <= noise_end and e["end_ms"] >= noise_begin]
    assert len(noise) == 1, [(e["begin_ms"], e["end_ms"]) for e in ends]
    assert noise[0]["text"] == noise[0]["raw_text"] == "" and noise[0]["words"] == []
    later = [e for e in ends if e["begin_ms"] > noise[0]["end_ms"]]
    assert later and all(e["text"] and e["words"] for e in later)
    for e in later:  # 2-pass: exactly the offline decode of its span
        assert e["raw_text"] == client.recognize_segment(wav[e["begin_ms"] * 16:e["end_ms"] * 16])["text"]


def test_verify_on_a_noise_only_segment(triton, repository, cli_env, tmp_path, speech_noise_speech):
    """AutoModel answers [] for the noise segment; verify compares that as empty text."""
    wav, _ = speech_noise_speech
    path = write_wav(tmp_path / "speech_noise_speech.wav", wav)
    out = subprocess.run(["funasr-triton", "--log-level", "WARNING", "verify", "--json", "--url", triton.grpc_url,
                          "--repository", str(repository), str(path)],
                         capture_output=True, text=True, env=cli_env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(v["failures"] for v in report.values()), report
    assert report["vad"]["checks"] == 1 and report["pipeline"]["checks"] == 1
    assert report["asr"]["checks"] == report["asr+hotwords"]["checks"] == 3  # two speech segments and the noise
