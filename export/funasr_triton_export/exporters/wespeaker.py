"""pyannote.audio's WeSpeaker ResNet34 speaker embedding → model.onnx + embedding.json for the Triton
`speaker_embedding` stage (`funasr-triton export --speaker-model pyannote`), the slot CAM++ fills by default.

The checkpoint is the one pyannote.audio 3.1's speaker-diarization pipeline uses
(pyannote/wespeaker-voxceleb-resnet34-LM, `pytorch_model.bin`) or any pyannote `BaseWeSpeakerResNet`
checkpoint. It is loaded with pyannote.audio's own `Model.from_pretrained`, and the model's ResNet
(`model.resnet`, everything after the fbank) is exported with the legacy TorchScript exporter:

  inputs   feats f32 [B, frames, 80]   (kaldi fbank of samples x32768, hamming window, mean subtracted)
  outputs  embedding f32 [B, 256]

The fbank itself is not in the graph: Triton computes it with kaldi-native-fbank
(funasr_triton_models.speaker_features) from the options written to embedding.json, exactly as for CAM++.

pyannote.audio 3.x needs torchaudio < 2.9, which cannot share an environment with the torch this
project pins for the FunASR exporters, so this part runs in its own interpreter: the parent
(`export_wespeaker`, called by repository.py) starts `python -m funasr_triton_export.exporters.wespeaker`
with the interpreter `pyannote_python()` names and reads its JSON result. `make pyannote-env` builds
that interpreter (see export/pyannote-env.sh).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

INPUTS = ["feats"]
OUTPUTS = ["embedding"]
OPSET = 17
META_FILE = "embedding.json"  # what model_repository/speaker_embedding/1/model.py reads
CHECKPOINT = "pytorch_model.bin"  # pyannote's HF_PYTORCH_WEIGHTS_NAME
PYTHON_ENV = "FUNASR_TRITON_PYANNOTE_PYTHON"
CHECK_FRAMES = (9, 100, 151, 437)  # the shortest that pools >= 2 frames, 1 s, 1.5 s, a ragged length
MIN_REL_DIFF = 1e-3


class WeSpeakerExportError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# parent side (the funasr-triton export process, torch 2.13 + funasr, no torchaudio)


def pyannote_python() -> str:
    """The interpreter that has pyannote.audio 3.x: $FUNASR_TRITON_PYANNOTE_PYTHON, else the one
    `make pyannote-env` builds next to this environment (<venv>/pyannote), else this one."""
    explicit = os.environ.get(PYTHON_ENV)
    if explicit:
        return explicit
    beside = Path(sys.prefix) / "pyannote" / "bin" / "python"
    return str(beside) if beside.exists() else sys.executable


def run_child(module: str, args: list[str], python: str | None = None) -> dict:
    """Run `python -m module args...` in the pyannote interpreter; its last stdout line is JSON."""
    python = python or pyannote_python()
    python = shutil.which(python) or python  # a bare name ("python3") is looked up on PATH
    if not Path(python).exists():
        raise WeSpeakerExportError(f"{PYTHON_ENV}={python}: no such interpreter")
    proc = subprocess.run([python, "-m", module, *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise WeSpeakerExportError(
            f"{module} failed in {python} (exit {proc.returncode}); its error is printed above. "
            f"The pyannote speaker model needs pyannote.audio 3.x (torchaudio < 2.9) in that interpreter: "
            f"run `make pyannote-env`, or point {PYTHON_ENV} at a Python that has it")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise WeSpeakerExportError(f"{module} printed no JSON result: {proc.stdout[-500:]!r}") from exc


def find_checkpoint(src: Path) -> Path:
    src = Path(src)
    path = src / CHECKPOINT if src.is_dir() else src
    if not path.is_file():
        raise WeSpeakerExportError(f"{src}: no pyannote checkpoint ({CHECKPOINT}) there")
    return path


def export_wespeaker(src: Path, out_dir: Path, python: str | None = None) -> dict:
    """Export a pyannote WeSpeaker checkpoint (file, or directory holding pytorch_model.bin) into
    `out_dir` (the Triton `speaker_embedding` model version dir)."""
    checkpoint = find_checkpoint(src)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = run_child(__name__, ["--checkpoint", str(checkpoint), "--out-dir", str(out_dir)], python)
    log.info("exported pyannote %s to %s (max relative |onnx - torch| = %.2e, end-to-end cosine %s)",
             result["embedding"]["model_class"], out_dir, result["max_rel_diff"], result.get("min_cosine"))
    return result


def reference_embeddings(checkpoint: Path, clips: list, python: str | None = None) -> "np.ndarray":
    """pyannote.audio's own `model(waveform)` (torchaudio fbank + PyTorch ResNet) for each 16 kHz clip,
    computed in the pyannote interpreter: what `funasr-triton verify` and the tests compare Triton with."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="wespeaker-ref-") as tmp:
        np.savez(Path(tmp) / "clips.npz", *[np.asarray(c, dtype=np.float32) for c in clips])
        run_child(__name__, ["--checkpoint", str(find_checkpoint(checkpoint)), "--reference-clips",
                             str(Path(tmp) / "clips.npz"), "--reference-out", str(Path(tmp) / "ref.npy")], python)
        return np.load(Path(tmp) / "ref.npy")


# ---------------------------------------------------------------------------------------------
# child side (the pyannote interpreter: torch + torchaudio < 2.9 + pyannote.audio 3.x)


def load_pyannote_model(checkpoint: Path):
    """pyannote.audio's own loader. torch >= 2.6 loads checkpoints with weights_only=True, which
    refuses the task objects pyannote pickles into every checkpoint; they are allowed by name here
    (pyannote.audio 3.x does not do it itself: pyannote/pyannote-audio#1908)."""
    import torch
    from pyannote.audio import Model
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from torch.torch_version import TorchVersion

    with torch.serialization.safe_globals([Specifications, Problem, Resolution, TorchVersion]):
        model = Model.from_pretrained(str(checkpoint), map_location="cpu", strict=True)
    if model is None:
        raise WeSpeakerExportError(f"pyannote.audio could not load {checkpoint}")
    return model.eval()


def embedding_config(model) -> dict:
    from pyannote.audio.models.embedding.wespeaker import BaseWeSpeakerResNet

    if not isinstance(model, BaseWeSpeakerResNet):
        raise WeSpeakerExportError(
            f"the checkpoint holds a {type(model).__name__}; the speaker_embedding slot takes pyannote's "
            "WeSpeaker ResNets (WeSpeakerResNet34 = pyannote/wespeaker-voxceleb-resnet34-LM)")
    hp = dict(model.hparams)
    if hp.get("fbank_centering_span") is not None:
        raise WeSpeakerExportError(
            f"fbank_centering_span={hp['fbank_centering_span']}: only whole-window mean subtraction is served")
    if int(hp.get("sample_rate", 16000)) != 16000 or int(hp.get("num_channels", 1)) != 1:
        raise WeSpeakerExportError(f"the served embedding takes 16 kHz mono, not {hp.get('sample_rate')} Hz "
                                   f"x {hp.get('num_channels')} channels")
    if float(hp.get("dither", 0.0)) != 0.0:
        log.warning("checkpoint has dither=%s; served features use dither 0 (deterministic)", hp["dither"])
    bins = int(hp.get("num_mel_bins", 80))
    window_ms, shift_ms = float(hp.get("frame_length", 25)), float(hp.get("frame_shift", 10))
    # torchaudio.compliance.kaldi.fbank as BaseWeSpeakerResNet.compute_fbank calls it: the options it
    # passes over torchaudio's defaults for the rest
    # the served features' defaults; imported here because the command line imports this module (for
    # WeSpeakerExportError) in the frontend image, which has no model code
    from funasr_triton_models.speaker_features import DEFAULT_OPTIONS as SPEAKER_FBANK_DEFAULTS

    features = dict(
        SPEAKER_FBANK_DEFAULTS,
        num_mel_bins=bins,
        frame_length=window_ms,
        frame_shift=shift_ms,
        window_type=str(hp.get("window_type", "hamming")),
        round_to_power_of_two=bool(hp.get("round_to_power_of_two", True)),
        snip_edges=bool(hp.get("snip_edges", True)),
        use_energy=bool(hp.get("use_energy", False)),
        waveform_scale=float(1 << 15),  # compute_fbank: waveforms * (1 << 15)
    )
    if features["use_energy"]:
        raise WeSpeakerExportError("use_energy=True adds an energy column the served features do not compute")
    # three stride-2 stages, then an unbiased std over the remaining frames: 9 fbank frames at least
    window, shift = int(16000 * window_ms / 1000), int(16000 * shift_ms / 1000)
    from pyannote.audio import __version__ as pyannote_version

    return {
        "format": 1,
        "model_class": type(model).__name__,
        "source": "pyannote.audio",
        "pyannote_audio": pyannote_version,
        "embedding_size": int(model.resnet.embed_dim),
        "feat_dim": bins,
        "sample_rate": 16000,
        "min_samples": window + (CHECK_FRAMES[0] - 1) * shift,
        "features": features,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
        "opset": OPSET,
    }


def _resnet_head(model):
    import torch

    class ResNetEmbedding(torch.nn.Module):
        """model.resnet on precomputed features: what BaseWeSpeakerResNet.forward does after compute_fbank."""

        def __init__(self, resnet):
            super().__init__()
            self.resnet = resnet

        def forward(self, feats):
            return self.resnet(feats)[1]

    return ResNetEmbedding(model.resnet).eval()


def _check_onnx(path: Path, head, cfg: dict) -> float:
    import numpy as np
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = {i.name: i.type for i in sess.get_inputs()}
    outs = [o.name for o in sess.get_outputs()]
    if ins != {"feats": "tensor(float)"} or outs != OUTPUTS:
        raise WeSpeakerExportError(f"{path}: unexpected ONNX I/O {ins} -> {outs}")
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch, frames in zip((1, 2, 1, 3), CHECK_FRAMES):
        x = rng.standard_normal((batch, frames, cfg["feat_dim"])).astype(np.float32)
        (y,) = sess.run(OUTPUTS, {"feats": x})
        if y.shape != (batch, cfg["embedding_size"]):
            raise WeSpeakerExportError(f"{path}: embedding shape {y.shape}, expected ({batch}, {cfg['embedding_size']})")
        with torch.no_grad():
            ref = head(torch.from_numpy(x.copy())).numpy()
        worst = max(worst, float(np.abs(ref - y).max() / max(1.0, float(np.abs(ref).max()))))
    return worst


def _check_end_to_end(path: Path, model, cfg: dict) -> float:
    """pyannote's own forward (torchaudio fbank + ResNet) vs the served path (kaldi-native-fbank
    features from funasr_triton_models.speaker_features + the ONNX graph) on deterministic noise-like
    test signals; returns the smallest cosine."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from funasr_triton_models import speaker_features as mod
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    t = np.arange(24000) / 16000.0
    worst = 1.0
    for k in range(3):  # chirp + noise at three levels: exercises preemphasis, window and log floor
        wav = (0.3 / (k + 1)) * np.sin(2 * np.pi * (150 + 400 * k) * t * (1 + t)) + 0.02 * rng.standard_normal(t.size)
        wav = wav.astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(wav)[None, None]).numpy()[0]
        (emb,) = sess.run(OUTPUTS, {"feats": mod.speaker_features(wav, cfg)[None]})
        cos = float(ref @ emb[0] / (np.linalg.norm(ref) * np.linalg.norm(emb[0])))
        worst = min(worst, cos)
    return worst


def export_child(checkpoint: Path, out_dir: Path) -> dict:
    import torch

    from ..onnx_utils import sha256

    model = load_pyannote_model(checkpoint)
    cfg = embedding_config(model)
    head = _resnet_head(model)
    onnx_path = out_dir / "model.onnx"
    dummy = torch.randn(2, 150, cfg["feat_dim"], generator=torch.Generator().manual_seed(0))
    log.info("exporting %s (%d parameters) to %s", cfg["model_class"],
             sum(p.numel() for p in head.parameters()), onnx_path)
    with torch.no_grad():
        torch.onnx.export(
            head, (dummy,), str(onnx_path), dynamo=False, opset_version=OPSET,
            input_names=INPUTS, output_names=OUTPUTS,
            dynamic_axes={"feats": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}},
            do_constant_folding=True,
        )
    rel_diff = _check_onnx(onnx_path, head, cfg)
    if rel_diff > MIN_REL_DIFF:
        raise WeSpeakerExportError(f"exported model.onnx differs from PyTorch by {rel_diff} (relative)")
    min_cosine = _check_end_to_end(onnx_path, model, cfg)
    if min_cosine < 0.999:
        raise WeSpeakerExportError(f"served features + ONNX vs pyannote's forward: cosine {min_cosine:.5f} < 0.999")
    (out_dir / META_FILE).write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return {
        "files": ["model.onnx", META_FILE],
        "opset": OPSET,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
        "embedding": cfg,
        "max_rel_diff": rel_diff,
        "min_cosine": min_cosine,
        "sha256": {"model.onnx": sha256(onnx_path)},
    }


def reference_child(checkpoint: Path, clips_npz: Path, out_npy: Path) -> dict:
    import numpy as np
    import torch

    model = load_pyannote_model(checkpoint)
    clips = np.load(clips_npz)
    names = sorted(clips.files, key=lambda n: int(n.rsplit("_", 1)[1]))  # np.savez: arr_0, arr_1, ...
    with torch.no_grad():
        out = [model(torch.from_numpy(clips[n].astype(np.float32))[None, None]).numpy()[0] for n in names]
    np.save(out_npy, np.stack(out) if out else np.zeros((0, 0), np.float32))
    return {"clips": len(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--out-dir", type=Path, help="export into this model version dir")
    parser.add_argument("--reference-clips", type=Path, help="instead: embed the clips of this .npz with pyannote")
    parser.add_argument("--reference-out", type=Path, help="... into this .npy")
    args = parser.parse_args(argv)
    if (args.out_dir is None) == (args.reference_clips is None) or (args.reference_clips is None) != (args.reference_out is None):
        parser.error("give --out-dir, or --reference-clips with --reference-out")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.out_dir is not None:
            result = export_child(args.checkpoint, args.out_dir)
        else:
            result = reference_child(args.checkpoint, args.reference_clips, args.reference_out)
    except (ImportError, OSError, WeSpeakerExportError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
