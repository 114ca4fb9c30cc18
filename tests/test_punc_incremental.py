"""Incremental punctuation (CtPunctuator.punctuate_step, the punc model's STATE/FINAL) == whole text.

The text is cut into pieces in many ways (seeded random sizes, one character at a time, whole
segments, empty pieces, FINAL alone on an empty piece); the committed parts of all steps,
concatenated, must be exactly `punctuate(whole)` (text, words, punc_ids), which test_punc_port.py
checks against funasr's AutoModel. Served: the same through the real embedded Triton.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.test_punc_port import CHARS, _rand_text, ct_punc, env  # noqa: F401 - env is a fixture

ENGLISH = ["hello", "world", "the", "and", "HELLO", "ai", "ok", "app", "don't", "ai2024", "x"]


def _feed(punc, pieces, final_alone: bool = False):
    """Run the pieces through punctuate_step (state through JSON, as the served model sends it).

    Returns ((text, words, punc_ids) concatenated, the largest JSON state, the states).
    """
    state = None
    text, words, ids = "", [], []
    states = []
    steps = [(p, False) for p in pieces] if final_alone else [(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]
    if final_alone or not steps:
        steps.append(("", True))
    for piece, final in steps:
        result, state = punc.punctuate_step(state, piece, final)
        assert isinstance(result, ct_punc.PuncResult)
        assert len(result.words) == len(result.punc_ids)
        assert all(isinstance(x, int) for x in result.punc_ids)
        text, words, ids = text + result.text, words + result.words, ids + result.punc_ids
        if final:
            assert state is None
        else:
            encoded = json.dumps(state, ensure_ascii=False, separators=(",", ":"))
            states.append(encoded)
            state = json.loads(encoded)
    return (text, words, ids), max(map(len, states), default=0), states


def _random_pieces(text: str, seed: int) -> list[str]:
    r = random.Random(seed)
    sizes = r.choice([[0, 1, 1, 2, 3], [1, 5, 20, 60], [0, 7, 13, 40, 150]])
    pieces, i = [], 0
    while i < len(text):
        n = r.choice(sizes)
        pieces.append(text[i:i + n])
        i += n
    return pieces


def _segments(text: str) -> list[str]:
    """Whole whitespace-separated segments, each with the space before the next one."""
    pieces, start = [], 0
    for i, c in enumerate(text):
        if c.isspace() and i > start:
            pieces.append(text[start:i])
            start = i
    pieces.append(text[start:])
    return pieces


def _splits(text: str, seeds=range(12)):
    """(name, pieces, final_alone) for the ways a text is cut into pieces."""
    yield "one_piece", [text], False
    yield "one_piece_then_final", [text], True
    yield "chars", list(text), False
    yield "chars_then_final", list(text), True
    yield "segments", _segments(text), False
    yield "empty_pieces", [p for c in text for p in ("", c, "")], True
    for seed in seeds:
        yield f"random{seed}", _random_pieces(text, seed), bool(seed % 2)


def _mixed_text(n: int, seed: int) -> str:
    r = random.Random(seed)
    parts = []
    for _ in range(n):
        x = r.random()
        if x < 0.2:
            parts.append(r.choice(ENGLISH))
        elif x < 0.25:
            parts.append(r.choice(["，", "。", "？", "😀", "１２", "Ω"]))
        else:
            parts.append("".join(r.choice(CHARS) for _ in range(r.randint(1, 4))))
    seps = [" ", " ", "", "\u3000", "  ", "\n"]
    return "".join(p + r.choice(seps) for p in parts)


def _forced_text(stable: dict, n: int, seed: int) -> str:
    """No sentence end for 200+ words, a comma character every 23: funasr's cache_pop rule fires."""
    r = random.Random(seed)
    plain, comma = stable[1], stable[2]
    assert len(plain) > 50 and len(comma) > 20, "random model lost its stable-class characters"
    return "".join(r.choice(comma) if i % 23 == 11 else r.choice(plain) for i in range(n))


def _texts(stable: dict) -> dict:
    return {
        "chinese_300": _rand_text(300, 31),
        "mixed_words": _mixed_text(120, 32),
        "long_1500": _rand_text(1500, 33),
        "cache_pop_700": _forced_text(stable, 700, 34),
        "glued_ascii": "hello" + _rand_text(5, 35) + "ai2024world" + _rand_text(22, 36) + "ok the end",
        "edge_spaces": "  \t" + _rand_text(19, 37) + " hello\u3000" + _rand_text(21, 38) + " world  \n",
        "exactly_20": _rand_text(20, 39),
        "exactly_40": _rand_text(40, 40),
        "single_char": CHARS[5],
        "single_ascii": "a",
        "whitespace_only": " \u3000\n ",
        "empty": "",
    }


TEXT_NAMES = list(_texts({1: ["x"] * 51, 2: ["x"] * 21}).keys())


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_incremental_equals_whole(env, name):
    text = _texts(env.stable)[name]
    whole = env.punc.punctuate(text)
    for split, pieces, final_alone in _splits(text):
        assert "".join(pieces) == text
        got, _, _ = _feed(env.punc, pieces, final_alone)
        assert got == (whole.text, whole.words, whole.punc_ids), f"{name} split {split}"


def test_cache_pop_rule_is_crossed(env):
    """The long texts above really carry over many mini-sentences and cut at commas after 200 words."""
    texts = _texts(env.stable)
    forced = env.punc.punctuate(texts["cache_pop_700"])
    comma = set(env.stable[2])
    cut = [i for i, (w, p) in enumerate(zip(forced.words[:-1], forced.punc_ids[:-1])) if p == 3 and w in comma]
    assert len(cut) >= 2, "the 200-word rule turned fewer than two commas into periods"
    long = env.punc.punctuate(texts["long_1500"])
    assert long.punc_ids.count(3) + long.punc_ids.count(4) > 10


def test_state_stays_small(env):
    """The state holds the carry, under split_size pending words and a short tail: its JSON size
    does not grow with the text."""
    punc = env.punc
    largest = {}
    for n in (1500, 6000):
        text = _rand_text(n, 50) + " " + _mixed_text(n // 4, 51)
        whole = punc.punctuate(text)
        got, largest[n], states = _feed(punc, _random_pieces(text, 52))
        assert got == (whole.text, whole.words, whole.punc_ids)
        for encoded in states:
            state = json.loads(encoded)
            assert set(state) == {"v", "tail", "cont", "cache", "pending"}
            assert len(state["pending"]) <= punc.split_size
            assert len(state["cache"]) <= punc.cache_pop_trigger_limit + 2 * punc.split_size
            assert len(state["tail"]) < 16
    # at most ~260 short words in JSON, plus the tail: the same bound for both lengths
    assert max(largest.values()) < 4096, largest


def test_ascii_word_across_pieces(env):
    """A word split between pieces is one word, as in the whole text."""
    punc = env.punc
    text = _rand_text(25, 60) + "hel" + "lo" + _rand_text(3, 61)
    whole = punc.punctuate(text)
    assert "hello" in whole.words
    pieces = [text[:27], text[27:28], text[28:30], text[30:]]
    got, _, states = _feed(punc, pieces, final_alone=True)
    assert got == (whole.text, whole.words, whole.punc_ids)
    # kept back: the next piece may go on with the word
    assert [json.loads(s)["tail"] for s in states[:3]] == ["he", "hel", "hello"]


def test_final_on_empty_piece(env):
    punc = env.punc
    assert punc.punctuate_step(None, "", True) == (ct_punc.PuncResult("", [], []), None)
    text = _rand_text(45, 62)
    result, state = punc.punctuate_step(None, text, False)
    assert len(state["pending"]) == 5  # two mini-sentences are known not to be the last
    rest, end = punc.punctuate_step(state, "", True)
    whole = punc.punctuate(text)
    assert end is None and result.text + rest.text == whole.text and rest.text[-1] in "。？"
    assert result.punc_ids + rest.punc_ids == whole.punc_ids


@pytest.mark.parametrize("bad", [
    [], "x", {"v": 1}, {"v": 2, "tail": "", "cont": False, "cache": [], "pending": []},
    {"v": True, "tail": "", "cont": False, "cache": [], "pending": []},
    {"v": 1, "tail": 3, "cont": False, "cache": [], "pending": []},
    {"v": 1, "tail": "\ud800", "cont": False, "cache": [], "pending": []},
    {"v": 1, "tail": "", "cont": 0, "cache": [], "pending": []},
    {"v": 1, "tail": "", "cont": False, "cache": [""], "pending": []},
    {"v": 1, "tail": "", "cont": False, "cache": [], "pending": [1]},
    {"v": 1, "tail": "", "cont": False, "cache": [], "pending": ["x"] * 21},
    {"v": 1, "tail": "", "cont": False, "cache": [], "pending": [], "extra": 1},
])
def test_malformed_state(env, bad):
    with pytest.raises(ct_punc.PuncStateError):
        env.punc.punctuate_step(bad, "你好", False)


# -- jieba (word-level models such as the real ct-punc) ---------------------------------------------


@pytest.fixture(scope="module")
def jieba_env(tmp_path_factory):
    jieba = pytest.importorskip("jieba")
    from funasr_triton_export.exporters.punc import export_punc
    from funasr_triton_export.testmodels.ct_punc import build

    r = random.Random(3)
    words = ["".join(r.choice(CHARS) for _ in range(r.randint(2, 4))) for _ in range(40)]
    base = tmp_path_factory.mktemp("punc_jieba")
    out_dir = base / "1"
    export_punc(build(base / "hub", seed=1, jieba_words=words), out_dir)
    dict_txt = Path(jieba.__file__).parent / "dict.txt"
    with open(dict_txt, encoding="utf-8") as f:
        dictionary = [line.split()[0] for line in f]
    return words, [w for w in dictionary if len(w) >= 2][::7], out_dir


def _jieba_text(r: random.Random, user_words, dict_words, n: int, marks: bool) -> str:
    """Text jieba really has to segment: user-dictionary words, jieba-dictionary words, single
    characters, and (with marks) English words, spaces and marks (hard boundaries)."""
    parts = []
    for _ in range(n):
        x = r.random()
        if x < 0.3:
            parts.append(r.choice(user_words))
        elif x < 0.7:
            parts.append(r.choice(dict_words))
        elif x < 0.8 and marks:
            parts.append(r.choice([" hello ", " world", "ai ", "2024", "，", "。", " don't ", "A", "T"]))
        else:
            parts.append(r.choice(CHARS))
        if marks and r.random() < 0.05:
            parts.append(" ")
    return "".join(parts)


class _Recording:
    """Records the mini-sentences (word lists) a punctuator gives its model."""

    def __init__(self, punc):
        self.calls: list[list[str]] = []
        encode = punc.encode

        def record(words):
            self.calls.append(list(words))
            return encode(words)

        punc.encode = record

    def take(self) -> list[list[str]]:
        calls, self.calls = self.calls, []
        return calls


def test_jieba_incremental_equals_whole(jieba_env):
    user_words, dict_words, out_dir = jieba_env
    punc = ct_punc.CtPunctuator(out_dir)
    assert punc.jieba is not None
    # words are expanded to characters in the output: compare the model's inputs (jieba words) too
    model_inputs = _Recording(punc)
    r = random.Random(8)
    expanded = 0
    for k in range(24):
        text = _jieba_text(r, user_words, dict_words, r.randint(20, 250), marks=bool(k % 2))
        tokens = ct_punc.split_words(text, punc.jieba)
        assert punc._tokenize(text, False, True)[0] == tokens  # the positional tokenizer is funasr's
        expanded += sum(ct_punc._is_jieba_expanded(t) for t in tokens)
        whole = punc.punctuate(text)
        whole_inputs = model_inputs.take()
        for split, pieces, final_alone in _splits(text, seeds=range(4)):
            got, largest, _ = _feed(punc, pieces, final_alone)
            assert got == (whole.text, whole.words, whole.punc_ids), f"text {k} split {split}"
            assert model_inputs.take() == whole_inputs, f"text {k} split {split}"
            assert largest < 4096
    assert expanded > 100, "jieba never produced multi-character words"


def test_jieba_hard_boundaries_commit_everything(jieba_env):
    """After a complete English word, or before a character jieba never joins (，), the tail
    starts exactly there: nothing before it is kept back."""
    user_words, _, out_dir = jieba_env
    punc = ct_punc.CtPunctuator(out_dir)
    text = "".join(user_words[:4]) + " hello "
    _, state = punc.punctuate_step(None, text, False)
    assert state["tail"].strip() == "" and state["pending"][-1] == "hello"
    text = "".join(user_words[:4]) + "，" + user_words[5]
    _, state = punc.punctuate_step(None, text, False)
    assert state["tail"] == "，" + user_words[5] and state["cont"] is True


def test_jieba_short_tail_stays_consistent(jieba_env):
    """What is not guaranteed: with too short a kept-back tail jieba's words can differ from the
    whole text's, but every character is still committed exactly once, in order."""
    user_words, dict_words, out_dir = jieba_env
    punc = ct_punc.CtPunctuator(out_dir, jieba_tail_chars=1)
    model_inputs = _Recording(punc)
    r = random.Random(9)
    differ = 0
    for _ in range(12):
        text = _jieba_text(r, user_words, dict_words, 120, marks=False)
        punc.punctuate(text)
        whole_words = [w for call in model_inputs.take() for w in call]
        got, _, _ = _feed(punc, _random_pieces(text, r.randint(0, 99)))
        assert "".join(got[1]) == "".join(text.split())
        words = [w for call in model_inputs.take() for w in call]
        differ += words != whole_words
    assert differ > 0, "a 1-character tail should sometimes cut jieba words differently"


# -- served: the punc model's STATE/FINAL through the embedded Triton ----------------------------------

OUTPUTS = ["PUNC_TEXT", "WORDS", "PUNC_IDS", "PUNC_MARKS", "STATE"]


def _infer(url: str, text: str, state: str | None = None, final: bool | None = None) -> dict:
    import tritonclient.grpc as grpcclient

    inputs = [grpcclient.InferInput("TEXT", [1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([text.encode("utf-8")], dtype=object))
    if state is not None:
        inputs.append(grpcclient.InferInput("STATE", [1], "BYTES"))
        inputs[-1].set_data_from_numpy(np.array([state.encode("utf-8")], dtype=object))
    if final is not None:
        inputs.append(grpcclient.InferInput("FINAL", [1], "BOOL"))
        inputs[-1].set_data_from_numpy(np.array([final], dtype=bool))
    client = grpcclient.InferenceServerClient(url)
    try:
        res = client.infer("punc", inputs, outputs=[grpcclient.InferRequestedOutput(o) for o in OUTPUTS])
    finally:
        client.close()

    def strs(name):
        return [v.decode("utf-8") for v in res.as_numpy(name).reshape(-1)]

    return {"text": strs("PUNC_TEXT")[0], "words": strs("WORDS"), "ids": res.as_numpy("PUNC_IDS").tolist(),
            "marks": strs("PUNC_MARKS"), "state": strs("STATE")[0]}


def _served_stream(url: str, pieces: list[str], final_alone: bool = False) -> dict:
    out = {"text": "", "words": [], "ids": [], "marks": []}
    state = ""
    if final_alone:
        steps = [(p, False) for p in pieces] + [("", True)]
    else:
        steps = [(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]
    for n, (piece, final) in enumerate(steps):
        if n == 0:  # no STATE: FINAL alone selects incremental mode
            res = _infer(url, piece, final=final)
        elif final or n % 2:
            res = _infer(url, piece, state=state, final=final)
        else:  # FINAL left out: false
            res = _infer(url, piece, state=state)
        for key in out:
            out[key] += res[key]
        state = res["state"]
        assert (state == "") == final
    return out


@pytest.fixture(scope="module")
def served_texts():
    return {"long": _rand_text(700, 70) + " hello world " + _rand_text(90, 71),
            "mixed": _mixed_text(80, 72), "short": _rand_text(7, 73)}


def test_served_whole_text_mode_unchanged(triton, repository, served_texts):
    punc = ct_punc.CtPunctuator(repository / "punc" / "1")
    for text in served_texts.values():
        res = _infer(triton.grpc_url, text)
        ref = punc.punctuate(text)
        assert (res["text"], res["words"], res["ids"]) == (ref.text, ref.words, ref.punc_ids)
        assert len(res["marks"]) == len(res["words"]) and res["state"] == ""


def test_served_incremental_equals_whole(triton, served_texts):
    for name, text in served_texts.items():
        whole = _infer(triton.grpc_url, text)
        del whole["state"]
        for pieces, final_alone in ((_random_pieces(text, 1), False), (_random_pieces(text, 2), True),
                                    (_segments(text), True), ([text], False)):
            assert _served_stream(triton.grpc_url, pieces, final_alone) == whole, name


def test_served_bad_state_fails_alone(triton, served_texts):
    from tritonclient.utils import InferenceServerException

    url = triton.grpc_url
    text = served_texts["long"]
    whole = _infer(url, text)
    first = _infer(url, text[:300], final=False)
    bad_states = ["not json", "[]", '{"v": 99}', "[" * 100000 + "]" * 100000,
                  json.dumps({"v": 1, "tail": "", "cont": False, "cache": [], "pending": ["x"] * 99})]
    for bad in bad_states:
        with pytest.raises(InferenceServerException) as err:
            _infer(url, text[300:], state=bad, final=True)
        assert "INVALID_ARG" in str(err.value.status()) and "STATE" in err.value.message()
    with pytest.raises(InferenceServerException) as err:  # max_text_chars counts the state's tail
        big = json.dumps({"v": 1, "tail": "a" * 60000, "cont": False, "cache": [], "pending": []})
        _infer(url, "b" * 50000, state=big, final=True)
    assert "INVALID_ARG" in str(err.value.status()) and "max_text_chars" in err.value.message()
    # the stream the bad requests interrupted goes on unharmed
    rest = _infer(url, text[300:], state=first["state"], final=True)
    assert first["text"] + rest["text"] == whole["text"]
    assert first["words"] + rest["words"] == whole["words"] and first["ids"] + rest["ids"] == whole["ids"]
    assert triton.server.is_ready()
