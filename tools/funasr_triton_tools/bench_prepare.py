"""The bench's models: the test-large repository in .cache/bench/model_repository (exported once, reused while
its MANIFEST.json says so) and the directories funasr_onnx loads (funasr's own export layout).

`prepare` runs in a child process (`run_worker("prepare", ...)`: it imports funasr); `prepare_models` is the
bench's step 1.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from funasr_triton_export.onnx_utils import legacy_onnx_export
from funasr_triton_export.repository import STAGE_GRAPH_OUTPUTS, export_repository
from funasr_triton_export.sources import STAGES as STAGE_MODELS
from funasr_triton_export.sources import export_request, resolve
from funasr_triton_export.templates import write_repository

from . import bench_streaming
from .bench_common import CACHE, ONNX_DIR, REPO, progress, run_worker

SOURCE = "test-large"
ASR_ORIGIN = "test:paraformer-large"
STREAMING_ORIGIN = "test:paraformer_streaming-large"
STAGES = ["vad", "asr", "punc", "streaming"]


def _stages_to_export(repo: Path) -> list[str]:
    """The STAGES whose exported files are missing or not test-large (the rest are reused)."""
    manifest = repo / "MANIFEST.json"
    try:
        stages = json.loads(manifest.read_text())["stages"] if manifest.exists() else {}
    except (ValueError, KeyError):
        stages = {}
    ok = {
        "vad": (repo / "vad" / "1" / "model.onnx").exists()
        and (repo / "streaming_asr" / "1" / "vad" / "model.onnx").exists(),
        "asr": stages.get("asr", {}).get("origin") == ASR_ORIGIN
        and (repo / "paraformer" / "1" / "model_quant.onnx").exists(),
        "punc": (repo / "punc" / "1" / "model.onnx").exists(),
        "streaming": stages.get("streaming", {}).get("origin") == STREAMING_ORIGIN
        and (repo / "streaming_asr" / "1" / "paraformer" / "encoder_quant.onnx").exists(),
    }
    # an export from before a graph gained outputs (token_logprobs) is stale, as for `funasr-triton export`
    current = {s: stages.get(s, {}).get("graph_outputs") == STAGE_GRAPH_OUTPUTS[s] for s in STAGE_GRAPH_OUTPUTS}
    # so are weights an older test-model builder built (its VERSION, recorded in the export's request)
    for s, request in _requests(STAGES).items():
        if "test_version" in request:
            recorded = (stages.get(s, {}).get("request") or {}).get("test_version")
            current[s] = current.get(s, True) and recorded == request["test_version"]
    return [s for s in STAGES if not (s in stages and stages[s].get("quantize") and ok[s] and current.get(s, True))]


def _requests(stages: list[str]) -> dict[str, dict]:
    """What `funasr-triton export --source test-large --quantize` records for these stages (reusable_stages)."""
    return {s: export_request(s, SOURCE, STAGE_MODELS.get(s, ""), None, True) for s in stages}


def prepare(spec: dict) -> dict:
    """(worker) Export the bench repository and funasr_onnx's directories when missing."""
    repo, onnx_dir, cache_dir = Path(spec["repo"]), Path(spec["onnx_dir"]), Path(spec["cache_dir"])
    out: dict = {}
    missing = _stages_to_export(repo)
    if not missing:
        progress(f"reusing {repo} (MANIFEST.json: asr from {ASR_ORIGIN}, streaming from {STREAMING_ORIGIN})")
    else:
        progress(f"exporting --source {SOURCE} ({', '.join(missing)}, --quantize) into {repo}; takes 1-2 min "
                 "per large stage")
        t0 = time.monotonic()
        sources = resolve(SOURCE, missing, {}, cache_dir)
        export_repository(repo, sources, quantize=True, progress=progress, requests=_requests(missing))
        out["export_s"] = round(time.monotonic() - t0, 1)
        out["exported_stages"] = missing
    manifest = json.loads((repo / "MANIFEST.json").read_text())
    src = {s: Path(manifest["stages"][s]["source_dir"]) for s in STAGES}
    asr_stamp = f"{manifest['stages']['asr']['origin']} {manifest['stages']['asr']['files']['paraformer/1/model.onnx']['sha256']}"

    # funasr_onnx wants funasr's own export layout per model: model.onnx (+ model_eb.onnx for
    # SeACo), config.yaml, am.mvn, tokens.json in one directory
    asr = onnx_dir / "asr"
    stamp = asr / "SOURCE"
    if not (asr / "model.onnx").exists() or not (asr / "model_eb.onnx").exists() or \
            not stamp.exists() or stamp.read_text() != asr_stamp:
        progress("exporting the ASR model with funasr's own exporter for funasr_onnx (model.onnx + model_eb.onnx)")
        from funasr import AutoModel

        t0 = time.monotonic()
        asr.mkdir(parents=True, exist_ok=True)
        auto = AutoModel(model=str(src["asr"]), disable_update=True, device="cpu", disable_pbar=True, disable_log=True)
        with legacy_onnx_export():
            auto.export(type="onnx", quantize=False, output_dir=str(asr), device="cpu")
        for name in ("config.yaml", "am.mvn", "tokens.json"):
            shutil.copyfile(src["asr"] / name, asr / name)
        stamp.write_text(asr_stamp)
        out["funasr_onnx_export_s"] = round(time.monotonic() - t0, 1)
    vad = onnx_dir / "vad"  # the repository's VAD model.onnx + its hub config.yaml
    vad.mkdir(parents=True, exist_ok=True)
    for s, name in ((repo / "vad" / "1" / "model.onnx", "model.onnx"), (repo / "vad" / "1" / "am.mvn", "am.mvn"),
                    (src["vad"] / "config.yaml", "config.yaml")):
        shutil.copyfile(s, vad / name)
    punc = onnx_dir / "punc"  # the repository's punc dir already has model.onnx, tokens.json, config.yaml
    punc.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "tokens.json", "config.yaml", "jieba_usr_dict"):
        if (repo / "punc" / "1" / name).exists():
            shutil.copyfile(repo / "punc" / "1" / name, punc / name)
    bench_streaming.funasr_onnx_streaming_dir(repo, onnx_dir / "streaming", src["streaming"])
    out["source_dirs"] = {k: str(v) for k, v in src.items()}
    out["origins"] = {s: manifest["stages"][s]["origin"] for s in STAGES}
    out["manifest_written_at"] = manifest["written_at"]
    return out


WORKERS = {"prepare": prepare}


def prepare_models() -> dict:
    """Refresh the repository's templates, export what is missing (child process) and return what `prepare`
    reports (source dirs, origins); {"error": ..., "traceback": ...} when it failed."""
    write_repository(REPO)
    prep = run_worker("prepare", {"repo": str(REPO), "onnx_dir": str(ONNX_DIR), "cache_dir": str(CACHE / "models")})
    if (REPO / "speaker_embedding").exists():  # the pipeline never calls it, nothing exports it; Triton would load it
        shutil.rmtree(REPO / "speaker_embedding")
    return prep
