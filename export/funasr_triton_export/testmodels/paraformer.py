"""Random-weight SeACo-Paraformer (hotwords + timestamps) in FunASR hub layout.

`tiny` keeps every module of `speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404`
(SANM encoder, SANM decoder, CifPredictorV3 with the upsampling timestamp head, LSTM bias encoder,
SeACo decoder, vocabulary 8404 with the no-bias id 8377) at toy sizes; `large` has the real sizes
(about 220M parameters) and exists for speed measurements only.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .vocab import ASR_VOCAB_SIZE, ENGLISH_PIECES, asr_tokens

SIZES = {
    "tiny": dict(d=64, heads=4, enc_units=128, enc_blocks=2, dec_units=128, dec_blocks=2,
                 seaco_units=128, seaco_blocks=1),
    "large": dict(d=512, heads=4, enc_units=2048, enc_blocks=50, dec_units=2048, dec_blocks=16,
                  seaco_units=1024, seaco_blocks=4),
}


def config(size: str = "tiny") -> dict:
    s = SIZES[size]
    return {
        "model": "SeacoParaformer",
        "model_conf": {
            "ctc_weight": 0.0, "lsm_weight": 0.1, "length_normalized_loss": True,
            "predictor_weight": 1.0, "predictor_bias": 1, "sampling_ratio": 0.75,
            "inner_dim": s["d"], "bias_encoder_type": "lstm", "bias_encoder_bid": False,
            "seaco_lsm_weight": 0.1, "seaco_length_normalized_loss": True, "train_decoder": True,
            "NO_BIAS": 8377,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {
            "output_size": s["d"], "attention_heads": s["heads"], "linear_units": s["enc_units"],
            "num_blocks": s["enc_blocks"], "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1, "input_layer": "pe", "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True, "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm",
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {
            "attention_heads": s["heads"], "linear_units": s["dec_units"], "num_blocks": s["dec_blocks"],
            "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1, "att_layer_num": s["dec_blocks"], "kernel_size": 11,
            "sanm_shfit": 0,
        },
        "seaco_decoder": "ParaformerSANMDecoder",
        "seaco_decoder_conf": {
            "attention_heads": s["heads"], "linear_units": s["seaco_units"], "num_blocks": s["seaco_blocks"],
            "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1, "kernel_size": 21, "sanm_shfit": 0,
            "use_output_layer": False, "wo_input_layer": True,
        },
        "predictor": "CifPredictorV3",
        "predictor_conf": {
            "idim": s["d"], "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45,
            "smooth_factor2": 0.25, "noise_threshold2": 0.01, "upsample_times": 3,
            "use_cif1_cnn": False, "upsample_type": "cnn_blstm",
        },
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
            "lfr_m": 7, "lfr_n": 6, "dither": 0.0,
        },
        "specaug": None,
        "normalize": None,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        "input_size": 560,
    }


def write_cmvn(path: Path, dim: int = 560, seed: int = 0) -> None:
    """am.mvn in Kaldi nnet text form: <AddShift> = -mean, <Rescale> = 1/std."""
    rng = np.random.default_rng(seed)
    shift = -(8.0 + rng.normal(0.0, 1.5, dim))
    scale = 1.0 / (2.0 + rng.random(dim) * 2.0)
    fmt = lambda v: " ".join(f"{x:.6f}" for x in v)  # noqa: E731
    path.write_text(
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(shift)} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(scale)} ]\n"
        "</Nnet>\n"
    )


def save_random_model(conf: dict, path: Path, seed: int) -> None:
    """Instantiate the registered FunASR class of `conf` (every `<part>` / `<part>_conf` pair it names)
    with seeded random weights, lift the CIF bias, and save its state_dict to `path`."""
    import torch
    from funasr.register import tables

    parts = {}
    for part in ("encoder", "decoder", "seaco_decoder", "predictor"):
        if part in conf:
            parts.update({part: conf[part], f"{part}_conf": conf[f"{part}_conf"]})
    torch.manual_seed(seed)
    model = tables.model_classes.get(conf["model"])(
        **conf["model_conf"], **parts, input_size=conf["input_size"], vocab_size=ASR_VOCAB_SIZE)
    with torch.no_grad():  # random init gives near-silent CIF; lift the predictor so tokens fire
        for name, p in model.named_parameters():
            if name.endswith("predictor.cif_output.bias"):
                p.fill_(0.0)
    torch.save(model.state_dict(), path)


def build(out_dir: Path, size: str = "tiny", seed: int = 0) -> Path:
    import yaml

    import funasr.models.seaco_paraformer.model  # noqa: F401  (registers SeacoParaformer)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = config(size)
    save_random_model(conf, out_dir / "model.pt", seed)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True, sort_keys=False))
    tokens = asr_tokens()
    (out_dir / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False))
    # seg_dict maps hotword words to model tokens, as in the released model directory
    seg_lines = [f"{t} {t}" for t in tokens[3:-1] if not t.endswith("@@")]
    seg_lines += ["aiapp ai@@ app", "hello hello", "a a@@"]
    (out_dir / "seg_dict").write_text("\n".join(seg_lines) + "\n", encoding="utf-8")
    write_cmvn(out_dir / "am.mvn", seed=seed)
    (out_dir / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition",
        "model": {"type": "funasr"}, "file_path_metas": {
            "init_param": "model.pt", "config": "config.yaml", "tokenizer_conf": {"token_list": "tokens.json"},
            "frontend_conf": {"cmvn_file": "am.mvn"}},
    }, indent=2))
    return out_dir


__all__ = ["build", "config", "ENGLISH_PIECES"]
