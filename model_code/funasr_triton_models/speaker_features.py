"""Speaker-embedding input features, numpy + kaldi-native-fbank only (no torch, no funasr, no torchaudio).

Both served embedding models take torchaudio `compliance.kaldi.fbank` features with per-window mean
subtraction; they differ only in options, which the exporter writes into `embedding.json` ("features"):

* CAM++ (funasr 1.4.16 `funasr/models/campplus/utils.py:extract_feature`):
      feature = Kaldi.fbank(wav.unsqueeze(0), num_mel_bins=80)   # every other option at its default
      feature = feature - feature.mean(dim=0, keepdim=True)
  Samples stay in [-1, 1] (waveform_scale 1): a constant gain only adds a constant to every log-mel
  energy, which the mean subtraction removes, except where the log floor (float eps) clips, so the
  scale is kept exactly as funasr has it. Options are torchaudio's defaults (povey window,
  preemphasis 0.97, low_freq 20, snip_edges), which funasr's kaldi-native-fbank fallback passes through.
* WeSpeaker ResNet34 as pyannote.audio 3.x runs it (`BaseWeSpeakerResNet.compute_fbank`): samples
  ×32768 (waveform_scale), hamming window, 80 bins, then the mean over the window is subtracted.
"""
from __future__ import annotations

import numpy as np

from .features import kaldi_fbank

# torchaudio.compliance.kaldi.fbank defaults + num_mel_bins=80 (CAM++ as funasr's extract_feature calls it)
DEFAULT_OPTIONS = {
    "sample_frequency": 16000.0,
    "num_mel_bins": 80,
    "frame_length": 25.0,
    "frame_shift": 10.0,
    "dither": 0.0,
    "window_type": "povey",
    "preemphasis_coefficient": 0.97,
    "remove_dc_offset": True,
    "round_to_power_of_two": True,
    "snip_edges": True,
    "low_freq": 20.0,
    "high_freq": 0.0,
    "energy_floor": 1.0,
    "raw_energy": True,
    "use_energy": False,
    "use_log_fbank": True,
    "use_power": True,
    "htk_compat": False,
    "waveform_scale": 1.0,  # funasr feeds [-1, 1] samples (no ×32768)
    "subtract_mean": True,
}


def _options(opts: dict | None) -> dict:
    """Accept embedding.json itself, its "features" section, or None (defaults)."""
    opts = opts or {}
    if "features" in opts:
        opts = opts["features"]
    unknown = set(opts) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown speaker feature options: {sorted(unknown)}")
    return {**DEFAULT_OPTIONS, **opts}


def fbank(wav: np.ndarray, opts: dict | None = None) -> np.ndarray:
    """Kaldi log-mel fbank, [frames, num_mel_bins] float32 (0 frames if wav is shorter than one window)."""
    import kaldi_native_fbank as knf  # here: DEFAULT_OPTIONS alone (the exporters') needs numpy only

    o = _options(opts)
    fo = knf.FbankOptions()
    fo.frame_opts.samp_freq = float(o["sample_frequency"])
    fo.frame_opts.frame_length_ms = float(o["frame_length"])
    fo.frame_opts.frame_shift_ms = float(o["frame_shift"])
    fo.frame_opts.dither = float(o["dither"])
    fo.frame_opts.snip_edges = bool(o["snip_edges"])
    fo.frame_opts.window_type = str(o["window_type"])
    fo.frame_opts.preemph_coeff = float(o["preemphasis_coefficient"])
    fo.frame_opts.remove_dc_offset = bool(o["remove_dc_offset"])
    fo.frame_opts.round_to_power_of_two = bool(o["round_to_power_of_two"])
    fo.mel_opts.num_bins = int(o["num_mel_bins"])
    fo.mel_opts.low_freq = float(o["low_freq"])
    fo.mel_opts.high_freq = float(o["high_freq"])
    fo.energy_floor = float(o["energy_floor"])
    fo.raw_energy = bool(o["raw_energy"])
    fo.use_energy = bool(o["use_energy"])
    fo.use_log_fbank = bool(o["use_log_fbank"])
    fo.use_power = bool(o["use_power"])
    fo.htk_compat = bool(o["htk_compat"])

    samples = np.asarray(wav, dtype=np.float32).reshape(-1)
    if o["waveform_scale"] != 1.0:
        samples = samples * np.float32(o["waveform_scale"])
    return kaldi_fbank(fo, samples)


def num_frames(num_samples: int, opts: dict | None = None) -> int:
    """Frames fbank yields for this many samples (snip_edges=True), without computing them."""
    o = _options(opts)
    if not o["snip_edges"]:
        raise ValueError("num_frames only implements snip_edges=True")
    window = int(o["sample_frequency"] * o["frame_length"] * 0.001)
    shift = int(o["sample_frequency"] * o["frame_shift"] * 0.001)
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def speaker_features(wav: np.ndarray, opts: dict) -> np.ndarray:
    """16 kHz float samples in [-1, 1] → embedding-model input features [frames, num_mel_bins] (float32)."""
    feats = fbank(wav, opts)
    if _options(opts)["subtract_mean"] and feats.shape[0]:
        feats = feats - feats.mean(axis=0, keepdims=True, dtype=np.float32)
    return np.ascontiguousarray(feats, dtype=np.float32)


def embed_by_length(session, feats: dict, embedding_size: int) -> dict:
    """{key: [k, frames, bins] features} -> {key: [k, D] embeddings, or the exception for that key}.

    The exported models (CAM++, WeSpeaker ResNet34) have no length input (statistics pooling covers every
    frame), so only equal frame counts share an onnxruntime call: one call per frame count."""
    groups: dict = {}
    for key, f in feats.items():
        groups.setdefault(f.shape[1], []).append(key)
    results = {}
    for keys in groups.values():
        batch = np.concatenate([feats[k] for k in keys]) if len(keys) > 1 else feats[keys[0]]
        try:
            (emb,) = session.run(["embedding"], {"feats": batch})
        except Exception as exc:  # noqa: BLE001 - the whole group shares the failure
            results.update({k: exc for k in keys})
            continue
        row = 0
        for k in keys:
            rows = feats[k].shape[0]
            out = emb[row:row + rows]
            row += rows
            if out.shape[1] != embedding_size:
                results[k] = RuntimeError(f"embedding has {out.shape[1]} dims, expected {embedding_size}")
            elif not np.isfinite(out).all():
                results[k] = RuntimeError("embedding is not finite")
            else:
                results[k] = np.ascontiguousarray(out, dtype=np.float32)
    return results
