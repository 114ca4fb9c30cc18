"""FSMN-VAD (fsmn-vad) → model.onnx + the plain-JSON options the Triton `vad` stage reads.

Uses FunASR's own export (`funasr/models/fsmn_vad_streaming/export_meta.py`, opset 14):

  inputs   speech f32 [1,T,400] (LFR 5×80 fbank after CMVN), in_cache0..3 f32 [1,128,19,1]
  outputs  logits f32 [1,T,248] (softmax; pdf 0 = silence), out_cache0..3 f32 [1,128,19,1]

Written into out_dir:
  model.onnx
  am.mvn     CMVN (<AddShift>/<Rescale>), read by the frontend
  vad.json   {"model_conf": resolved VADXOptions, "frontend_conf": WavFrontendOnline options, ...}
The inference loop itself lives in funasr_triton_models.fsmn_vad (numpy port); it needs no yaml.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from ..onnx_utils import legacy_onnx_export, sha256

log = logging.getLogger(__name__)

INPUTS = ["speech", "in_cache0", "in_cache1", "in_cache2", "in_cache3"]
OUTPUTS = ["logits", "out_cache0", "out_cache1", "out_cache2", "out_cache3"]
OPSET = 14  # funasr export default
# WavFrontendOnline constructor options that change features (cmvn_file is copied as am.mvn)
FRONTEND_KEYS = ("fs", "window", "n_mels", "frame_length", "frame_shift", "lfr_m", "lfr_n", "dither")


def vad_config(auto) -> dict:
    """What the numpy port needs, read from the loaded funasr AutoModel (not re-parsed yaml)."""
    model, kwargs = auto.model, auto.kwargs
    if type(model).__name__ != "FsmnVADStreaming":
        raise ValueError(
            f"{kwargs.get('model_path')} holds a {type(model).__name__}; the vad stage needs "
            "FsmnVADStreaming (fsmn-vad = iic/speech_fsmn_vad_zh-cn-16k-common-pytorch)"
        )
    frontend = kwargs.get("frontend")
    if type(frontend).__name__ != "WavFrontendOnline":
        raise ValueError(f"unsupported VAD frontend {type(frontend).__name__}: need WavFrontendOnline")
    frontend_conf = {k: v for k, v in (kwargs.get("frontend_conf") or {}).items() if k in FRONTEND_KEYS}
    # the values the frontend object really uses (constructor defaults included)
    frontend_conf.update({
        "fs": frontend.fs, "window": frontend.window, "n_mels": frontend.n_mels,
        "frame_length": frontend.frame_length, "frame_shift": frontend.frame_shift,
        "lfr_m": frontend.lfr_m, "lfr_n": frontend.lfr_n, "dither": frontend.dither,
    })
    if float(frontend_conf["dither"]) != 0.0:
        raise ValueError(f"frontend dither is {frontend_conf['dither']}; the VAD needs dither 0.0 to be deterministic")
    if frontend.cmvn is None:
        raise ValueError("the VAD frontend has no CMVN (cmvn_file / am.mvn)")
    # resolved VADXOptions (config model_conf plus any top-level overrides), as plain JSON
    model_conf = {k: v for k, v in vars(model.vad_opts).items() if not k.startswith("_")}
    encoder_conf = dict(getattr(model, "encoder_conf", None) or {})
    return {
        "format": 1,
        "model_class": "FsmnVADStreaming",
        "model_conf": json.loads(json.dumps(model_conf)),
        "frontend_conf": json.loads(json.dumps(frontend_conf)),
        "encoder_conf": json.loads(json.dumps(encoder_conf)),
        "inputs": INPUTS,
        "outputs": OUTPUTS,
    }


def _check_onnx(path: Path, auto, feat_dim: int) -> float:
    """I/O contract check plus one chunked score comparison against PyTorch; returns max |diff|."""
    import numpy as np
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in sess.get_inputs()}
    outs = [o.name for o in sess.get_outputs()]
    if sorted(ins) != sorted(INPUTS) or outs != OUTPUTS:
        raise RuntimeError(f"{path}: unexpected ONNX I/O {sorted(ins)} -> {outs}")
    caches = [np.zeros([int(d) for d in ins[n].shape], dtype=np.float32) for n in INPUTS[1:]]
    feats = np.random.default_rng(0).standard_normal((1, 50, feat_dim)).astype(np.float32)
    got = []
    torch_cache: dict = {}
    want = []
    for part in (feats[:, :30], feats[:, 30:]):  # two chunks: the caches must carry over
        y, *caches = sess.run(OUTPUTS, {"speech": part, **dict(zip(INPUTS[1:], caches))})
        got.append(y)
        with torch.no_grad():
            want.append(auto.model.encoder(torch.from_numpy(part), cache=torch_cache).numpy())
    return float(np.abs(np.concatenate(got, 1) - np.concatenate(want, 1)).max())


def export_vad(model_dir: Path, out_dir: Path) -> dict:
    """Export an FSMN-VAD hub directory into `out_dir` (the Triton `vad` model version dir).

    Nothing is written into `model_dir` (funasr's export would default to it).
    """
    from funasr import AutoModel

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    auto = AutoModel(model=str(model_dir), disable_update=True, disable_pbar=True, device="cpu")
    cfg = vad_config(auto)

    files = []
    with tempfile.TemporaryDirectory(prefix="vad_export_") as tmp:
        with legacy_onnx_export():
            auto.export(type="onnx", quantize=False, output_dir=tmp, device="cpu")
        src = Path(tmp) / "model.onnx"
        if not src.is_file():
            raise RuntimeError(f"funasr export did not write model.onnx (got {sorted(p.name for p in Path(tmp).iterdir())})")
        shutil.move(str(src), out_dir / "model.onnx")
        files.append("model.onnx")

    feat_dim = int(cfg["frontend_conf"]["n_mels"]) * int(cfg["frontend_conf"]["lfr_m"])
    max_diff = _check_onnx(out_dir / "model.onnx", auto, feat_dim)
    if max_diff > 1e-4:
        raise RuntimeError(f"exported vad model.onnx differs from PyTorch by {max_diff}")

    cmvn_src = Path(auto.kwargs.get("frontend_conf", {}).get("cmvn_file") or model_dir / "am.mvn")
    shutil.copyfile(cmvn_src, out_dir / "am.mvn")
    files.append("am.mvn")
    (out_dir / "vad.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    files.append("vad.json")

    log.info("exported FSMN-VAD to %s (max |onnx - torch| = %.2e)", out_dir, max_diff)
    return {
        "files": files,
        "source_dir": str(model_dir),
        "opset": OPSET,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
        "vad": cfg,
        "max_abs_diff": max_diff,
        "sha256": {name: sha256(out_dir / name) for name in files if name.endswith(".onnx")},
    }
