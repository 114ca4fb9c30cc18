"""Fill `model_repository/<model>/1/` from resolved FunASR sources and write MANIFEST.json."""
from __future__ import annotations

import datetime
import json
import logging
import platform
import time
from pathlib import Path
from typing import Callable

from .onnx_utils import sha256
from .sources import ResolvedSource

log = logging.getLogger(__name__)

# repository models that each stage fills
STAGE_MODELS = {
    "vad": ["vad"],
    "asr": ["paraformer", "feature_extractor", "asr_decode"],
    "punc": ["punc"],
    "speaker": ["speaker_embedding"],
}


def _export_stage(stage: str, src: Path, repo: Path, quantize: bool) -> None:
    if stage == "vad":
        from .exporters.vad import export_vad
        export_vad(src, repo / "vad" / "1")
    elif stage == "asr":
        from .exporters.paraformer import export_asr_assets, export_paraformer
        export_paraformer(src, repo / "paraformer" / "1", quantize=quantize)
        export_asr_assets(src, repo / "feature_extractor" / "1")
        export_asr_assets(src, repo / "asr_decode" / "1")
    elif stage == "punc":
        from .exporters.punc import export_punc
        export_punc(src, repo / "punc" / "1", quantize=quantize)
    elif stage == "speaker":
        from .exporters.campplus import export_campplus
        export_campplus(src, repo / "speaker_embedding" / "1")
    else:
        raise ValueError(stage)


def export_repository(repo: Path, sources: dict[str, ResolvedSource], quantize: bool = False,
                      progress: Callable[[str], None] = print) -> dict:
    repo = Path(repo)
    manifest_path = repo / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"stages": {}}
    total = len(sources)
    for i, (stage, src) in enumerate(sources.items(), 1):
        progress(f"[{i}/{total}] exporting {stage} from {src.origin} ({src.path})")
        t0 = time.monotonic()
        _export_stage(stage, src.path, repo, quantize)
        files = {}
        for model in STAGE_MODELS[stage]:
            for f in sorted((repo / model / "1").iterdir()):
                if f.is_file() and not f.is_symlink() and f.suffix != ".py":
                    files[f"{model}/1/{f.name}"] = {"sha256": sha256(f), "bytes": f.stat().st_size}
        manifest["stages"][stage] = {"origin": src.origin, "source_dir": str(src.path), "quantize": quantize,
                                     "files": files, "seconds": round(time.monotonic() - t0, 1)}
        progress(f"[{i}/{total}] {stage} done in {time.monotonic() - t0:.1f} s ({len(files)} files)")
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
