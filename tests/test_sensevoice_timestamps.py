"""SenseVoice token timestamps (funasr_triton_models.ctc_align) against funasr 1.4.16's own:
the forced alignment against funasr's `ctc_forced_align`, and the whole computation on the model's own CTC
logits against AutoModel(SenseVoiceSmall, output_timestamp=True) on the same random test weights (equal).
The served path (Triton, ONNX logits) against AutoModel is in test_sensevoice_serving.py."""
from __future__ import annotations

import numpy as np
import pytest

from funasr_triton_models.ctc_align import forced_align, log_softmax, token_timestamps
from tests.conftest import CACHE
from tests.synth import SENTENCES, compose


def test_forced_align_equals_funasr():
    """Random emissions, with ties (rounded scores), blank among the targets and paths too short for them."""
    import torch
    from funasr.models.sense_voice.utils.ctc_alignment import ctc_forced_align

    rng = np.random.default_rng(0)
    for k in range(300):
        frames, vocab = int(rng.integers(1, 60)), int(rng.integers(2, 12))
        n = int(rng.integers(1, frames // 2 + 3))
        lp = log_softmax(rng.normal(size=(frames, vocab)) * 3)
        if k % 3 == 0:
            lp = np.round(lp).astype(np.float32)
        targets = rng.integers(0 if k % 5 == 0 else 1, vocab, size=n).tolist()
        ref = ctc_forced_align(torch.from_numpy(lp)[None], torch.tensor(targets)[None], torch.tensor([frames]),
                               torch.tensor([n]))[0].numpy()
        assert forced_align(lp, targets).tolist() == ref.tolist(), (k, targets)


def test_log_softmax_matches_torch():
    import torch

    x = np.random.default_rng(1).normal(size=(7, 300)).astype(np.float32) * 20
    np.testing.assert_allclose(log_softmax(x), torch.log_softmax(torch.from_numpy(x), -1).numpy(), atol=1e-5)


@pytest.fixture(scope="module")
def source():
    from funasr_triton_export.sources import build_test_model

    return build_test_model("sensevoice", CACHE / "test").path


@pytest.fixture(scope="module")
def sp(source):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(source / "chn_jpn_yue_eng_ko_spectok.bpe.model"))


@pytest.fixture(scope="module")
def reference(source):
    from funasr_triton_export.exporters.sensevoice import reference_model

    return reference_model(source)


def _automodel(reference, wav, language, itn):
    """AutoModel's result with output_timestamp (None where funasr raises IndexError) and the CTC logits
    and length its encoder produced for it."""
    captured = {}
    hook = reference.model.encoder.register_forward_hook(lambda _m, _a, out: captured.update(out=out))
    try:
        res = reference.generate(input=wav, language=language, use_itn=itn, output_timestamp=True)[0]
    except IndexError:
        res = None
    finally:
        hook.remove()
    encoder_out, lengths = captured["out"]
    if isinstance(encoder_out, tuple):
        encoder_out = encoder_out[0]
    logits = reference.model.ctc.ctc_lo(encoder_out)[0].detach().numpy()
    return res, logits, int(lengths[0])


CASES = [(i, language, itn) for i in range(4) for language, itn in (("auto", False), ("en", True), ("zh", False))]


def test_token_timestamps_equal_automodel(reference, sp):
    """On the logits AutoModel's own encoder produced, the numpy path answers exactly what AutoModel
    answers: the same words, the same [start, end] ms (or no timing where AutoModel has none or fails)."""
    timed = 0
    for i, language, itn in CASES:
        wav = compose(0.1, SENTENCES[i % len(SENTENCES)], 0.1).astype(np.float32)
        ref, logits, length = _automodel(reference, wav, language, itn)
        got = token_timestamps(logits, length, sp.DecodeIds(_greedy(logits, length)), sp,
                               blank_id=reference.model.blank_id)
        case = (i, language, itn)
        if ref is None:
            assert got is None, case  # funasr's IndexError: the served model keeps segment-level timing
            continue
        assert sp.DecodeIds(_greedy(logits, length)) == ref["text"], case
        if "timestamp" not in ref:
            assert got == ([], []), case
            continue
        assert got == (ref["words"], ref["timestamp"]), case
        timed += bool(ref["timestamp"])
    assert timed >= len(CASES) // 2  # most cases have token timing to compare


def _greedy(logits, length):
    from funasr_triton_models.sensevoice_text import ctc_greedy

    return ctc_greedy(logits, length, 0)


def test_token_timestamps_no_units(sp):
    """Only the tags (or nothing) decoded: nothing to align."""
    logits = np.zeros((10, sp.get_piece_size()), np.float32)
    assert token_timestamps(logits, 10, "<|en|><|NEUTRAL|><|Speech|><|woitn|>", sp) == ([], [])
    assert token_timestamps(logits, 4, "<|en|><|NEUTRAL|><|Speech|><|woitn|>hello", sp) == ([], [])
