"""The export package's commands of `funasr-triton` (composed with the others by funasr_triton_tools.cli):
`export` (a complete model repository) and `verify` (the served pipeline against FunASR AutoModel).

The modules imported here load torch and funasr only inside the functions that export or verify, so the
command line starts without the `export` extra.
"""
from __future__ import annotations

import sys
from pathlib import Path

from funasr_triton.cli import DEFAULT_REPO

from .exporters.itn import ITN_0_TO_9
from .exporters.wespeaker import WeSpeakerExportError
from .repository import export_repository, reusable_stages
from .sources import SPEAKER_MODELS, STAGES, SourceError, export_request, resolve
from .templates import TemplatesNotFound
from .verify import main as cmd_verify


def _model_dirs(values: list[str]) -> dict[str, Path]:
    out = {}
    for v in values:
        key, sep, path = v.partition("=")
        if not sep or not key or not path:
            raise SystemExit(f"--model-dir expects NAME=DIR (stage or FunASR name), got {v!r}")
        out[key] = Path(path)
    return out


def cmd_export(args) -> int:
    """Write a complete model repository into --repository: the skeleton (configs, model and shared code, as
    real files) always, the weights of each stage unless MANIFEST.json shows them exported for the same
    request (--force re-exports)."""
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    models = {"speaker": SPEAKER_MODELS[args.speaker_model]}
    if args.itn_enable_0_to_9:
        models["itn"] = f"{STAGES['itn']}{ITN_0_TO_9}"
    model_dirs = _model_dirs(args.model_dir)
    requests = {}
    for stage in stages:
        model = models.get(stage, STAGES.get(stage, ""))
        local = model_dirs.get(stage) or model_dirs.get(model)
        requests[stage] = export_request(stage, args.source, model, str(local.resolve()) if local else None,
                                         args.quantize)
    reused = [] if args.force else reusable_stages(Path(args.repository), requests)
    if reused:
        print(f"reusing the exported weights of {', '.join(reused)} (MANIFEST.json; --force re-exports)",
              file=sys.stderr)
    todo = [s for s in stages if s not in reused]
    try:
        sources = resolve(args.source, todo, model_dirs, Path(args.cache_dir), models)
        manifest = export_repository(Path(args.repository), sources, quantize=args.quantize,
                                     progress=lambda m: print(m, file=sys.stderr, flush=True),
                                     requests={s: requests[s] for s in todo})
    except (SourceError, WeSpeakerExportError, TemplatesNotFound) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.repository}/MANIFEST.json ({', '.join(manifest['stages'])})", file=sys.stderr)
    return 0


def register(sub) -> None:
    """Add `export` and `verify` to the subparsers of a `funasr-triton` parser."""
    e = sub.add_parser("export", help="write a complete Triton model repository (configs, code, exported "
                       "FunASR checkpoints) into any directory; re-running refreshes code and configs, reuses weights")
    e.add_argument("--source", choices=["modelscope", "test", "test-large"], default="modelscope")
    e.add_argument("--model-dir", action="append", default=[], metavar="NAME=DIR",
                   help="local FunASR hub-layout dir for a stage (asr, vad, punc, speaker, streaming, sensevoice) or name "
                        "(paraformer-zh, sensevoice-small, ...)")
    e.add_argument("--stages", default="vad,asr,punc,speaker,streaming,itn",
                   help="itn: the inverse-text-normalization FSTs, compiled from the installed WeTextProcessing "
                        "(no download; the same for every --source); sensevoice: SenseVoice-Small "
                        "(iic/SenseVoiceSmall), the second served model (model=sensevoice-small), opt-in")
    e.add_argument("--speaker-model", choices=["campplus", "pyannote"], default="campplus",
                   help="what fills speaker_embedding: FunASR's CAM++ (cam++, ModelScope) or the WeSpeaker ResNet34 of "
                        "pyannote.audio 3.1 (pyannote/wespeaker-voxceleb-resnet34-LM, Hugging Face; runs in the "
                        "interpreter `make pyannote-env` builds, or $FUNASR_TRITON_PYANNOTE_PYTHON)")
    e.add_argument("--quantize", action="store_true", help="also write int8 ONNX (model_quant.onnx) for the CPU")
    e.add_argument("--itn-enable-0-to-9", action="store_true",
                   help="itn stage: compile WeTextProcessing's enable_0_to_9 (三点 -> 3点, 第三名 -> 第3名), which "
                        "also turns some idioms into digits (一心一意 -> 1心1意; README table)")
    e.add_argument("--force", action="store_true",
                   help="re-export every stage even when MANIFEST.json shows its weights exported for the same request")
    e.add_argument("--repository", default=str(DEFAULT_REPO))
    e.add_argument("--cache-dir", default=".cache/models")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("verify", help="compare the served pipeline with FunASR AutoModel, stage by stage")
    v.add_argument("audio", nargs="+", help="audio files")
    v.add_argument("--url", default="127.0.0.1:8001")
    v.add_argument("--repository", default=str(DEFAULT_REPO), help="reads MANIFEST.json for the model dirs")
    v.add_argument("--model-dir", action="append", default=[], metavar="STAGE=DIR", help="override a stage's source dir")
    v.add_argument("--hotwords", default="阿里巴巴 达摩院", help="hotwords for the biased comparison")
    v.add_argument("--json", action="store_true")
    v.add_argument("--pipeline", action="store_true",
                   help="compare the whole served result (VAD + ASR + punctuation, text and timestamps) with "
                        "AutoModel(model=asr, vad_model=vad, punc_model=punc) instead of stage by stage")
    v.set_defaults(func=cmd_verify)
