"""CT-Transformer punctuation (ct-punc) → model.onnx + the plain-JSON assets the Triton `punc` stage reads.

Uses FunASR's own export (`funasr/models/ct_transformer/export_meta.py`, opset 14):

  inputs   inputs i32 [B,L] (token ids), text_lengths i32 [B]
  outputs  logits f32 [B,L,P] (P = len(punc_list); argmax = punctuation class per word)

Written into out_dir:
  model.onnx (+ model_quant.onnx: dynamic int8 MatMul, as FunASR quantizes)
  tokens.json   the token list the tokenizer really used (config token_list / tokens.json / tokens.txt)
  punc.json     punc_list, sentence_end_id, split_size, unk_symbol, jieba_usr_dict, ...
  jieba_usr_dict  only when funasr segments with jieba (the real large ct-punc ships one)
  config.yaml   a copy, so funasr_onnx's CT_Transformer can load the same directory
The inference loop itself lives in funasr_triton_models.ct_punc (numpy port).
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from ..onnx_utils import legacy_onnx_export, sha256

log = logging.getLogger(__name__)

INPUTS = ["inputs", "text_lengths"]
OUTPUTS = ["logits"]
OPSET = 14  # funasr export default
CACHE_POP_TRIGGER_LIMIT = 200  # hard-coded in CTTransformer.inference


def punc_config(auto) -> dict:
    """What the numpy port needs, read from the loaded funasr AutoModel (not re-parsed yaml)."""
    model, kwargs = auto.model, auto.kwargs
    if type(model).__name__ != "CTTransformer":
        raise ValueError(
            f"{kwargs.get('model_path')} holds a {type(model).__name__}; the punc stage needs an offline "
            "CTTransformer (ct-punc = iic/punc_ct-transformer_cn-en-common-vocab471067-large, or "
            "ct-punc-c = iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch)"
        )
    tokenizer = kwargs.get("tokenizer")
    if tokenizer is None or not hasattr(tokenizer, "token2id") or not hasattr(tokenizer, "unk_symbol"):
        raise ValueError(f"unsupported punctuation tokenizer {type(tokenizer).__name__}: need CharTokenizer")
    # CTTransformer.inference passes a *list of words* to tokenizer.encode; CharTokenizer then maps
    # each word to its id. With seg_dict or non-linguistic symbols funasr itself would fail on a list.
    if getattr(tokenizer, "seg_dict", None) is not None or getattr(tokenizer, "non_linguistic_symbols", None):
        raise ValueError("CharTokenizer with seg_dict / non_linguistic_symbols is not supported for punctuation")
    split_size = int(kwargs.get("split_size", 20))
    jieba_used = getattr(model, "jieba_usr_dict", None) is not None
    return {
        "format": 1,
        "model_class": "CTTransformer",
        "punc_list": [str(p) for p in model.punc_list],
        "sentence_end_id": int(model.sentence_end_id),
        "split_size": split_size,
        "cache_pop_trigger_limit": CACHE_POP_TRIGGER_LIMIT,
        "unk_symbol": str(tokenizer.unk_symbol),
        "vocab_size": len(tokenizer.token_list),
        "jieba_usr_dict": "jieba_usr_dict" if jieba_used else None,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
    }


def _check_onnx(path: Path, auto, n_classes: int) -> float:
    """I/O contract check plus one logits comparison against PyTorch; returns max |diff|."""
    import numpy as np
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = {i.name: i.type for i in sess.get_inputs()}
    outs = [o.name for o in sess.get_outputs()]
    if ins != {"inputs": "tensor(int32)", "text_lengths": "tensor(int32)"} or outs != OUTPUTS:
        raise RuntimeError(f"{path}: unexpected ONNX I/O {ins} -> {outs}")
    vocab = auto.model.embed.num_embeddings
    ids = np.random.default_rng(0).integers(0, vocab, size=(1, 37)).astype(np.int32)
    lengths = np.array([ids.shape[1]], dtype=np.int32)
    (y,) = sess.run(OUTPUTS, {"inputs": ids, "text_lengths": lengths})
    if y.shape != (1, ids.shape[1], n_classes):
        raise RuntimeError(f"{path}: logits shape {y.shape}, expected (1, {ids.shape[1]}, {n_classes})")
    with torch.no_grad():
        ref, _ = auto.model.punc_forward(torch.from_numpy(ids).long(), torch.from_numpy(lengths))
    return float(np.abs(ref.numpy() - y).max())


def export_punc(model_dir: Path, out_dir: Path, quantize: bool = False) -> dict:
    """Export a CT-Transformer hub directory into `out_dir` (the Triton `punc` model version dir)."""
    from funasr import AutoModel

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    auto = AutoModel(model=str(model_dir), disable_update=True, disable_pbar=True, device="cpu")
    cfg = punc_config(auto)

    files = []
    # AutoModel.export deep-copies the model; with a jieba_usr_dict the model holds the `jieba`
    # module itself (funasr 1.4.16), which cannot be deep-copied ("cannot pickle 'module' object").
    # The graph does not use it, so detach it for the export.
    jieba_module = getattr(auto.model, "jieba_usr_dict", None)
    auto.model.jieba_usr_dict = None
    try:
        with tempfile.TemporaryDirectory(prefix="punc_export_") as tmp:
            with legacy_onnx_export():
                auto.export(type="onnx", quantize=quantize, output_dir=tmp, device="cpu")
            names = ["model.onnx"] + (["model_quant.onnx"] if quantize else [])
            for name in names:
                src = Path(tmp) / name
                if not src.is_file():
                    got = sorted(p.name for p in Path(tmp).iterdir())
                    raise RuntimeError(f"funasr export did not write {name} (got {got})")
                shutil.move(str(src), out_dir / name)
                files.append(name)
    finally:
        auto.model.jieba_usr_dict = jieba_module

    max_diff = _check_onnx(out_dir / "model.onnx", auto, len(cfg["punc_list"]))
    if max_diff > 1e-2:
        raise RuntimeError(f"exported punc model.onnx differs from PyTorch by {max_diff}")

    tokenizer = auto.kwargs["tokenizer"]
    (out_dir / "tokens.json").write_text(
        json.dumps(list(tokenizer.token_list), ensure_ascii=False), encoding="utf-8"
    )
    files.append("tokens.json")
    if cfg["jieba_usr_dict"]:
        src = Path(auto.kwargs.get("jieba_usr_dict") or model_dir / "jieba_usr_dict")
        shutil.copyfile(src, out_dir / "jieba_usr_dict")
        files.append("jieba_usr_dict")
    elif (out_dir / "jieba_usr_dict").exists():
        (out_dir / "jieba_usr_dict").unlink()  # a stale one from an earlier export
    if (model_dir / "config.yaml").is_file():
        shutil.copyfile(model_dir / "config.yaml", out_dir / "config.yaml")
        files.append("config.yaml")
    (out_dir / "punc.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    files.append("punc.json")

    log.info("exported punctuation model to %s (max |onnx - torch| = %.2e)", out_dir, max_diff)
    return {
        "files": files,
        "opset": OPSET,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
        "punc": cfg,
        "max_abs_diff": max_diff,
        "sha256": {name: sha256(out_dir / name) for name in files if name.endswith(".onnx")},
    }
