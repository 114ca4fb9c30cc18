"""Paraformer input features, numpy only (no torch, no funasr).

Mirrors funasr 1.4.16 `WavFrontend` (kaldi fbank on samples ×32768, LFR stacking, CMVN from
am.mvn) and `SeacoParaformer.generate_hotwords_list` (hotword string → token ids via seg_dict).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np

_CJK_OR_DIGITS = re.compile(r"^[\u4E00-\u9FA50-9]+$")


def load_cmvn(path: Path) -> np.ndarray:
    """[2, dim]: row 0 = <AddShift> (added), row 1 = <Rescale> (multiplied)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    shift = scale = None
    for i, line in enumerate(lines):
        head = line.split()
        if not head or i + 1 >= len(lines):
            continue
        values = lines[i + 1].split()
        if values and values[0] == "<LearnRateCoef>":
            if head[0] == "<AddShift>":
                shift = values[3:-1]
            elif head[0] == "<Rescale>":
                scale = values[3:-1]
    if shift is None or scale is None:
        raise ValueError(f"{path}: no <AddShift>/<Rescale> blocks")
    return np.array([shift, scale], dtype=np.float32)


def apply_lfr(feats: np.ndarray, lfr_m: int, lfr_n: int) -> np.ndarray:
    """Stack lfr_m frames every lfr_n frames: (lfr_m-1)//2 copies of frame 0 in front, last frame repeated."""
    t = feats.shape[0]
    t_lfr = int(np.ceil(t / lfr_n))
    left = (lfr_m - 1) // 2
    padded = np.vstack([np.repeat(feats[:1], left, axis=0), feats]) if left else feats
    need = (t_lfr - 1) * lfr_n + lfr_m
    if padded.shape[0] < need:
        padded = np.vstack([padded, np.repeat(padded[-1:], need - padded.shape[0], axis=0)])
    idx = np.arange(t_lfr)[:, None] * lfr_n + np.arange(lfr_m)[None, :]
    return padded[idx].reshape(t_lfr, lfr_m * feats.shape[1]).astype(np.float32)


@dataclass(frozen=True)
class FrontendOptions:
    fs: int = 16000
    window: str = "hamming"
    n_mels: int = 80
    frame_length: float = 25.0
    frame_shift: float = 10.0
    lfr_m: int = 7
    lfr_n: int = 6
    dither: float = 0.0


class AsrFrontend:
    def __init__(self, options: FrontendOptions, cmvn: np.ndarray | None):
        self.options = options
        self.cmvn = cmvn

    @classmethod
    def from_dir(cls, model_dir: Path) -> "AsrFrontend":
        model_dir = Path(model_dir)
        conf = json.loads((model_dir / "asr.json").read_text(encoding="utf-8"))
        cmvn_path = model_dir / "am.mvn"
        return cls(FrontendOptions(**conf["frontend"]), load_cmvn(cmvn_path) if cmvn_path.exists() else None)

    def fbank(self, wav: np.ndarray) -> np.ndarray:
        o = self.options
        opts = knf.FbankOptions()
        opts.frame_opts.samp_freq = o.fs
        opts.frame_opts.dither = o.dither
        opts.frame_opts.window_type = o.window
        opts.frame_opts.frame_shift_ms = float(o.frame_shift)
        # funasr shortens the window for clips shorter than one frame
        opts.frame_opts.frame_length_ms = float(min(o.frame_length, len(wav) / o.fs * 1000))
        opts.frame_opts.snip_edges = True
        opts.mel_opts.num_bins = o.n_mels
        opts.energy_floor = 0.0
        fb = knf.OnlineFbank(opts)
        fb.accept_waveform(o.fs, (wav.astype(np.float32) * 32768.0).tolist())
        fb.input_finished()
        n = fb.num_frames_ready
        if n == 0:
            return np.zeros((0, o.n_mels), dtype=np.float32)
        return np.stack([fb.get_frame(i) for i in range(n)]).astype(np.float32)

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        """16 kHz float samples in [-1, 1] → [T_lfr, n_mels*lfr_m] features."""
        feats = self.fbank(wav)
        if feats.shape[0] == 0:
            return np.zeros((0, self.options.n_mels * self.options.lfr_m), dtype=np.float32)
        if self.options.lfr_m != 1 or self.options.lfr_n != 1:
            feats = apply_lfr(feats, self.options.lfr_m, self.options.lfr_n)
        if self.cmvn is not None:
            dim = feats.shape[1]
            feats = (feats + self.cmvn[0:1, :dim]) * self.cmvn[1:2, :dim]
        return feats.astype(np.float32)


class HotwordTokenizer:
    """Hotword words → token-id rows, exactly as SeacoParaformer builds its hotword list."""

    def __init__(self, tokens: list[str], seg_dict: dict[str, str] | None, sos: int = 1,
                 unk: str = "<unk>", max_hotwords: int = 50, max_hotword_tokens: int = 32):
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
