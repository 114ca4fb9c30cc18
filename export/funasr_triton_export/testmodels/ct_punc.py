"""Tiny random-weight CT-Transformer punctuation model in FunASR hub layout.

The layout and config keys follow the real `iic/punc_ct-transformer_cn-en-common-vocab471067-large`
(`ct-punc`) release: `config.yaml` (model CTTransformer, SANMEncoder, CharTokenizer), `model.pt`
(a plain state_dict), `tokens.json` and `configuration.json`. Only the sizes are tiny (embed 32,
2 blocks, 8007 tokens: ~0.3M parameters) and the weights are seeded random numbers.

`funasr.AutoModel(model=str(out_dir), disable_update=True)` loads it with "All keys matched".
With `jieba_words` the directory also gets a `jieba_usr_dict` (the file the real large model ships),
which switches funasr (and our port) to jieba word segmentation.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .vocab import punc_tokens

PUNC_LIST = ["<unk>", "_", "，", "。", "？", "、"]
EMBED = 32

CONFIG_YAML = """\
# Tiny random-weight CT-Transformer (test model); keys as in punc_ct-transformer_cn-en-common-vocab471067-large
model: CTTransformer
model_conf:
    ignore_id: 0
    embed_unit: {embed}
    att_unit: {embed}
    dropout_rate: 0.1
    punc_list:
{punc_list}
    punc_weight:
{punc_weight}
    sentence_end_id: 3
encoder: SANMEncoder
encoder_conf:
    input_size: {embed}
    output_size: {embed}
    attention_heads: 4
    linear_units: 64
    num_blocks: 2
    dropout_rate: 0.1
    positional_dropout_rate: 0.1
    attention_dropout_rate: 0.0
    input_layer: pe
    pos_enc_class: SinusoidalPositionEncoder
    normalize_before: true
    kernel_size: 11
    sanm_shfit: 0
    selfattention_layer_type: sanm
    padding_idx: 0
tokenizer: CharTokenizer
tokenizer_conf:
    unk_symbol: <unk>
"""

CONFIGURATION_JSON = {
    "framework": "pytorch",
    "task": "punctuation",
    "model": {"type": "funasr"},
    "pipeline": {"type": "funasr-pipeline"},
    "model_name_in_hub": {"ms": "", "hf": ""},
    "file_path_metas": {
        "init_param": "model.pt",
        "config": "config.yaml",
        "tokenizer_conf": {"token_list": "tokens.json"},
    },
}


def _config_yaml() -> str:
    quoted = lambda s: '"' + s + '"'  # noqa: E731 - keep <unk>/_ as plain YAML strings
    return CONFIG_YAML.format(
        embed=EMBED,
        punc_list="\n".join(f"    - {quoted(p)}" for p in PUNC_LIST),
        punc_weight="\n".join("    - 1.0" for _ in PUNC_LIST),
    )


def build(out_dir: Path, seed: int = 0, jieba_words: Sequence[str] | None = None) -> Path:
    """Write the tiny model into `out_dir` (created) and return it. Same seed → same bytes of weights.

    jieba_words: when given, also write a `jieba_usr_dict` with these words (frequency 10000 each),
    so funasr segments the text with jieba like the real large model does.
    """
    import torch
    import yaml
    from funasr.register import tables

    # funasr registers its classes on import of the model packages
    import funasr.models.ct_transformer.model  # noqa: F401
    import funasr.models.sanm.encoder  # noqa: F401

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens = punc_tokens()
    config_text = _config_yaml()
    config = yaml.safe_load(config_text)

    model_class = tables.model_classes.get(config["model"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(
            **config["model_conf"],
            encoder=config["encoder"],
            encoder_conf=config["encoder_conf"],
            vocab_size=len(tokens),
        )
        # Make the random model less uniform: larger decoder weights spread the argmax over all
        # six classes, so every branch of the inference loop (sentence ends, commas, <unk>) runs.
        with torch.no_grad():
            model.decoder.weight.mul_(4.0)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out_dir / "model.pt")

    (out_dir / "config.yaml").write_text(config_text, encoding="utf-8")
    (out_dir / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
    conf_json = json.loads(json.dumps(CONFIGURATION_JSON))
    if jieba_words:
        (out_dir / "jieba_usr_dict").write_text(
            "".join(f"{w} 10000\n" for w in jieba_words), encoding="utf-8"
        )
        conf_json["file_path_metas"]["jieba_usr_dict"] = "jieba_usr_dict"
    elif (out_dir / "jieba_usr_dict").exists():
        (out_dir / "jieba_usr_dict").unlink()
    (out_dir / "configuration.json").write_text(json.dumps(conf_json, indent=2), encoding="utf-8")
    return out_dir
