"""Parsing of caller-supplied text that must never raise anything but ValueError: JSON with a bounded
nesting depth (deep nesting would raise RecursionError, a 500) and plain ASCII integers ("²".isdigit()
is true, but int("²") fails)."""
from __future__ import annotations

import json
import re

MAX_JSON_DEPTH = 32
_STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def json_depth(text: str) -> int:
    """The deepest nesting of objects/arrays in `text` (strings skipped); cheap, never recursive."""
    depth = deepest = 0
    for ch in _STRING.sub("", text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(text: str | bytes, max_depth: int = MAX_JSON_DEPTH):
    """json.loads for caller input: ValueError for anything that is not JSON nested at most `max_depth` deep."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if json_depth(text) > max_depth:
        raise ValueError(f"JSON nested more than {max_depth} deep")
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise ValueError("JSON nested too deep") from None


def is_uint(text: str) -> bool:
    """True for a plain non-negative ASCII decimal integer ("12"; not "²", "١٢", "+1", " 1")."""
    return text.isascii() and text.isdigit()


def check_speakers(num: int | None, low: int | None, high: int | None,
                   names: tuple[str, str, str] = ("num_speakers", "min_speakers", "max_speakers")) -> None:
    """Speaker-count options that contradict each other are the caller's parameter error (named), found
    before any audio is decoded."""
    from ..errors import AsrError

    num_name, low_name, high_name = names
    if low is not None and high is not None and low > high:
        raise AsrError(f"{low_name} ({low}) is greater than {high_name} ({high})", 400, "invalid_value", high_name)
    if num is not None and low is not None and num < low:
        raise AsrError(f"{num_name} ({num}) is less than {low_name} ({low})", 400, "invalid_value", num_name)
    if num is not None and high is not None and num > high:
        raise AsrError(f"{num_name} ({num}) is greater than {high_name} ({high})", 400, "invalid_value", num_name)
