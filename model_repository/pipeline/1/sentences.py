"""Assemble per-segment ASR results and punctuation into the pipeline's result (pure python)."""
from __future__ import annotations

import re

SENTENCE_END = set("。？！?!.")
_TAG = re.compile(r"<\|[^|]*\|>")


def _cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff"


def join_texts(texts: list[str]) -> str:
    """Join segment texts as FunASR's AutoModel does before punctuation (no space between CJK)."""
    cleaned = [t for t in (_TAG.sub("", x).strip() for x in texts) if t]
    if not cleaned:
        return ""
    joined = cleaned[0]
    for t in cleaned[1:]:
        joined += ("" if _cjk(joined[-1]) and _cjk(t[0]) else " ") + t
    return joined


def join_words(words: list[str], marks: list[str] | None = None) -> str:
    out = ""
    for i, w in enumerate(words):
        if out and not _cjk(out[-1]) and out[-1] not in "，。？！、,?!." and not _cjk(w[0]):
            out += " "
        elif out and out[-1] in ",?!." and not _cjk(w[0]):
            out += " "
        out += w
        if marks is not None and marks[i]:
            out += marks[i]
    return out


def _sentence(words, stamps, marks, with_timestamps, fallback_span):
    start, end = (stamps[0][0], stamps[-1][1]) if stamps else fallback_span
    s = {"start_ms": int(start), "end_ms": int(end), "text": join_words(words, marks)}
    if with_timestamps:
        s["words"] = list(words)
        s["timestamps"] = [list(map(int, t)) for t in stamps]
    return s


def assemble(asr: list[dict], punc: dict | None, duration_ms: int, with_timestamps: bool = True) -> dict:
    """asr: per VAD segment {start_ms, end_ms, text, words, timestamps (absolute ms)}.

    Sentences split at sentence-final punctuation when punctuation is on and its words align with
    the ASR words one to one; otherwise one sentence per VAD segment.
    """
    words = [w for a in asr for w in a["words"]]
    stamps = [t for a in asr for t in a["timestamps"]]
    sentences: list[dict] = []
    aligned = punc is not None and len(punc["words"]) == len(words) and len(stamps) == len(words)
    if aligned:
        cur_w, cur_t, cur_m = [], [], []
        for w, t, m in zip(words, stamps, punc["marks"]):
            cur_w.append(w)
            cur_t.append(t)
            cur_m.append(m)
            if m and m[-1] in SENTENCE_END:
                sentences.append(_sentence(cur_w, cur_t, cur_m, with_timestamps, None))
                cur_w, cur_t, cur_m = [], [], []
        if cur_w:
            sentences.append(_sentence(cur_w, cur_t, cur_m, with_timestamps, None))
    else:
        for a in asr:
            if a["words"]:
                sentences.append(_sentence(
                    a["words"], a["timestamps"] if len(a["timestamps"]) == len(a["words"]) else [],
                    None, with_timestamps, (a["start_ms"], a["end_ms"])))
    text = punc["text"] if punc is not None else join_texts([join_words(a["words"]) for a in asr])
    return {
        "text": text,
        "duration_ms": int(duration_ms),
        "sentences": sentences,
        "vad_segments": [[a["start_ms"], a["end_ms"]] for a in asr],
    }
