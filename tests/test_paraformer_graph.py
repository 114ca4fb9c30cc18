"""The exported SeACo-Paraformer graph is padding-invariant: a segment decodes the same alone, padded
in a batch next to longer segments, or padded to a length bucket (what the GPU profiles do); so are its
token log-probabilities (tests/test_logprobs.py checks them against FunASR's decoder)."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from tests.synth import SENTENCES, compose

from funasr_triton_models.asr_text import decode
from funasr_triton_models.features import AsrFrontend
from funasr_triton_models.hotwords import HotwordTokenizer


@pytest.fixture(scope="module")
def graph(repository):
    fe_dir = repository / "feature_extractor" / "1"
    return {
        "session": ort.InferenceSession(str(repository / "paraformer" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]),
        "frontend": AsrFrontend.from_dir(fe_dir),
        "hotwords": HotwordTokenizer.from_dir(fe_dir),
        "tokens": json.loads((repository / "asr_decode" / "1" / "tokens.json").read_text(encoding="utf-8")),
    }


def run(graph, feats_list, hotwords, bucket=0, hotword_width=0):
    ids, lengths = graph["hotwords"](hotwords)
    if hotword_width:
        ids = np.pad(ids, ((0, 0), (0, hotword_width - ids.shape[1])))
    t = max(len(f) for f in feats_list)
    if bucket:
        t = -(-t // bucket) * bucket
    speech = np.zeros((len(feats_list), t, 560), np.float32)
    for row, f in enumerate(feats_list):
        speech[row, : len(f)] = f
    b = len(feats_list)
    out = graph["session"].run(None, {
        "speech": speech, "speech_lengths": np.array([len(f) for f in feats_list], np.int32),
        "hotword_ids": np.repeat(ids[None], b, 0), "hotword_lengths": np.repeat(lengths[None], b, 0)})
    results = []
    for row, f in enumerate(feats_list):
        frames = 3 * len(f)
        text, _, stamps = decode(out[0][row], out[1][row], graph["tokens"], out[2][row][:frames], out[3][row][:frames])
        results.append({"text": text, "stamps": stamps, "alphas": out[2][row][:frames],
                        "logprobs": out[4][row][:max(int(out[1][row]), 0)]})
    return results


@pytest.mark.parametrize("hotwords", [[], ["今天", "阿里巴巴", "hello"]], ids=["plain", "hotwords"])
def test_padding_invariance(graph, hotwords):
    feats = [graph["frontend"](compose(SENTENCES[i], 0.2 * i)) for i in range(6)]
    longest = graph["frontend"](compose(SENTENCES[6], 0.7, SENTENCES[7]))
    alone = [run(graph, [f], hotwords)[0] for f in feats]
    batched = run(graph, [*feats, longest], hotwords)[:-1]
    bucketed = run(graph, feats, hotwords, bucket=50, hotword_width=32)
    for a, b, c in zip(alone, batched, bucketed):
        assert a["text"] == b["text"] == c["text"]
        assert a["stamps"] == b["stamps"] == c["stamps"]
        assert np.abs(a["alphas"] - b["alphas"]).max() < 1e-5
        assert np.abs(a["alphas"] - c["alphas"]).max() < 1e-5
        # token_logprobs: one per token, log-probabilities, padding-invariant too
        assert len(a["logprobs"]) == len(b["logprobs"]) == len(c["logprobs"])
        assert np.all(a["logprobs"] <= 0) and np.all(np.isfinite(a["logprobs"]))
        assert np.allclose(a["logprobs"], b["logprobs"], atol=1e-4) and np.allclose(a["logprobs"], c["logprobs"], atol=1e-4)
