"""Random-weight pyannote WeSpeaker ResNet34 checkpoint, in the layout of pyannote/wespeaker-voxceleb-resnet34-LM.

The model is pyannote.audio's own `WeSpeakerResNet34` (real size: 6.6 M parameters, 256-dim
embeddings) with seeded random weights and randomised BatchNorm statistics. The checkpoint is what
pyannote's Lightning saving writes and `Model.from_pretrained` reads: `state_dict`,
`hyper_parameters`, `pytorch-lightning_version`, and the `pyannote.audio` section (versions,
architecture, pickled task Specifications) filled by the model's own `on_save_checkpoint`.

Runs in the pyannote interpreter (`make pyannote-env`); the export process calls `build()`, which
starts `python -m funasr_triton_export.testmodels.wespeaker OUT_DIR` there.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

CHECKPOINT = "pytorch_model.bin"
CONFIG_YAML = """\
# random-weight test model (pyannote/wespeaker-voxceleb-resnet34-LM layout)
model:
  _target_: pyannote.audio.models.embedding.WeSpeakerResNet34
"""


def build(out_dir: Path, seed: int = 0, python: str | None = None) -> Path:
    """Write the checkpoint into `out_dir` (created), in the pyannote interpreter. Same seed → same weights."""
    from ..exporters.wespeaker import run_child

    out_dir = Path(out_dir)
    run_child(__name__, [str(out_dir), "--seed", str(seed)], python)
    return out_dir


def write_checkpoint(out_dir: Path, seed: int = 0) -> dict:
    import pytorch_lightning as pl
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    from . import randomize_batchnorm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WeSpeakerResNet34()
        gen = torch.Generator().manual_seed(seed + 1)
        randomize_batchnorm(model, gen)
    # an embedding model has no task; pyannote's checkpoints carry representation specifications
    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0)
    checkpoint = {
        "state_dict": {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": pl.__version__,
    }
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, out_dir / CHECKPOINT)
    (out_dir / "config.yaml").write_text(CONFIG_YAML, encoding="utf-8")
    return {"checkpoint": str(out_dir / CHECKPOINT), "parameters": sum(p.numel() for p in model.parameters())}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="write a random-weight pyannote WeSpeaker ResNet34 checkpoint")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(write_checkpoint(args.out_dir, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
