"""SenseVoiceSmall -> one ONNX graph (features + query ids in, CTC logits out) and its assets.

The graph is FunASR's own export of the model (`funasr/models/sense_voice/export_meta.py`, reached
through `SenseVoiceSmall.export`), with its input and output names:

  inputs   speech f32 [B,T,560] (LFR + CMVN features, as Paraformer's), speech_lengths i32 [B],
           language i32 [B] (query id: model.lid_dict, auto=0 zh=3 en=4 yue=7 ja=11 ko=12),
           textnorm i32 [B] (query id: withitn=14, woitn=15)
  outputs  ctc_logits f32 [B,T+4,V] (before log-softmax: argmax is the same), encoder_out_lens i32 [B]

The model prepends four query frames (language, event, emotion, textnorm); its first four CTC
outputs are, in a trained model, the language, emotion, event and textnorm tags. Decoding (greedy
CTC, sentencepiece detokenisation, tag parsing) happens in the serving model.

Assets next to the graph: am.mvn (CMVN), the sentencepiece BPE model, sensevoice.json (the
frontend options, the query-id tables, blank id, vocabulary size, file names).
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

from ..onnx_utils import legacy_onnx_export, quantize_int8

log = logging.getLogger(__name__)

INPUTS = ["speech", "speech_lengths", "language", "textnorm"]
OUTPUTS = ["ctc_logits", "encoder_out_lens"]
OPSET = 14
META_FILE = "sensevoice.json"


def load(model_dir: Path):
    """AutoModel on a SenseVoiceSmall hub directory (a clear error for any other model)."""
    from funasr import AutoModel

    auto = AutoModel(model=str(model_dir), disable_update=True, device="cpu")
    if type(auto.model).__name__ != "SenseVoiceSmall":
        raise ValueError(f"{model_dir} holds a {type(auto.model).__name__}; the sensevoice stage needs a "
                         "SenseVoiceSmall (iic/SenseVoiceSmall)")
    return auto


def reference_model(model_dir: Path):
    """AutoModel(SenseVoiceSmall) as the served model's reference: features without dither.

    The released config.yaml leaves WavFrontend's dither at its default 1.0, so AutoModel adds random
    noise to every fbank (and two runs on the same audio may differ); the served features are
    deterministic (dither 0, as the exported sensevoice.json says), and so is this reference. AutoModel
    restores its kwargs from a base copy on every call, so both frontends are set."""
    auto = load(model_dir)
    maps = [auto.kwargs, *getattr(auto, "_base_kwargs_map", {}).values()]
    for kwargs in maps:
        frontend = kwargs.get("frontend") if isinstance(kwargs, dict) else None
        if frontend is not None and hasattr(frontend, "dither"):
            frontend.dither = 0.0
    return auto


def export_sensevoice(model_dir: Path, out_dir: Path, quantize: bool = False) -> dict:
    """Export a SenseVoiceSmall hub directory into `out_dir` (a Triton model version dir)."""
    import torch
    import yaml

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    auto = load(model_dir)
    model = copy.deepcopy(auto.model).eval()
    graph = model.export(type="onnx", device="cpu", max_seq_len=512)  # FunASR's export_rebuild_model
    onnx_path = out_dir / "model.onnx"
    with legacy_onnx_export(), torch.no_grad():
        torch.onnx.export(
            graph, graph.export_dummy_inputs(), str(onnx_path), input_names=graph.export_input_names(),
            output_names=graph.export_output_names(), dynamic_axes=graph.export_dynamic_axes(),
            opset_version=OPSET, do_constant_folding=True)
    files = ["model.onnx"]
    if quantize:
        quantize_int8(onnx_path, out_dir / "model_quant.onnx", exclude_substrings=("output", "ctc", "embed"))
        files.append("model_quant.onnx")

    conf = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    kwargs = auto.kwargs
    bpe = Path(kwargs.get("tokenizer_conf", {}).get("bpemodel") or "")
    if not bpe.is_file():
        raise FileNotFoundError(f"no sentencepiece model in {model_dir} (tokenizer_conf.bpemodel)")
    shutil.copyfile(bpe, out_dir / bpe.name)
    files.append(bpe.name)
    cmvn = Path(kwargs.get("frontend_conf", {}).get("cmvn_file") or model_dir / "am.mvn")
    shutil.copyfile(cmvn, out_dir / "am.mvn")
    files.append("am.mvn")
    fe = conf.get("frontend_conf", {})
    meta = {
        "frontend": {k: fe.get(k, d) for k, d in (
            ("fs", 16000), ("window", "hamming"), ("n_mels", 80), ("frame_length", 25),
            ("frame_shift", 10), ("lfr_m", 7), ("lfr_n", 6))} | {"dither": 0.0},
        "bpemodel": bpe.name,
        "blank_id": int(model.blank_id),
        "vocab_size": int(model.vocab_size),
        "query_frames": 4,
        "language_ids": {k: int(v) for k, v in model.lid_dict.items()},
        "textnorm_ids": {k: int(v) for k, v in model.textnorm_dict.items()},
        "inputs": INPUTS, "outputs": OUTPUTS,
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    files.append(META_FILE)
    log.info("exported %s", onnx_path)
    return {"files": files, "opset": OPSET, "inputs": INPUTS, "outputs": OUTPUTS}
