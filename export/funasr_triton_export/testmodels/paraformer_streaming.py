"""Random-weight streaming Paraformer (`paraformer-zh-streaming`) in FunASR hub layout.

Mirrors `iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-online` module by module
(ParaformerStreaming: SANMEncoderChunkOpt with the streaming position encoder `pe_online`,
ParaformerSANMDecoder with the causal FSMN memory `sanm_shfit: 5`, CifPredictorV2 with
tail_threshold 0.45, WavFrontendOnline with LFR 7/6 on 80 mel bins, the 8404-token vocabulary) at
toy sizes (d=64, 2 encoder blocks, 2 decoder blocks; 1.35M parameters, most of them the output
layer). Weights are seeded random numbers; the CIF output bias is zeroed so that the predictor
fires about every second LFR frame (random init is otherwise nearly silent). `large` has the real
sizes (d=512, 50 encoder and 16 decoder blocks) for speed measurements (`--source test-large`).

`funasr.AutoModel(model=str(out_dir), disable_update=True)` loads it with "All keys matched".
"""
from __future__ import annotations

import json
from pathlib import Path

from .paraformer import save_random_model, write_cmvn
from .vocab import asr_tokens

SIZES = {
    "tiny": dict(d=64, heads=4, enc_units=128, enc_blocks=2, dec_units=128, dec_blocks=2),
    "large": dict(d=512, heads=4, enc_units=2048, enc_blocks=50, dec_units=2048, dec_blocks=16),
}


def config(size: str = "tiny") -> dict:
    s = SIZES[size]
    return {
        "model": "ParaformerStreaming",
        "model_conf": {
            "ctc_weight": 0.0, "lsm_weight": 0.1, "length_normalized_loss": True,
            "predictor_weight": 1.0, "predictor_bias": 1, "sampling_ratio": 0.75,
        },
        "encoder": "SANMEncoderChunkOpt",
        "encoder_conf": {
            "output_size": s["d"], "attention_heads": s["heads"], "linear_units": s["enc_units"],
            "num_blocks": s["enc_blocks"], "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1, "input_layer": "pe_online",
            "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True, "kernel_size": 11,
            "sanm_shfit": 0, "selfattention_layer_type": "sanm",
            # training-time chunking (offline forward only; streaming inference uses chunk_size)
            "chunk_size": [12, 15], "stride": [8, 10], "pad_left": [0, 0],
            "encoder_att_look_back_factor": [4, 4], "decoder_att_look_back_factor": [1, 1],
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {
            "attention_heads": s["heads"], "linear_units": s["dec_units"], "num_blocks": s["dec_blocks"],
            "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1, "att_layer_num": s["dec_blocks"], "kernel_size": 11,
            "sanm_shfit": 5,
        },
        "predictor": "CifPredictorV2",
        "predictor_conf": {"idim": s["d"], "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45},
        "frontend": "WavFrontendOnline",
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


def build(target: Path, size: str = "tiny", seed: int = 0) -> Path:
    import yaml

    import funasr.models.paraformer_streaming.model  # noqa: F401  (registers ParaformerStreaming)

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    conf = config(size)
    save_random_model(conf, target / "model.pt", seed)
    (target / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True, sort_keys=False))
    (target / "tokens.json").write_text(json.dumps(asr_tokens(), ensure_ascii=False))
    write_cmvn(target / "am.mvn", seed=seed)
    (target / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition",
        "model": {"type": "funasr"}, "file_path_metas": {
            "init_param": "model.pt", "config": "config.yaml", "tokenizer_conf": {"token_list": "tokens.json"},
            "frontend_conf": {"cmvn_file": "am.mvn"}},
    }, indent=2))
    return target


__all__ = ["build", "config"]
