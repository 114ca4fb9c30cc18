"""SeACo's attention-score hotword filter (FunASR `nfilter=50`) in the exported graph.

With more than 50 entries (hotwords plus the trailing `<s>` no-bias entry) FunASR scores every entry
by the attention the sixth SeACo decoder block pays it (`seaco_decoder.forward_asf6`, summed over heads
and tokens), keeps the 50 best and appends `<s>` again; the SeACo decoder then attends over those only.
The served graph must decode exactly as AutoModel at 49 (no filter), 50 (filter on: 51 entries) and 60
hotwords. The tiny test model's SeACo decoder has FunASR's default six attention blocks (att_layer_num),
so `decoders[5]` exists as in the released model.
"""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from tests.synth import SENTENCES, compose

from funasr_triton_models.asr_text import decode
from funasr_triton_models.features import AsrFrontend
from funasr_triton_models.hotwords import HotwordTokenizer


def _hotwords(tokens: list[str], n: int) -> list[str]:
    """n distinct two-character words: the characters of the test sentences first (they score high
    where they are spoken), then random CJK tokens (they score low)."""
    spoken = [c for s in SENTENCES for c in s if "\u4e00" <= c <= "\u9fff"]
    cjk = [t for t in tokens if len(t) == 1 and "\u4e00" <= t <= "\u9fff"]
    rng = np.random.default_rng(0)
    words: list[str] = []
    for i in range(0, len(spoken) - 1, 2):
        w = spoken[i] + spoken[i + 1]
        if w not in words:
            words.append(w)
        if len(words) >= n // 2:
            break
    while len(words) < n:
        w = "".join(rng.choice(cjk, 2))
        if w not in words:
            words.append(w)
    return words


@pytest.fixture(scope="module")
def served(repository):
    fe_dir = repository / "feature_extractor" / "1"
    return {
        "session": ort.InferenceSession(str(repository / "paraformer" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]),
        "frontend": AsrFrontend.from_dir(fe_dir),
        "hotwords": HotwordTokenizer.from_dir(fe_dir, max_hotwords=100),
        "tokens": json.loads((repository / "asr_decode" / "1" / "tokens.json").read_text(encoding="utf-8")),
    }


@pytest.fixture(scope="module")
def automodel(repository):
    from funasr_triton_export.verify import _automodel, _silence_funasr, _source_dirs

    model = _automodel(_source_dirs(repository, {})["asr"])
    _silence_funasr()
    assert len(model.model.seaco_decoder.decoders) >= 6  # forward_asf6 reads decoders[5]
    return model


def _served_text(served, wav: np.ndarray, hotwords: list[str], batch_with: np.ndarray | None = None) -> str:
    ids, lengths = served["hotwords"](hotwords)
    rows = [served["frontend"](wav)] + ([served["frontend"](batch_with)] if batch_with is not None else [])
    t = max(len(r) for r in rows)
    speech = np.zeros((len(rows), t, 560), np.float32)
    for i, r in enumerate(rows):
        speech[i, : len(r)] = r
    b = len(rows)
    out = served["session"].run(None, {
        "speech": speech, "speech_lengths": np.array([len(r) for r in rows], np.int32),
        "hotword_ids": np.repeat(ids[None], b, 0), "hotword_lengths": np.repeat(lengths[None], b, 0)})
    frames = 3 * len(rows[0])
    text, _, _ = decode(out[0][0], out[1][0], served["tokens"], out[2][0][:frames], out[3][0][:frames])
    return text


CLIPS = [compose(SENTENCES[i], 0.3, SENTENCES[i + 1]) for i in range(0, 8, 2)]


@pytest.mark.parametrize("n", [49, 50, 60])
def test_graph_equals_automodel_with_many_hotwords(served, automodel, n):
    words = _hotwords(served["tokens"], n)
    assert len(words) == n
    for k, wav in enumerate(CLIPS):
        ref = automodel.generate(input=wav, hotword=" ".join(words))
        ref_text = ref[0]["text"] if ref else ""
        assert _served_text(served, wav, words) == ref_text, (n, k)


def test_filter_is_per_segment_and_padding_invariant(served):
    """Each row is filtered by its own scores: a segment decodes the same alone or padded in a batch."""
    words = _hotwords(served["tokens"], 60)
    for wav in CLIPS[:2]:
        assert _served_text(served, wav, words) == _served_text(served, wav, words, batch_with=CLIPS[3])
