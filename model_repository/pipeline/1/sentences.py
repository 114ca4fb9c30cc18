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


def _sentence(words, stamps, marks, with_timestamps, speaker=None):
    s = {"start_ms": int(stamps[0][0]), "end_ms": int(stamps[-1][1]), "text": join_words(words, marks)}
    if speaker is not None:
        s["speaker"] = int(speaker)
    if with_timestamps:
        s["words"] = list(words)
        s["timestamps"] = [list(map(int, t)) for t in stamps]
    return s


def word_stamps(a: dict) -> list[list[int]]:
    """Word timestamps; spread evenly over the segment in the rare case funasr's post-processing
    returned fewer stamps than words, so no word is ever dropped."""
    n = len(a["words"])
    if len(a["timestamps"]) == n:
        return a["timestamps"]
    b, e = a["start_ms"], a["end_ms"]
    return [[b + (e - b) * i // n, b + (e - b) * (i + 1) // n] for i in range(n)]


def assemble(asr: list[dict], punc: dict | None, duration_ms: int, with_timestamps: bool = True,
             speakers: list[int] | None = None) -> dict:
    """asr: per VAD segment {start_ms, end_ms, text, words, timestamps (absolute ms)}.

    Sentences end at sentence-final punctuation when punctuation is on and its words align with the
    ASR words one to one, otherwise at VAD segment ends; with `speakers` (one per word) a sentence is
    also split where the speaker changes.
    """
    items = [(w, t, seg) for seg, a in enumerate(asr) for w, t in zip(a["words"], word_stamps(a))]
    aligned = punc is not None and len(punc["words"]) == len(items)
    marks = punc["marks"] if aligned else [""] * len(items)
    sentences: list[dict] = []
    cur: list[int] = []

    def flush():
        if cur:
            sentences.append(_sentence([items[i][0] for i in cur], [items[i][1] for i in cur],
                                       [marks[i] for i in cur] if aligned else None, with_timestamps,
                                       speakers[cur[0]] if speakers is not None else None))
            cur.clear()

    for i in range(len(items)):
        if cur:
            prev = cur[-1]
            boundary = (marks[prev] and marks[prev][-1] in SENTENCE_END) if aligned else items[prev][2] != items[i][2]
            if boundary or (speakers is not None and speakers[prev] != speakers[i]):
                flush()
        cur.append(i)
    flush()
    text = punc["text"] if punc is not None else join_texts([join_words(a["words"]) for a in asr])
    result = {
        "text": text,
        "duration_ms": int(duration_ms),
        "sentences": sentences,
        "vad_segments": [[a["start_ms"], a["end_ms"]] for a in asr],
    }
    if speakers is not None:
        result["num_speakers"] = len(set(speakers))
    return result
