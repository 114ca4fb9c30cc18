"""Hotword strings -> token-id rows for SeACo-Paraformer (``SeacoParaformer.generate_hotwords_list``
of funasr 1.4.16: words through seg_dict into tokens), numpy only."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

_CJK_OR_DIGITS = re.compile(r"^[\u4E00-\u9FA50-9]+$")


# hotwords per request, the default of every model that takes them (feature_extractor, pipeline, transcribe,
# streaming_asr: their `max_hotwords`); the frontend's LIMITS__MAX_HOTWORDS is the same number
MAX_HOTWORDS = 50


class HotwordTokenizer:
    """Hotword words → token-id rows, exactly as SeacoParaformer builds its hotword list."""

    def __init__(self, tokens: list[str], seg_dict: dict[str, str] | None, sos: int = 1,
                 unk: str = "<unk>", max_hotwords: int = MAX_HOTWORDS, max_hotword_tokens: int = 32):
        self.token_to_id = {t: i for i, t in enumerate(tokens)}
        self.unk_id = self.token_to_id.get(unk, len(tokens) - 1)
        self.seg_dict = seg_dict
        self.sos = sos
        self.max_hotwords = max_hotwords
        self.max_hotword_tokens = max_hotword_tokens

    @classmethod
    def from_dir(cls, model_dir: Path, **limits) -> "HotwordTokenizer":
        model_dir = Path(model_dir)
        tokens = json.loads((model_dir / "tokens.json").read_text(encoding="utf-8"))
        conf = json.loads((model_dir / "asr.json").read_text(encoding="utf-8"))
        seg_path = model_dir / "seg_dict"
        seg_dict = None
        if seg_path.exists():
            seg_dict = {}
            for line in seg_path.read_text(encoding="utf-8").splitlines():
                parts = line.strip().split()
                if parts:
                    seg_dict[parts[0]] = " ".join(parts[1:])
        return cls(tokens, seg_dict, sos=conf.get("sos", 1), **limits)

    def _segment(self, word: str) -> list[str]:
        if self.seg_dict is None:
            return [word]
        out: list[str] = []
        w = word.lower()
        if w in self.seg_dict:
            out.extend(self.seg_dict[w].split())
        elif _CJK_OR_DIGITS.match(w):
            for ch in w:
                out.extend(self.seg_dict[ch].split() if ch in self.seg_dict else ["<unk>"])
        else:
            out.append("<unk>")
        return out

    def __call__(self, hotwords: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return ids [N, K] (0-padded) and lengths [N]; the last row is the no-bias <s> entry.

        An empty list gives the single <s> row, which the graph reads as "no hotwords".
        """
        words = [w for h in hotwords for w in h.split()]
        if len(words) > self.max_hotwords:
            raise ValueError(f"{len(words)} hotwords given; at most {self.max_hotwords} are allowed")
        rows = []
        for w in words:
            ids = [self.token_to_id.get(t, self.unk_id) for t in self._segment(w)]
            if len(ids) > self.max_hotword_tokens:
                raise ValueError(f"hotword {w!r} is longer than {self.max_hotword_tokens} tokens")
            rows.append(ids)
        rows.append([self.sos])
        k = max(len(r) for r in rows)
        ids = np.zeros((len(rows), k), dtype=np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        return ids, np.array([len(r) for r in rows], dtype=np.int32)
