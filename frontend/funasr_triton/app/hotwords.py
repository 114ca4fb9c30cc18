"""Hotwords from a file (one per line, optional weight after it), re-read when the file changes."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import AsrError
from .inputs import is_uint

log = logging.getLogger(__name__)


class HotwordFile:
    def __init__(self, path: Path | None):
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._words: list[str] = []

    def words(self) -> list[str]:
        if self.path is None:
            return []
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._words = None, []
            return []
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            words = []
            for line in Path(self.path).read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if parts and not parts[0].startswith("#"):
                    # "词 20": SeACo has no per-word weight; the word is taken, the weight accepted and ignored
                    words.append(parts[0])
            self._stamp, self._words = stamp, words
            log.info("hotword file loaded", extra={"fields": {"path": str(self.path), "count": len(words)}})
        return list(self._words)


def parse_hotwords(text: str | None) -> list[str]:
    """Request hotwords: space/comma/newline separated; "词 20" weights and JSON {"词": 20} accepted."""
    if not text:
        return []
    text = text.strip()
    if text.startswith("{"):
        from .inputs import loads

        try:
            return [str(k) for k in loads(text)]
        except ValueError:
            pass
    words = []
    for token in text.replace(",", " ").replace("，", " ").split():
        if not is_uint(token.lstrip("-").replace(".", "", 1)):  # skip weights (ASCII numbers only: "²" is a word)
            words.append(token)
    return words


def check_hotword(word: str, limits, param: str = "hotwords") -> str:
    """The length rule of one hotword (`limits.max_hotword_chars`); `param` names where it came from."""
    if len(word) > limits.max_hotword_chars:
        shown = word if len(word) <= 40 else word[:40] + "…"
        raise AsrError(f"hotword {shown!r} is longer than {limits.max_hotword_chars} characters",
                       400, "hotword_too_long", param)
    return word


def check_hotwords(words: list[str], limits, what: str = "request + hotword file", param: str = "hotwords") -> list[str]:
    """The hotword limits (`check_hotword` for each, `limits.max_hotwords` for the count), for requests and
    stored vocabularies alike. Returns the words without blanks and repeats, in order."""
    unique: list[str] = []
    for w in words:
        if w and w not in unique:
            unique.append(w)
    for w in unique:
        check_hotword(w, limits, param)
    if len(unique) > limits.max_hotwords:
        raise AsrError(f"{len(unique)} hotwords ({what}); at most {limits.max_hotwords}", 400, "too_many_hotwords",
                       param)
    return unique
