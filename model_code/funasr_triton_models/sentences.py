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


def token_logprobs(words: list[str], logprobs: list[float] | None) -> list[dict]:
    """[{token, logprob}] per recognised word (`asr`'s WORD_LOGPROBS; 0.0 where a word has none)."""
    logprobs = list(logprobs or [])
    return [{"token": w, "logprob": round(float(logprobs[i]), 6) if i < len(logprobs) else 0.0}
            for i, w in enumerate(words)]


def _sentence(words, stamps, marks, with_timestamps, speaker=None, logprobs=None):
    s = {"start_ms": int(stamps[0][0]), "end_ms": int(stamps[-1][1]), "text": join_words(words, marks)}
    if speaker is not None:
        s["speaker"] = int(speaker)
    if with_timestamps:
        s["words"] = list(words)
        s["timestamps"] = [list(map(int, t)) for t in stamps]
    if logprobs is not None:
        s["logprobs"] = list(logprobs)
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
    # with logprobs (LongFileJob's `logprobs` option): one {token, logprob} per word, carried into its sentence
    lps = [lp for a in asr for lp in a["logprobs"]] if asr and all("logprobs" in a for a in asr) else None
    aligned = punc is not None and len(punc["words"]) == len(items)
    marks = punc["marks"] if aligned else [""] * len(items)
    sentences: list[dict] = []
    cur: list[int] = []

    def flush():
        if cur:
            sentences.append(_sentence([items[i][0] for i in cur], [items[i][1] for i in cur],
                                       [marks[i] for i in cur] if aligned else None, with_timestamps,
                                       speakers[cur[0]] if speakers is not None else None,
                                       [lps[i] for i in cur] if lps is not None else None))
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
        "num_words": len(items),  # also without timestamps, when sentences carry no words
    }
    if speakers is not None:
        result["num_speakers"] = len(set(speakers))
    return result


def split_sentences(text: str) -> tuple[list[str], str]:
    """Cut text after each sentence-final mark: (finished sentences, the unfinished rest). Whitespace
    after a mark goes with the next sentence, so the parts concatenate to `text` exactly."""
    done, start = [], 0
    for i, ch in enumerate(text):
        if ch in SENTENCE_END and (i + 1 == len(text) or text[i + 1] not in SENTENCE_END):
            done.append(text[start:i + 1])
            start = i + 1
    return done, text[start:]


def _word_spans(words: list[str], text: str) -> list[list[int]] | None:
    """[start, end) of each word in text: a word's span runs from its first character (the first
    word's from 0) to the next word's first character, so its marks and spaces go with it and the
    spans tile the text. None when the words are not found in order (then ITN keeps no word timing)."""
    starts, pos = [], 0
    for w in words:
        at = text.find(w, pos) if w else pos
        if at < 0:
            return None
        starts.append(at)
        pos = at + len(w)
    if not starts:
        return []
    starts[0] = 0
    return [[s, e] for s, e in zip(starts, starts[1:] + [len(text)])]


def itn_sentence(sentence: dict, new_text: str) -> dict:
    """The sentence with its text replaced by its ITN'd form, words and word timestamps realigned.

    The text and new_text are aligned by a character diff (difflib). Words the diff leaves untouched
    keep their text and timestamps; each run of consecutive words a change touches (三 点 一 四 → 3.14)
    becomes one word, whose text is what the run became (without the punctuation that followed it)
    and whose timestamps span the run's first start to its last end. start_ms/end_ms stay as they are.
    `logprobs` ({token, logprob} per word) follow the words: a merged word's is the sum of the run's.
    """
    import difflib

    old = sentence["text"]
    out = dict(sentence, text=new_text)
    if new_text == old or "words" not in sentence:
        return out
    words, stamps = sentence["words"], sentence["timestamps"]
    spans = _word_spans(words, old)
    if not spans:
        out["words"] = [new_text.strip()] if new_text.strip() else []
        out["timestamps"] = [[sentence["start_ms"], sentence["end_ms"]]] if out["words"] else []
        if sentence.get("logprobs") is not None:
            out["logprobs"] = [{"token": w, "logprob": round(sum(x["logprob"] for x in sentence["logprobs"]), 6)}
                               for w in out["words"]]
        return out
    ops = difflib.SequenceMatcher(None, old, new_text, autojunk=False).get_opcodes()
    changed = [False] * len(words)

    def word_at(p: int) -> int:
        for k, (s, e) in enumerate(spans):
            if s <= p < e:
                return k
        return len(spans) - 1

    for tag, i1, i2, _, _ in ops:
        if tag == "equal":
            continue
        if i1 == i2:  # an insertion touches the words on both sides of it
            for p in (i1 - 1, i1):
                if 0 <= p < len(old):
                    changed[word_at(p)] = True
        else:
            for k in range(word_at(i1), word_at(i2 - 1) + 1):
                changed[k] = True

    def mapped(p: int) -> int:
        """Position p of the old text in the new one (p is never inside a changed stretch)."""
        if p >= len(old):
            return len(new_text)
        for tag, i1, i2, j1, _ in ops:
            if i1 <= p < i2:
                return j1 + (p - i1) if tag == "equal" else j1
        return len(new_text)

    lps = sentence.get("logprobs")
    lps = lps if lps is not None and len(lps) == len(words) else None
    new_words, new_stamps, new_lps = [], [], []
    k = 0
    while k < len(words):
        if not changed[k]:
            new_words.append(words[k])
            new_stamps.append(list(stamps[k]))
            if lps is not None:
                new_lps.append(lps[k])
            k += 1
            continue
        end = k
        while end + 1 < len(words) and changed[end + 1]:
            end += 1
        piece = new_text[mapped(spans[k][0]):mapped(spans[end][1])]
        # the characters that followed the last word (its marks and spaces) are not part of the word
        tail = old[spans[end][0] + len(words[end]):spans[end][1]]
        if tail and piece.endswith(tail):
            piece = piece[:-len(tail)]
        piece = piece.strip()
        if piece:
            new_words.append(piece)
            new_stamps.append([stamps[k][0], stamps[end][1]])
            if lps is not None:  # the rewritten word: the joint log-probability of the words it replaced
                new_lps.append({"token": piece, "logprob": round(sum(x["logprob"] for x in lps[k:end + 1]), 6)})
        k = end + 1
    out["words"], out["timestamps"] = new_words, new_stamps
    if lps is not None:
        out["logprobs"] = new_lps
    return out
