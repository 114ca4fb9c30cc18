"""CAM++ speaker embedding (cam++) → model.onnx + embedding.json for the Triton `speaker_embedding` stage.

funasr has no export_meta.py for CAMPPlus, so the model's own `forward` is exported with the legacy
(TorchScript) exporter at opset 19 (at opset 14/17 ONNX AveragePool(ceil_mode=True) treats the
partial last 100-frame segment of CAMLayer.seg_pooling differently: errors of ~2e-3):

  inputs   feats f32 [B, frames, 80]   (fbank on [-1, 1] samples, per-utterance mean subtracted)
  outputs  embedding f32 [B, D]        (D = embedding_size: 192 for iic/speech_campplus_sv_zh-cn_16k-common)

CAM++ has no length input: statistics pooling runs over every frame, so only equal-length windows
may share a batch (padding would change the embedding).

Written into out_dir:
  model.onnx
  embedding.json  model_class, embedding_size, feat_dim and the fbank options funasr_triton_models.speaker_features needs
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from funasr_triton_models.speaker_features import DEFAULT_OPTIONS as SPEAKER_FBANK_DEFAULTS

from ..onnx_utils import sha256

log = logging.getLogger(__name__)

INPUTS = ["feats"]
OUTPUTS = ["embedding"]
OPSET = 19
META_FILE = "embedding.json"  # what model_repository/speaker_embedding/1/model.py reads
FEAT_DIM = 80  # funasr's extract_feature hard-codes num_mel_bins=80
CHECK_FRAMES = (23, 100, 151, 437)  # 0.25 s, a whole seg_pooling segment, 1.5 s, a ragged tail

# funasr's extract_feature: torchaudio.compliance.kaldi.fbank defaults with num_mel_bins=80
FEATURE_OPTIONS = dict(SPEAKER_FBANK_DEFAULTS, num_mel_bins=FEAT_DIM)


def _check_weights(auto) -> None:
    """AutoModel silently skips missing/mismatched keys (ignore_init_mismatch); refuse that here."""
    import torch

    init_param = auto.kwargs.get("init_param")
    if not init_param or not Path(init_param).is_file():
        raise FileNotFoundError(
            f"{auto.kwargs.get('model_path')}: no CAM++ weights (configuration.json "
            "file_path_metas.init_param, e.g. campplus_cn_common.bin, or model.pt)")
    src = torch.load(init_param, map_location="cpu")
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(src, dict) and key in src:
            src = src[key]
    src = {k[len("module."):] if k.startswith("module.") else k: v for k, v in src.items()}
    dst = auto.model.state_dict()
    missing = [k for k in dst if k not in src]
    wrong = [k for k in dst if k in src and tuple(src[k].shape) != tuple(dst[k].shape)]
    if missing or wrong:
        raise ValueError(
            f"{init_param} does not fit the configured CAMPPlus: {len(missing)} missing keys "
            f"{missing[:5]}, {len(wrong)} shape mismatches {wrong[:5]}")


def campplus_config(auto) -> dict:
    model = auto.model
    if type(model).__name__ != "CAMPPlus":
        raise ValueError(
            f"{auto.kwargs.get('model_path')} holds a {type(model).__name__}; the speaker_embedding stage "
            "needs CAMPPlus (cam++ = iic/speech_campplus_sv_zh-cn_16k-common)")
    if getattr(model, "output_level", "segment") != "segment":
        raise ValueError(f"CAMPPlus output_level={model.output_level!r}: only 'segment' embeddings are served")
    conf_feat_dim = int(auto.kwargs.get("model_conf", {}).get("feat_dim", FEAT_DIM))
    if conf_feat_dim != FEAT_DIM or model.head.out_channels != model.head.conv2.out_channels * (FEAT_DIM // 8):
        raise ValueError(f"CAMPPlus feat_dim={conf_feat_dim}: funasr's CAM++ features are always {FEAT_DIM} mel bins")
    embedding_size = int(model.xvector.dense.linear.out_channels)
    return {
        "format": 1,
        "model_class": "CAMPPlus",
        "embedding_size": embedding_size,
        "feat_dim": FEAT_DIM,
        "sample_rate": 16000,
        "features": dict(FEATURE_OPTIONS),
        "inputs": INPUTS,
        "outputs": OUTPUTS,
        "opset": OPSET,
    }


def _check_onnx(path: Path, model, embedding_size: int) -> float:
    """I/O contract check plus embedding comparisons against PyTorch; returns max |diff|."""
    import numpy as np
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = {i.name: i.type for i in sess.get_inputs()}
    outs = [o.name for o in sess.get_outputs()]
    if ins != {"feats": "tensor(float)"} or outs != OUTPUTS:
        raise RuntimeError(f"{path}: unexpected ONNX I/O {ins} -> {outs}")
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch, frames in zip((1, 2, 1, 3), CHECK_FRAMES):
        x = rng.standard_normal((batch, frames, FEAT_DIM)).astype(np.float32)
        (y,) = sess.run(OUTPUTS, {"feats": x})
        if y.shape != (batch, embedding_size):
            raise RuntimeError(f"{path}: embedding shape {y.shape}, expected ({batch}, {embedding_size})")
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        worst = max(worst, float(np.abs(ref - y).max() / max(1.0, float(np.abs(ref).max()))))
    return worst


def export_campplus(model_dir: Path, out_dir: Path) -> dict:
    """Export a CAM++ hub directory into `out_dir` (the Triton `speaker_embedding` model version dir)."""
    import torch
    from funasr import AutoModel

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # AutoModel resolves the weights exactly as inference does: configuration.json
    # file_path_metas.init_param (campplus_cn_common.bin for the real model), else model.pt.
    auto = AutoModel(model=str(model_dir), disable_update=True, disable_pbar=True, device="cpu")
    cfg = campplus_config(auto)
    _check_weights(auto)
    model = auto.model.eval()

    onnx_path = out_dir / "model.onnx"
    dummy = torch.randn(2, 250, FEAT_DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy,),
            str(onnx_path),
            dynamo=False,
            opset_version=OPSET,
            input_names=INPUTS,
            output_names=OUTPUTS,
            dynamic_axes={"feats": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}},
            do_constant_folding=True,
        )

    rel_diff = _check_onnx(onnx_path, model, cfg["embedding_size"])
    if rel_diff > 1e-3:
        raise RuntimeError(f"exported CAM++ model.onnx differs from PyTorch by {rel_diff} (relative)")

    (out_dir / META_FILE).write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    files = ["model.onnx", META_FILE]
    log.info("exported CAM++ to %s (max relative |onnx - torch| = %.2e)", out_dir, rel_diff)
    return {
        "files": files,
        "opset": OPSET,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
        "campplus": cfg,
        "max_rel_diff": rel_diff,
        "sha256": {"model.onnx": sha256(onnx_path)},
    }
