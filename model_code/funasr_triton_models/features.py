"""The wav frontends of the ports, numpy + kaldi-native-fbank only (no torch, no funasr).

One of each piece of funasr 1.4.16's ``funasr/frontends/wav_frontend.py``:

* ``load_cmvn`` (am.mvn), ``kaldi_fbank_options``/``kaldi_fbank`` (``kaldi.fbank`` as funasr calls it),
  ``apply_lfr`` (``WavFrontendOnline.apply_lfr``, with its splice cache);
* :class:`OnlineFrontend`: ``WavFrontendOnline.forward`` chunk by chunk, the state of each stream in a
  :class:`FrontendState`; used by the FSMN-VAD (with the aligned waveform it needs for dB) and by the
  streaming Paraformer;
* :class:`AsrFrontend`: ``WavFrontend`` (offline, one whole segment): the Paraformer's and SenseVoice's
  features. Its LFR is ``apply_lfr`` over the whole segment with the first frame repeated in front,
  which is what the online frontend does on a final chunk.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def load_cmvn(path: str | Path) -> np.ndarray:
    """funasr ``wav_frontend.load_cmvn``: [2, D] float32 (row 0 ``<AddShift>``, row 1 ``<Rescale>``)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    means: list[str] = []
    scales: list[str] = []
    for i, line in enumerate(lines):
        items = line.split()
        if not items or i + 1 >= len(lines):
            continue
        if items[0] in ("<AddShift>", "<Rescale>"):
            nxt = lines[i + 1].split()
            if nxt and nxt[0] == "<LearnRateCoef>":
                values = nxt[3 : len(nxt) - 1]
                if items[0] == "<AddShift>":
                    means = values
                else:
                    scales = values
    if not means or len(means) != len(scales):
        raise ValueError(f"{path}: no <AddShift>/<Rescale> vectors of equal length found")
    return np.array([np.array(means, dtype=np.float32), np.array(scales, dtype=np.float32)])


def kaldi_fbank_options(fs: int, frame_length: float, frame_shift: float, dither: float, window: str,
                        n_mels: int):
    """``kaldi.fbank`` options as funasr's WavFrontendOnline calls it (funasr/utils/fbank.py, the
    kaldi-native-fbank fallback)."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = float(fs)
    opts.frame_opts.frame_length_ms = float(frame_length)
    opts.frame_opts.frame_shift_ms = float(frame_shift)
    opts.frame_opts.dither = float(dither)
    opts.frame_opts.snip_edges = True
    opts.frame_opts.window_type = window
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.frame_opts.round_to_power_of_two = True
    opts.mel_opts.num_bins = int(n_mels)
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    opts.energy_floor = 0.0
    opts.raw_energy = True
    opts.use_energy = False
    opts.use_log_fbank = True
    opts.use_power = True
    opts.htk_compat = False
    return opts


def kaldi_fbank(opts, samples: np.ndarray) -> np.ndarray:
    """Log-mel fbank [frames, num_bins] float32 of `samples` with `kaldi_fbank_options` (0 frames if too short)."""
    import kaldi_native_fbank as knf

    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(float(opts.frame_opts.samp_freq), samples)
    fb.input_finished()
    n = fb.num_frames_ready
    if n == 0:
        return np.zeros((0, int(opts.mel_opts.num_bins)), dtype=np.float32)
    return np.stack([fb.get_frame(i) for i in range(n)]).astype(np.float32, copy=False)


def apply_lfr(inputs: np.ndarray, m: int, n: int, is_final: bool) -> tuple[np.ndarray, np.ndarray]:
    """``WavFrontendOnline.apply_lfr`` (batch 1): (LFR frames, new splice cache)."""
    t = inputs.shape[0]
    t_lfr = int(np.ceil((t - (m - 1) // 2) / n))
    splice_idx = t_lfr
    rows = t_lfr
    last_idx = (t - m) // n + 1
    num_padding = m - (t - last_idx * n)
    padded = inputs
    if is_final:
        if num_padding > 0:
            num_padding = (2 * m - 2 * t + (t_lfr - 1 + last_idx) * n) / 2 * (t_lfr - last_idx)
            padded = np.vstack([inputs] + [inputs[-1:]] * int(num_padding))
    elif num_padding > 0:
        rows = last_idx
        splice_idx = last_idx
    splice_idx = min(t - 1, splice_idx * n)
    rows = max(rows, 0)
    # torch's as_strided((rows, m*D), (n*D, 1)) over the (padded) storage
    index = np.arange(rows)[:, None] * n + np.arange(m)[None, :]
    if rows and index[-1, -1] >= padded.shape[0]:
        raise RuntimeError("LFR window runs past the available fbank frames")
    out = padded[index].reshape(rows, m * inputs.shape[1])
    return out.astype(np.float32, copy=False), inputs[splice_idx:]




def apply_cmvn(feats: np.ndarray, cmvn: np.ndarray | None) -> np.ndarray:
    """``(feats + shift) * scale`` over the first ``feats.shape[1]`` dims of a ``load_cmvn`` array."""
    if cmvn is None:
        return feats
    dim = feats.shape[1]
    return (feats + cmvn[0:1, :dim]) * cmvn[1:2, :dim]


class FrontendState:
    """One stream's ``WavFrontendOnline`` cache: the leftover samples (``input_cache``), the LFR splice
    frames (``lfr_splice_cache``) and, for :meth:`OnlineFrontend.accept_aligned`, the waveform span not
    yet aligned to emitted frames (``waveform_buffer``)."""

    __slots__ = ("input_cache", "lfr_splice_cache", "waveform_buffer", "waveform_buffer_start_sample",
                 "emitted_lfr_frames")

    def __init__(self) -> None:
        self.input_cache = np.zeros(0, dtype=np.float32)
        self.lfr_splice_cache: np.ndarray | None = None
        self.waveform_buffer: np.ndarray | None = None
        self.waveform_buffer_start_sample = 0
        self.emitted_lfr_frames = 0


class OnlineFrontend:
    """funasr ``WavFrontendOnline.forward`` (batch 1), one call per chunk; the state is a :class:`FrontendState`.

    ``frontend_conf`` is the model's (``fs``, ``window``, ``n_mels``, ``frame_length``, ``frame_shift``,
    ``lfr_m``, ``lfr_n``, ``dither``); missing keys take funasr's ``WavFrontendOnline`` defaults.
    """

    def __init__(self, frontend_conf: Mapping[str, Any], cmvn: np.ndarray | None):
        self.fs = int(frontend_conf.get("fs", 16000))
        self.window = str(frontend_conf.get("window", "hamming"))
        self.n_mels = int(frontend_conf.get("n_mels", 80))
        self.frame_length = frontend_conf.get("frame_length", 25)
        self.frame_shift = frontend_conf.get("frame_shift", 10)
        self.lfr_m = int(frontend_conf.get("lfr_m", 1))
        self.lfr_n = int(frontend_conf.get("lfr_n", 1))
        self.dither = float(frontend_conf.get("dither", 1.0))
        self.frame_sample_length = int(self.frame_length * self.fs / 1000)
        self.frame_shift_sample_length = int(self.frame_shift * self.fs / 1000)
        self.cmvn = cmvn
        self.feats_dim = self.n_mels * self.lfr_m
        self._opts = kaldi_fbank_options(self.fs, self.frame_length, self.frame_shift, self.dither,
                                         self.window, self.n_mels)

    def _frame_num(self, sample_length: int) -> int:
        """``WavFrontendOnline.compute_frame_num``."""
        frame_num = int((sample_length - self.frame_sample_length) / self.frame_shift_sample_length + 1)
        return frame_num if frame_num >= 1 and sample_length >= self.frame_sample_length else 0

    def _lfr_cmvn(self, state: FrontendState, feats: np.ndarray, is_final: bool) -> np.ndarray:
        """``WavFrontendOnline.forward_lfr_cmvn`` (batch 1)."""
        if self.lfr_m != 1 or self.lfr_n != 1:
            feats, splice_cache = apply_lfr(feats, self.lfr_m, self.lfr_n, is_final)
            state.lfr_splice_cache = splice_cache.copy()  # a few rows; a view would keep the chunk's fbank
        return np.ascontiguousarray(apply_cmvn(feats, self.cmvn), dtype=np.float32)

    def accept(self, state: FrontendState, chunk: np.ndarray, is_final: bool) -> np.ndarray:
        """LFR+CMVN feats [T, n_mels * lfr_m] emitted for this chunk (T may be 0)."""
        empty = np.zeros((0, self.feats_dim), dtype=np.float32)
        # forward_fbank
        samples = np.concatenate((state.input_cache, chunk))
        frame_num = self._frame_num(samples.shape[0])
        state.input_cache = samples[frame_num * self.frame_shift_sample_length:].copy()  # not a view of `samples`
        fbank = kaldi_fbank(self._opts, samples * np.float32(1 << 15)) if frame_num else None
        if fbank is not None and fbank.shape[0] > 0:
            if state.lfr_splice_cache is None:  # initialise the splice cache with the 1st frame
                state.lfr_splice_cache = np.repeat(fbank[:1], (self.lfr_m - 1) // 2, axis=0)
            if is_final or fbank.shape[0] + state.lfr_splice_cache.shape[0] >= self.lfr_m:
                return self._lfr_cmvn(state, np.vstack((state.lfr_splice_cache, fbank)), is_final)
            state.lfr_splice_cache = np.vstack((state.lfr_splice_cache, fbank))
            return empty
        if is_final and state.lfr_splice_cache is not None and state.lfr_splice_cache.shape[0]:
            return self._lfr_cmvn(state, state.lfr_splice_cache, is_final)
        return empty

    def accept_aligned(self, state: FrontendState, chunk: np.ndarray, is_final: bool) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`accept` with ``return_waveform=True``: (feats [T, D], the exact waveform span they cover
        (``aligned_waveforms``), which the VAD uses for dB)."""
        if chunk.shape[0] > 0:
            state.waveform_buffer = (
                chunk.copy() if state.waveform_buffer is None
                else np.concatenate((state.waveform_buffer, chunk))
            )
        feats = self.accept(state, chunk, is_final)
        if feats.shape[0] == 0:
            return feats, np.zeros(0, dtype=np.float32)
        score_frame_shift = self.lfr_n * self.frame_shift_sample_length
        aligned_start = state.emitted_lfr_frames * score_frame_shift
        aligned_end = aligned_start + (feats.shape[0] - 1) * score_frame_shift + self.frame_sample_length
        buffer = state.waveform_buffer
        buffer_start = state.waveform_buffer_start_sample
        buffer_end = buffer_start + (0 if buffer is None else buffer.shape[0])
        if buffer is None or aligned_start < buffer_start or aligned_end > buffer_end:
            raise RuntimeError(
                f"frontend emitted frames without enough samples: need [{aligned_start}, "
                f"{aligned_end}), have [{buffer_start}, {buffer_end})"
            )
        aligned = buffer[aligned_start - buffer_start: aligned_end - buffer_start]
        state.emitted_lfr_frames += feats.shape[0]
        next_start = min(state.emitted_lfr_frames * score_frame_shift, buffer_end)
        state.waveform_buffer = buffer[next_start - buffer_start:].copy()  # not a view of the whole buffer
        state.waveform_buffer_start_sample = next_start
        return feats, aligned


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
    """funasr ``WavFrontend`` (offline): kaldi fbank on samples x32768, LFR stacking, CMVN from am.mvn."""

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
        # funasr shortens the window for clips shorter than one frame
        frame_length = min(o.frame_length, len(wav) / o.fs * 1000)
        opts = kaldi_fbank_options(o.fs, frame_length, o.frame_shift, o.dither, o.window, o.n_mels)
        return kaldi_fbank(opts, wav.astype(np.float32) * np.float32(32768.0))

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        """16 kHz float samples in [-1, 1] → [T_lfr, n_mels*lfr_m] features."""
        o = self.options
        feats = self.fbank(wav)
        if feats.shape[0] == 0:
            return np.zeros((0, o.n_mels * o.lfr_m), dtype=np.float32)
        if o.lfr_m != 1 or o.lfr_n != 1:  # the whole segment is one final chunk, spliced with frame 0 in front
            feats, _ = apply_lfr(np.vstack([np.repeat(feats[:1], (o.lfr_m - 1) // 2, axis=0), feats]),
                                 o.lfr_m, o.lfr_n, is_final=True)
        return apply_cmvn(feats, self.cmvn).astype(np.float32)
