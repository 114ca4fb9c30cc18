"""Streaming Paraformer (paraformer-zh-streaming) → encoder.onnx + decoder.onnx + runtime options.

Uses FunASR's own export (`funasr/models/paraformer_streaming/export_meta.py`, opset 14) for
encoder_chunk_look_back = decoder_chunk_look_back = 0 (each chunk's encoder attends only within the
chunk plus its overlap frames; the decoder cross-attends only to the chunk), plus one graph of our
own for encoder_chunk_look_back > 0 (funasr's ``SANMEncoderChunkOpt.forward_chunk`` with
``cache["opt"]``: every layer's self-attention also attends to the keys/values it kept from the
previous chunks):

  encoder.onnx  in  speech f32 [B,T,560] (LFR+CMVN feats, already × sqrt(d) + streaming position
                    encoding, overlap frames prepended), speech_lengths i32 [B]
                out enc f32 [B,T,d], enc_len i32 [B], alphas f32 [B,T] (CIF weights)
  encoder_lookback.onnx  the same, plus in_k_i / in_v_i f32 [B,heads,L,d/heads] (the keys/values
                    layer i kept, L >= 0) and out_k_i / out_v_i [B,heads,T,d/heads] (this chunk's);
                    what to keep (funasr: all but the look-ahead frames, then the last
                    look_back * chunk_size[1]) is the runtime's business
  decoder.onnx  in  enc, enc_len, acoustic_embeds f32 [B,N,d], acoustic_embeds_len i32 [B],
                    in_cache_0..L-1 f32 [B,d,kernel-1] (causal FSMN memory of each decoder block)
                out logits f32 [B,N,V], sample_ids i64 [B,N], out_cache_0..L-1

Written into out_dir (the runtime is funasr_triton_models.paraformer_online):
  encoder.onnx, decoder.onnx (+ encoder_quant.onnx, decoder_quant.onnx with quantize)
  am.mvn, tokens.json
  paraformer_streaming.json   everything the numpy runtime needs (no yaml, no torch)

Before writing anything the loaded model is checked for what the export and the runtime assume,
and after export the ONNX graphs are compared with PyTorch on random input (two decoder chunks, so
the carried FSMN caches are covered).
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

from ..onnx_utils import legacy_onnx_export, quantize_int8, sha256

log = logging.getLogger(__name__)

OPSET = 14  # funasr export default
ENCODER_INPUTS = ["speech", "speech_lengths"]
ENCODER_OUTPUTS = ["enc", "enc_len", "alphas"]
LOOKBACK_FILE = "encoder_lookback.onnx"
DEFAULT_CHUNK_SIZE = [0, 10, 5]  # 600 ms chunks, 300 ms look-ahead (funasr's default)
FRONTEND_KEYS = ("fs", "window", "n_mels", "frame_length", "frame_shift", "lfr_m", "lfr_n", "dither")
MAX_ABS_DIFF = 1e-3


def _streaming_config(auto) -> dict:
    """What the runtime needs, read from the loaded AutoModel (constructor defaults included)."""
    model, kwargs = auto.model, auto.kwargs
    if type(model).__name__ != "ParaformerStreaming":
        raise ValueError(
            f"{kwargs.get('model_path')} holds a {type(model).__name__}; the streaming stage needs a "
            "ParaformerStreaming (paraformer-zh-streaming = iic/speech_paraformer-large_asr_nat-zh-cn-16k-"
            "common-vocab8404-online)"
        )
    from funasr.models.transformer.embedding import StreamSinusoidalPositionEncoder

    encoder = model.encoder
    if type(encoder).__name__ != "SANMEncoderChunkOpt" or not isinstance(encoder.embed, StreamSinusoidalPositionEncoder):
        raise ValueError(
            f"unsupported encoder {type(encoder).__name__} (input layer {type(encoder.embed).__name__}): the "
            "streaming export needs SANMEncoderChunkOpt with input_layer pe_online"
        )
    if type(model.predictor).__name__ != "CifPredictorV2":
        raise ValueError(f"unsupported predictor {type(model.predictor).__name__}: need CifPredictorV2")
    decoder = model.decoder
    if type(decoder).__name__ != "ParaformerSANMDecoder":
        raise ValueError(f"unsupported decoder {type(decoder).__name__}: need ParaformerSANMDecoder")
    frontend = kwargs.get("frontend")
    if type(frontend).__name__ != "WavFrontendOnline":
        raise ValueError(f"unsupported frontend {type(frontend).__name__}: need WavFrontendOnline")
    if frontend.cmvn is None:
        raise ValueError("the frontend has no CMVN (cmvn_file / am.mvn)")
    if getattr(model, "normalize", None) is not None:
        raise ValueError("a model-level `normalize` is not supported by the streaming runtime")
    if getattr(model, "beam_search", None) is not None:
        raise ValueError("beam search (CTC/LM) is not supported by the streaming runtime")

    frontend_conf = {k: getattr(frontend, k) for k in FRONTEND_KEYS}
    if float(frontend_conf["dither"]) != 0.0:
        log.warning("frontend dither is %s in the checkpoint config; the served features use 0.0 "
                    "(deterministic)", frontend_conf["dither"])
    frontend_conf["dither"] = 0.0
    if not frontend.snip_edges or not frontend.upsacle_samples:
        raise ValueError("the runtime implements WavFrontendOnline with snip_edges and upsacle_samples on")

    d = int(encoder.output_size())
    kernel = {layer.self_attn.kernel_size for layer in decoder.decoders if layer.self_attn is not None}
    pads = {tuple(layer.self_attn.pad_fn.padding) for layer in decoder.decoders if layer.self_attn is not None}
    if len(kernel) != 1 or len(pads) != 1:
        raise ValueError("decoder blocks with different FSMN kernels are not supported")
    kernel_size = kernel.pop()
    left, right = pads.pop()
    if right != 0:
        # funasr's PyTorch streaming decoder pads the FIRST chunk on both sides (and carries the
        # right padding into the next chunk's memory); the ONNX decoder is always causal. They
        # agree only for a causal FSMN (sanm_shfit = (kernel_size - 1) / 2, as in the released model).
        log.warning("decoder FSMN is not causal (padding %s): ONNX and PyTorch streaming results will "
                    "differ slightly on the first chunk and chunk edges", (left, right))
    if decoder.decoders2 is not None:
        raise ValueError("decoders with att_layer_num < num_blocks are not supported")

    predictor = model.predictor
    return {
        "format": 1,
        "model_class": "ParaformerStreaming",
        "frontend_conf": json.loads(json.dumps(frontend_conf)),
        "feats_dim": int(frontend.n_mels * frontend.lfr_m),
        "encoder_output_size": d,
        "encoder_input_scale": math.sqrt(d),
        # funasr's encoder.forward_chunk multiplies its input by sqrt(d) in place; for the tail
        # chunk (final chunk shorter than 960 samples) that input IS the cached overlap feats, which
        # were already scaled, so AutoModel feeds the encoder overlap feats × sqrt(d) once more.
        "tail_chunk_extra_scale": math.sqrt(d),
        "position_encoding": {"type": "StreamSinusoidalPositionEncoder", "first_position": 1},
        "predictor": {
            "threshold": float(predictor.threshold),
            "tail_threshold": float(predictor.tail_threshold),
        },
        "decoder_fsmn": {"kernel_size": int(kernel_size), "padding": [int(left), int(right)],
                         "causal": right == 0},
        "sos": int(model.sos),
        "eos": int(model.eos),
        "blank_id": int(model.blank_id),
        "vocab_size": int(model.vocab_size),
        "chunk_size": list(DEFAULT_CHUNK_SIZE),
        "chunk_stride_samples_per_frame": 960,
        "encoder_chunk_look_back": 0,  # the default; encoder_lookback.onnx serves a stream's other values
        "decoder_chunk_look_back": 0,
    }


def _lookback_encoder(model):
    """A torch module: ``SANMEncoderChunkOpt.forward_chunk`` (after the input scaling, position
    encoding and overlap, as encoder.onnx) + the CIF weights, with each layer's look-back
    keys/values as explicit inputs (funasr keeps them in ``cache["encoder"]["opt"]``)."""
    import torch

    encoder, predictor = model.encoder, model.predictor
    layers = list(encoder.encoders0) + list(encoder.encoders)

    class LookBackEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(layers)
            self.after_norm = encoder.after_norm if encoder.normalize_before else None
            self.predictor = predictor

        def forward(self, speech, speech_lengths, *caches):
            x = speech
            new = []
            for i, layer in enumerate(self.layers):
                # EncoderLayerSANM.forward_chunk + MultiHeadedAttentionSANM.forward_chunk, the
                # cached keys/values prepended (an empty cache is funasr's first chunk)
                attn = layer.self_attn
                residual = x
                h = layer.norm1(x) if layer.normalize_before else x
                q_h, k_h, v_h, v = attn.forward_qkv(h)
                k_all = torch.cat((caches[2 * i], k_h), dim=2)
                v_all = torch.cat((caches[2 * i + 1], v_h), dim=2)
                fsmn_memory = attn.forward_fsmn(v, None)
                scores = torch.matmul(q_h * attn.d_k ** (-0.5), k_all.transpose(-2, -1))
                out = attn.forward_attention(v_all, scores, None) + fsmn_memory
                x = residual + out if layer.in_size == layer.size else out
                if not layer.normalize_before:
                    x = layer.norm1(x)
                residual = x
                h = layer.norm2(x) if layer.normalize_before else x
                x = residual + layer.feed_forward(h)
                if not layer.normalize_before:
                    x = layer.norm2(x)
                new += [k_h, v_h]
            if self.after_norm is not None:
                x = self.after_norm(x)
            p = self.predictor
            h = torch.relu(p.cif_conv1d(p.pad(x.transpose(1, 2)))).transpose(1, 2)
            alphas = torch.relu(torch.sigmoid(p.cif_output(h)) * p.smooth_factor - p.noise_threshold).squeeze(-1)
            return (x, speech_lengths, alphas, *new)

    return LookBackEncoder().eval(), len(layers), int(layers[0].self_attn.h), int(layers[0].self_attn.d_k)


def _export_lookback(module, n_layers: int, heads: int, d_k: int, feats_dim: int, path: Path) -> dict:
    import torch

    names_in = ["speech", "speech_lengths"] + [f"in_{kv}_{i}" for i in range(n_layers) for kv in "kv"]
    names_out = list(ENCODER_OUTPUTS) + [f"out_{kv}_{i}" for i in range(n_layers) for kv in "kv"]
    dummy = (torch.randn(2, 15, feats_dim), torch.tensor([15, 15], dtype=torch.int32),
             *[torch.randn(2, heads, 7, d_k) for _ in range(2 * n_layers)])
    axes = {"speech": {0: "batch", 1: "frames"}, "speech_lengths": {0: "batch"}, "enc": {0: "batch", 1: "frames"},
            "enc_len": {0: "batch"}, "alphas": {0: "batch", 1: "frames"}}
    axes.update({n: {0: "batch", 2: "cached"} for n in names_in[2:]})
    axes.update({n: {0: "batch", 2: "frames"} for n in names_out[3:]})
    with legacy_onnx_export(), torch.no_grad():
        torch.onnx.export(module, dummy, str(path), input_names=names_in, output_names=names_out,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    return {"file": path.name, "inputs": names_in, "outputs": names_out, "layers": n_layers, "heads": heads,
            "d_k": d_k}


def _check_lookback(out_dir: Path, auto, cfg: dict, look_back: int = 2) -> float:
    """encoder_lookback.onnx vs funasr's forward_chunk with encoder_chunk_look_back over three chunks
    (the cache kept exactly as funasr keeps it). Returns max |diff|."""
    import numpy as np
    import onnxruntime as ort
    import torch

    spec = cfg["encoder_lookback"]
    sess = ort.InferenceSession(str(out_dir / spec["file"]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    c0, c1, c2 = DEFAULT_CHUNK_SIZE
    t_cache = {"tail_chunk": True, "opt": None, "start_idx": 0, "chunk_size": list(DEFAULT_CHUNK_SIZE),
               "encoder_chunk_look_back": look_back}
    kv = [np.zeros((1, spec["heads"], 0, spec["d_k"]), np.float32) for _ in range(2 * spec["layers"])]
    diffs = []
    for _ in range(3):
        x = rng.standard_normal((1, c0 + c1 + c2, cfg["feats_dim"])).astype(np.float32)
        enc, _, alphas, *new = sess.run(spec["outputs"], {"speech": x, "speech_lengths": np.array([x.shape[1]], np.int32),
                                                          **dict(zip(spec["inputs"][2:], kv))})
        kv = [np.concatenate((old, part[:, :, :-c2]), axis=2)[:, :, -(look_back * c1):] for old, part in zip(kv, new)]
        with torch.no_grad():
            t_cache["feats"] = torch.from_numpy(x)
            t_enc, _, _ = auto.model.encoder.forward_chunk(torch.from_numpy(x.copy()), torch.tensor([x.shape[1]]),
                                                           cache=t_cache)
        diffs.append(float(np.abs(enc - t_enc.numpy()).max()))
    return max(diffs)


def _onnx_io(path: Path) -> tuple[list[dict], list[str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}

    def dims(v):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]

    inputs = [{"name": v.name, "shape": dims(v)} for v in graph.input if v.name not in inits]
    return inputs, [o.name for o in graph.output]


def _check_onnx(out_dir: Path, auto, cfg: dict, decoder_inputs: list[str], decoder_outputs: list[str],
                cache_shape: list[int]) -> float:
    """ORT vs PyTorch on random input: encoder once, decoder over two chunks. Returns max |diff|."""
    import numpy as np
    import onnxruntime as ort
    import torch

    model = auto.model
    d = cfg["encoder_output_size"]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    enc_sess = ort.InferenceSession(str(out_dir / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
    dec_sess = ort.InferenceSession(str(out_dir / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    diffs = []
    caches = [np.zeros([1, *cache_shape], dtype=np.float32) for _ in range(len(decoder_inputs) - 4)]
    torch_dec_cache = {"decode_fsmn": None, "opt": None, "chunk_size": list(DEFAULT_CHUNK_SIZE),
                       "decoder_chunk_look_back": 0}
    for n_tokens in (3, 2):
        x = rng.standard_normal((1, 15, cfg["feats_dim"])).astype(np.float32)
        enc, enc_len, alphas = enc_sess.run(ENCODER_OUTPUTS, {"speech": x, "speech_lengths": np.array([15], np.int32)})
        with torch.no_grad():
            # the tail-chunk path of forward_chunk runs the encoder on cache["feats"] as given
            t_cache = {"tail_chunk": True, "feats": torch.from_numpy(x), "opt": None, "start_idx": 0,
                       "chunk_size": list(DEFAULT_CHUNK_SIZE), "encoder_chunk_look_back": 0}
            t_enc, _, _ = model.encoder.forward_chunk(torch.from_numpy(x.copy()), torch.tensor([15]), cache=t_cache)
            diffs.append(float(np.abs(enc - t_enc.numpy()).max()))
            p = model.predictor
            h = torch.relu(p.cif_conv1d(p.pad(t_enc.transpose(1, 2)))).transpose(1, 2)
            t_alphas = torch.relu(torch.sigmoid(p.cif_output(h)) * p.smooth_factor - p.noise_threshold).squeeze(-1)
            diffs.append(float(np.abs(alphas - t_alphas.numpy()).max()))
        embeds = rng.standard_normal((1, n_tokens, d)).astype(np.float32)
        feed = {"enc": enc, "enc_len": enc_len, "acoustic_embeds": embeds,
                "acoustic_embeds_len": np.array([n_tokens], np.int32)}
        feed.update(zip(decoder_inputs[4:], caches))
        logits, _, *caches = dec_sess.run(decoder_outputs, feed)
        with torch.no_grad():
            t_logits = model.decoder.forward_chunk(t_enc, torch.from_numpy(embeds), torch_dec_cache)
        diffs.append(float(np.abs(logits - t_logits.numpy()).max()))
    return max(diffs)


def export_paraformer_streaming(model_dir: Path, out_dir: Path, quantize: bool = False) -> dict:
    """Export a ParaformerStreaming hub directory into `out_dir` (nothing is written to model_dir)."""
    from funasr import AutoModel

    from .paraformer import _token_list

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.yaml").is_file():
        raise FileNotFoundError(
            f"{model_dir} has no config.yaml: expected a FunASR hub-layout directory (config.yaml, model.pt, "
            "am.mvn, tokens.json) of a streaming Paraformer such as paraformer-zh-streaming"
        )
    auto = AutoModel(model=str(model_dir), disable_update=True, disable_pbar=True, device="cpu")
    cfg = _streaming_config(auto)
    out_dir.mkdir(parents=True, exist_ok=True)
    lookback_module, n_layers, heads, d_k = _lookback_encoder(auto.model)
    cfg["encoder_lookback"] = _export_lookback(lookback_module, n_layers, heads, d_k, cfg["feats_dim"],
                                               out_dir / LOOKBACK_FILE)

    files = [LOOKBACK_FILE]
    with tempfile.TemporaryDirectory(prefix="paraformer_streaming_export_") as tmp:
        with legacy_onnx_export():
            auto.export(type="onnx", quantize=False, output_dir=tmp, device="cpu", opset_version=OPSET)
        produced = sorted(p.name for p in Path(tmp).iterdir())
        for src, dst in (("model.onnx", "encoder.onnx"), ("decoder.onnx", "decoder.onnx")):
            if not (Path(tmp) / src).is_file():
                raise RuntimeError(f"funasr export did not write {src} (got {produced})")
            shutil.move(str(Path(tmp) / src), out_dir / dst)
            files.append(dst)

    enc_inputs, enc_outputs = _onnx_io(out_dir / "encoder.onnx")
    if [i["name"] for i in enc_inputs] != ENCODER_INPUTS or enc_outputs != ENCODER_OUTPUTS:
        raise RuntimeError(f"encoder.onnx: unexpected I/O {enc_inputs} -> {enc_outputs}")
    dec_inputs, dec_outputs = _onnx_io(out_dir / "decoder.onnx")
    dec_input_names = [i["name"] for i in dec_inputs]
    n_blocks = len(auto.model.decoder.decoders)
    in_caches = [f"in_cache_{i}" for i in range(n_blocks)]
    out_caches = [f"out_cache_{i}" for i in range(n_blocks)]
    if dec_input_names != ["enc", "enc_len", "acoustic_embeds", "acoustic_embeds_len", *in_caches] \
            or dec_outputs != ["logits", "sample_ids", *out_caches]:
        raise RuntimeError(f"decoder.onnx: unexpected I/O {dec_input_names} -> {dec_outputs}")
    cache_shape = [int(v) for v in dec_inputs[4]["shape"][1:]]
    expected_cache = [cfg["encoder_output_size"], cfg["decoder_fsmn"]["kernel_size"] - 1]
    if cache_shape != expected_cache:
        raise RuntimeError(f"decoder.onnx: cache shape {cache_shape}, expected {expected_cache}")

    max_diff = max(_check_onnx(out_dir, auto, cfg, dec_input_names, dec_outputs, cache_shape),
                   _check_lookback(out_dir, auto, cfg))
    if max_diff > MAX_ABS_DIFF:
        raise RuntimeError(f"exported streaming Paraformer differs from PyTorch by {max_diff}")

    if quantize:
        for name in ("encoder", "decoder", "encoder_lookback"):
            quantize_int8(out_dir / f"{name}.onnx", out_dir / f"{name}_quant.onnx")
            files.append(f"{name}_quant.onnx")

    cmvn_src = Path(auto.kwargs.get("frontend_conf", {}).get("cmvn_file") or model_dir / "am.mvn")
    shutil.copyfile(cmvn_src, out_dir / "am.mvn")
    files.append("am.mvn")
    tokens = _token_list(model_dir, auto.kwargs)
    if len(tokens) != cfg["vocab_size"]:
        raise ValueError(f"{len(tokens)} tokens in the token list, but the model has vocab_size {cfg['vocab_size']}")
    (out_dir / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
    files.append("tokens.json")

    cfg["encoder_lookback"]["quant_file"] = "encoder_lookback_quant.onnx" if quantize else None
    cfg.update({
        "encoder": {"file": "encoder.onnx", "quant_file": "encoder_quant.onnx" if quantize else None,
                    "inputs": ENCODER_INPUTS, "outputs": ENCODER_OUTPUTS},
        "decoder": {"file": "decoder.onnx", "quant_file": "decoder_quant.onnx" if quantize else None,
                    "inputs": dec_input_names, "outputs": dec_outputs,
                    "in_cache_names": in_caches, "out_cache_names": out_caches,
                    "cache_shape": cache_shape, "num_blocks": n_blocks},
        "opset": OPSET,
        "max_abs_diff_vs_torch": max_diff,
    })
    (out_dir / "paraformer_streaming.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    files.append("paraformer_streaming.json")

    log.info("exported streaming Paraformer to %s (max |onnx - torch| = %.2e)", out_dir, max_diff)
    return {
        "files": files,
        "source_dir": str(model_dir),
        "opset": OPSET,
        "config": cfg,
        "max_abs_diff": max_diff,
        "sha256": {name: sha256(out_dir / name) for name in files if name.endswith(".onnx")},
    }
