"""The `punc` stage: numpy/onnxruntime port of CTTransformer.inference vs funasr's AutoModel.

A tiny random-weight CT-Transformer (funasr_triton_export.testmodels.ct_punc) is built, exported
with export_punc, and every text must give exactly AutoModel.generate()'s `text` and `punc_array`.
"""
from __future__ import annotations

import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from funasr_triton_export.testmodels.vocab import cjk_chars  # noqa: E402
from funasr_triton_models import ct_punc  # noqa: E402

CHARS = cjk_chars(8000)  # the test vocabulary's CJK characters


def _auto_model(model_dir: Path):
    from funasr import AutoModel

    return AutoModel(model=str(model_dir), disable_update=True, disable_pbar=True, device="cpu")


def _reference(auto, text: str):
    res = auto.generate(input=text)[0]
    arr = res["punc_array"]
    return res["text"], ([] if arr is None else [int(x) for x in arr.reshape(-1).tolist()])


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    from funasr_triton_export.exporters.punc import export_punc
    from funasr_triton_export.testmodels.ct_punc import build

    base = tmp_path_factory.mktemp("punc")
    model_dir = build(base / "hub", seed=0)
    out_dir = base / "1"
    info = export_punc(model_dir, out_dir, quantize=True)
    auto = _auto_model(model_dir)
    return types.SimpleNamespace(
        model_dir=model_dir,
        out_dir=out_dir,
        info=info,
        auto=auto,
        punc=ct_punc.CtPunctuator(out_dir),
        stable=_stable_chars(auto),
    )


def _stable_chars(auto, batches: int = 24) -> dict:
    """class id → characters whose prediction never changed across random contexts.

    With random weights the prediction is mostly decided by the token itself; such characters let
    the tests steer the loop into its rare branches (e.g. no sentence end for 200+ words).
    """
    import torch

    tokenizer = auto.kwargs["tokenizer"]
    gen = torch.Generator().manual_seed(1234)

    def margins(pool: np.ndarray, n_seq: int, length: int) -> np.ndarray:
        """per token id: smallest (own-class logit − best other logit) seen, per class."""
        low = np.full((len(tokenizer.token_list), 6), np.inf)
        with torch.no_grad():
            for _ in range(n_seq // 32):
                x = torch.from_numpy(pool)[torch.randint(0, len(pool), (32, length), generator=gen)]
                y, _ = auto.model.punc_forward(x, torch.full((32,), length, dtype=torch.int32))
                y = y.numpy().reshape(-1, 6)
                ids = x.numpy().ravel()
                for cls in range(6):
                    m = y[:, cls] - np.delete(y, cls, axis=1).max(1)
                    np.minimum.at(low[:, cls], ids, m)
        return low

    ids = np.array([tokenizer.token2id[c] for c in CHARS])
    low = margins(ids, 32 * batches, 60)
    out = {cls: ids[np.isfinite(low[ids, cls]) & (low[ids, cls] > 0.5)] for cls in range(6)}
    # "_" and "，" characters must also stay so in long texts made only of themselves
    for _ in range(3):
        pool = np.concatenate([out[1], out[2]])
        low = margins(pool, 64, 250)
        out[1] = out[1][np.isfinite(low[out[1], 1]) & (low[out[1], 1] > 0.5)]
        out[2] = out[2][np.isfinite(low[out[2], 2]) & (low[out[2], 2] > 0.5)]
    return {cls: [tokenizer.token_list[i] for i in v] for cls, v in out.items()}


def _rand_text(n: int, seed: int, chars=CHARS) -> str:
    r = random.Random(seed)
    return "".join(r.choice(chars) for _ in range(n))


def _texts(stable: dict) -> dict:
    r = random.Random(7)
    plain, comma = stable[1], stable[2]
    assert len(plain) > 50 and len(comma) > 20, "random model lost its stable-class characters"
    forced = "".join(r.choice(comma) if i % 23 == 11 else r.choice(plain) for i in range(250))
    english = ["hello", "world", "the", "and", "HELLO", "ai", "ok", "app"]
    mixed_words = []
    for i in range(70):
        mixed_words.append(r.choice(english) if i % 4 == 0 else _rand_text(r.randint(1, 5), 100 + i))
    return {
        "short": _rand_text(5, 1),
        "20_words": _rand_text(20, 2),
        "21_words": _rand_text(21, 3),
        "45_words": _rand_text(45, 4),
        "120_words": _rand_text(120, 5),
        "400_words": _rand_text(400, 6),
        "250_forced_period": forced,
        "250_no_comma": "".join(r.choice(plain) for _ in range(250)),
        "brief_mixed": "我们用 hello world 测试 ai 模型",
        "vocab_mixed": " ".join(mixed_words),
        "mixed_glued": _rand_text(6, 8) + "hello" + _rand_text(3, 9) + "ai2024" + _rand_text(4, 10) + " the",
        "english_only": "hello world HELLO the and ok",
        "english_trailing_dot": "hello world.",
        "oov": "我们今天去公园散步😀ｱ１２３" + _rand_text(8, 11) + "Ω",
        "own_punctuation": _rand_text(4, 12) + "，" + _rand_text(3, 13) + "。" + _rand_text(5, 14) + "？" + _rand_text(2, 15),
        "unicode_spaces": _rand_text(3, 16) + "\u3000" + _rand_text(3, 17) + "\xa0" + _rand_text(3, 18) + "\n\t" + "ok",
        "single_char": CHARS[1],
        "single_ascii": "a",
        "whitespace_only": "  \t\n \u3000",
        "empty": "",
    }


TEXT_NAMES = list(_texts({1: ["x"] * 51, 2: ["x"] * 21}).keys())


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_port_matches_automodel(env, name):
    text = _texts(env.stable)[name]
    ref_text, ref_punc = _reference(env.auto, text)
    got = env.punc.punctuate(text)
    assert got.text == ref_text
    assert got.punc_ids == ref_punc
    assert len(got.words) == len(got.punc_ids)
    assert all(isinstance(x, int) for x in got.punc_ids)


def test_branches_are_exercised(env):
    """The texts above really hit the carry / forced-period / <unk> branches."""
    texts = _texts(env.stable)
    forced = env.punc.punctuate(texts["250_forced_period"])
    comma = set(env.stable[2])
    # a period on a "comma" character: only the 200-word rule puts one there
    assert any(p == 3 and w in comma for w, p in zip(forced.words[:-1], forced.punc_ids[:-1]))
    no_comma = env.punc.punctuate(texts["250_no_comma"])
    assert set(no_comma.punc_ids[:-1]) == {1} and no_comma.punc_ids[-1] == 3
    long = env.punc.punctuate(texts["400_words"])
    assert {0, 2, 3, 4, 5} <= set(long.punc_ids)  # "<unk>" is emitted as text by funasr too
    assert "<unk>" in long.text


def test_empty_text_skips_onnxruntime(env):
    class Boom:
        def run(self, *a, **k):
            raise AssertionError("ORT must not run for empty text")

    punc = ct_punc.CtPunctuator(env.out_dir)
    punc.session = Boom()
    for text in ("", "   ", "\n\t\u3000"):
        assert punc.punctuate(text) == ct_punc.PuncResult("", [], [])


def test_export_files_and_quantized_model(env):
    import json

    for name in ("model.onnx", "model_quant.onnx", "tokens.json", "punc.json"):
        assert (env.out_dir / name).is_file(), name
    cfg = json.loads((env.out_dir / "punc.json").read_text(encoding="utf-8"))
    assert cfg["punc_list"] == ["<unk>", "_", "，", "。", "？", "、"]
    assert cfg["sentence_end_id"] == 3 and cfg["split_size"] == 20 and cfg["jieba_usr_dict"] is None
    assert env.info["max_abs_diff"] < 1e-4
    quant = ct_punc.CtPunctuator(env.out_dir, model_file="model_quant.onnx")
    text = _rand_text(57, 21) + " hello world"
    got = quant.punctuate(text)
    assert got.words == env.punc.punctuate(text).words
    assert len(got.punc_ids) == len(got.words) and got.text


def test_build_is_deterministic(env, tmp_path):
    from funasr_triton_export.testmodels.ct_punc import build

    again = build(tmp_path / "again", seed=0)
    for name in ("model.pt", "config.yaml", "tokens.json"):
        assert (again / name).read_bytes() == (env.model_dir / name).read_bytes(), name


def test_jieba_model_matches_automodel(tmp_path):
    """Word-level models (the real ct-punc ships jieba_usr_dict): jieba words, expanded punc_array."""
    pytest.importorskip("jieba")
    from funasr_triton_export.exporters.punc import export_punc
    from funasr_triton_export.testmodels.ct_punc import build

    r = random.Random(3)
    words = ["".join(r.choice(CHARS) for _ in range(r.randint(2, 4))) for _ in range(40)]
    model_dir = build(tmp_path / "hub", seed=1, jieba_words=words)
    out_dir = tmp_path / "1"
    info = export_punc(model_dir, out_dir)
    assert info["punc"]["jieba_usr_dict"] == "jieba_usr_dict" and (out_dir / "jieba_usr_dict").is_file()
    auto = _auto_model(model_dir)
    punc = ct_punc.CtPunctuator(out_dir)
    multi = 0
    for i, n in enumerate([3, 12, 30, 60, 150]):
        parts = []
        for _ in range(n):
            x = r.random()
            if x < 0.35:
                parts.append(r.choice(words))
            elif x < 0.5:
                parts.append(r.choice(["hello", "world", "ai", "the", "2024"]))
            else:
                parts.append(r.choice(CHARS))
        text = "".join(parts) if i % 2 else " ".join(parts)
        multi += sum(1 for t in punc.split_words(text) if len(t) > 1 and not t.isascii())
        ref_text, ref_punc = _reference(auto, text)
        got = punc.punctuate(text)
        assert got.text == ref_text
        assert got.punc_ids == ref_punc
        assert len(got.words) == len(got.punc_ids)
    assert multi > 0, "jieba never produced a multi-character word"
