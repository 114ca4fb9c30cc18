"""Tiny random-weight CAM++ speaker-embedding model in FunASR hub layout.

The layout follows the real `iic/speech_campplus_sv_zh-cn_16k-common` (`cam++`) release:
`config.yaml` (model CAMPPlus), the weights in `campplus_cn_common.bin` (a plain state_dict) and a
`configuration.json` whose `file_path_metas` names both. Only the sizes are tiny (embedding 64,
growth 8, bn_size 2, init_channels 32) and the weights are seeded random numbers; BatchNorm running
statistics are randomised too, so eval-mode inference is not an identity in any layer.

`funasr.AutoModel(model=str(out_dir), disable_update=True)` loads it with "All keys matched".
"""
from __future__ import annotations

import json
from pathlib import Path

WEIGHTS = "campplus_cn_common.bin"
EMBEDDING_SIZE = 64

CONFIG_YAML = f"""\
# Tiny random-weight CAM++ (test model); keys as in speech_campplus_sv_zh-cn_16k-common
model: CAMPPlus
model_conf:
    feat_dim: 80
    embedding_size: {EMBEDDING_SIZE}
    growth_rate: 8
    bn_size: 2
    init_channels: 32
    config_str: batchnorm-relu
    memory_efficient: true
    output_level: segment
"""

CONFIGURATION_JSON = {
    "framework": "pytorch",
    "task": "speaker-verification",
    "model_config": "config.yaml",
    "model_file": WEIGHTS,
    "model": {
        "type": "cam++-sv",
        "model_config": {"sample_rate": 16000, "fbank_dim": 80, "emb_size": EMBEDDING_SIZE},
        "pretrained_model": WEIGHTS,
    },
    "pipeline": {"type": "speaker-verification"},
    "file_path_metas": {"init_param": WEIGHTS, "config": "config.yaml"},
}


def build(out_dir: Path, seed: int = 0) -> Path:
    """Write the tiny model into `out_dir` (created) and return it. Same seed → same weights."""
    import torch
    import yaml
    from funasr.register import tables

    import funasr.models.campplus.model  # noqa: F401  (registers CAMPPlus)

    from . import randomize_batchnorm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(CONFIG_YAML)
    model_class = tables.model_classes.get(config["model"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(**config["model_conf"])
        gen = torch.Generator().manual_seed(seed + 1)
        randomize_batchnorm(model, gen)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out_dir / WEIGHTS)
    (out_dir / "config.yaml").write_text(CONFIG_YAML, encoding="utf-8")
    (out_dir / "configuration.json").write_text(json.dumps(CONFIGURATION_JSON, indent=2), encoding="utf-8")
    return out_dir
