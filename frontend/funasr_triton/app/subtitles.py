"""SRT and WebVTT from a Transcript: pure code, integer milliseconds throughout.

Cues come from the Transcript's sentences, then (settings.subtitles):
1. sentences longer than `max_chars` are split at word boundaries, each part timed by its own words;
2. neighbours closer than `merge_gap_ms` are merged while the text stays within `merge_max_chars`
   (never across speakers);
3. cues shorter than `min_cue_ms` are extended, but never into the next cue;
4. `speaker_template` prefixes the text of cues whose sentence has a speaker.
Timestamps are formatted from integer ms (11540 -> 00:00:11,540): no float ever rounds a time.
No cue has empty text; VTT cue text escapes `&`, `<` and `>`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .config import SubtitleSettings
from ..contract import Sentence, Transcript

_SPACE = re.compile(r"\s+")
_BREAK_AFTER = set("，,、；;：:。.！!？?")


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str
    speaker: str | None = None


def _cjk(ch: str) -> bool:
    return "\u3000" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uff00" <= ch <= "\uffef"


def _join(a: str, b: str) -> str:
    """Join two texts: no space between CJK characters (or before CJK punctuation), one space otherwise."""
    if not a or not b:
        return a + b
    return a + ("" if _cjk(a[-1]) or _cjk(b[0]) else " ") + b


def _clean(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def format_timestamp(ms: int, separator: str = ",") -> str:
    """Integer milliseconds -> HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (VTT); hours grow past 99 if needed."""
    ms = max(0, int(ms))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def _word_spans(text: str, words: list[str]) -> list[tuple[int, int]] | None:
    """Character span of each word in `text`, found in order; None if any word is missing."""
    lowered, pos, spans = text.lower(), 0, []
    for w in words:
        w = w.strip().lower()
        if not w:
            return None
        at = lowered.find(w, pos)
        if at < 0:
            return None
        spans.append((at, at + len(w)))
        pos = at + len(w)
    return spans


def _pick_cut(text: str, begin: int, cuts: list[int], budget: int) -> int | None:
    """Index into `cuts` of the best cut for a part starting at `begin`: the last one that fits,
    or an earlier one right after punctuation if that keeps at least half the budget."""
    fitting = []
    for i, c in enumerate(cuts):
        if len(text[begin:c].strip()) > budget:
            break
        fitting.append(i)
    if not fitting:
        return None
    for i in reversed(fitting):
        part = text[begin:cuts[i]].rstrip()
        if part and part[-1] in _BREAK_AFTER and len(part.strip()) >= budget / 2:
            return i
    return fitting[-1]


def _split_by_words(s: Sentence, text: str, budget: int) -> list[tuple[int, int, str]] | None:
    spans = _word_spans(text, [w.text for w in s.words])
    if not spans:
        return None
    # a part may end after word i, i.e. where word i+1 begins (punctuation stays with the left part)
    cuts = [spans[i + 1][0] for i in range(len(spans) - 1)] + [len(text)]
    parts, begin, first = [], 0, 0
    while first < len(spans):
        i = _pick_cut(text, begin, cuts[first:], budget)
        last = first + (0 if i is None else i)  # a single word longer than the budget stays whole
        part = text[begin:cuts[last]].strip()
        start = s.start_ms if first == 0 else s.words[first].start_ms
        end = s.end_ms if last == len(spans) - 1 else s.words[last].end_ms
        if part:
            parts.append((start, max(start, end), part))
        begin, first = cuts[last], last + 1
    return parts


def _split_by_chars(s: Sentence, text: str, budget: int) -> list[tuple[int, int, str]]:
    """No usable words: split at spaces or between CJK characters, time proportional to characters."""
    tokens = re.findall(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]|[^\s\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]+", text)
    pieces, cur = [], ""
    for tok in tokens:
        joined = _join(cur, tok)
        if cur and len(joined) > budget:
            pieces.append(cur)
            cur = tok
        else:
            cur = joined
    if cur:
        pieces.append(cur)
    total = sum(len(p) for p in pieces) or 1
    span, done, parts = max(0, s.end_ms - s.start_ms), 0, []
    for p in pieces:
        start = s.start_ms + span * done // total
        done += len(p)
        parts.append((start, s.start_ms + span * done // total, p))
    return parts


def sentence_cues(s: Sentence, opts: SubtitleSettings) -> list[Cue]:
    text = _clean(s.text)
    if not text:
        return []
    prefix = opts.speaker_template.replace("{speaker}", s.speaker) if s.speaker else ""
    budget = max(1, opts.max_chars - len(prefix))
    if len(text) <= budget:
        return [Cue(s.start_ms, max(s.start_ms, s.end_ms), text, s.speaker)]
    parts = _split_by_words(s, text, budget) or _split_by_chars(s, text, budget)
    return [Cue(a, b, t, s.speaker) for a, b, t in parts if t]


def _merge(cues: list[Cue], opts: SubtitleSettings) -> list[Cue]:
    out: list[Cue] = []
    for cue in cues:
        prev = out[-1] if out else None
        if (prev is not None and prev.speaker == cue.speaker and cue.start_ms - prev.end_ms < opts.merge_gap_ms
                and len(_join(prev.text, cue.text)) <= opts.merge_max_chars):
            out[-1] = Cue(prev.start_ms, max(prev.end_ms, cue.end_ms), _join(prev.text, cue.text), prev.speaker)
        else:
            out.append(cue)
    return out


def _extend_short(cues: list[Cue], min_ms: int) -> list[Cue]:
    out = []
    for i, cue in enumerate(cues):
        if cue.end_ms - cue.start_ms < min_ms:
            end = cue.start_ms + min_ms
            if i + 1 < len(cues):
                end = min(end, max(cue.end_ms, cues[i + 1].start_ms))
            cue = replace(cue, end_ms=end)
        out.append(cue)
    return out


def build_cues(sentences: list[Sentence], opts: SubtitleSettings) -> list[Cue]:
    """Sentences -> final cues (split, merged, extended, speaker-prefixed); never an empty cue."""
    cues = [c for s in sorted(sentences, key=lambda s: (s.start_ms, s.end_ms)) for c in sentence_cues(s, opts)]
    cues = _extend_short(_merge(cues, opts), opts.min_cue_ms)
    return [replace(c, text=opts.speaker_template.replace("{speaker}", c.speaker) + c.text) if c.speaker else c
            for c in cues]


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_srt(cues: list[Cue]) -> str:
    return "".join(f"{i}\n{format_timestamp(c.start_ms, ',')} --> {format_timestamp(c.end_ms, ',')}\n{c.text}\n\n"
                   for i, c in enumerate(cues, 1))


def render_vtt(cues: list[Cue]) -> str:
    body = "".join(f"{format_timestamp(c.start_ms, '.')} --> {format_timestamp(c.end_ms, '.')}\n{_vtt_escape(c.text)}\n\n"
                   for c in cues)
    return "WEBVTT\n\n" + body


def to_srt(transcript: Transcript, opts: SubtitleSettings) -> str:
    return render_srt(build_cues(transcript.sentences, opts))


def to_vtt(transcript: Transcript, opts: SubtitleSettings) -> str:
    return render_vtt(build_cues(transcript.sentences, opts))
