"""`funasr-triton` command line: export, triton, transcribe, listen, verify, bench.

Runtime commands (triton, transcribe) need neither torch nor funasr; export/verify/bench import
them lazily from the `export` extra.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from . import logs
from .logs import event

log = logging.getLogger("funasr_triton")
DEFAULT_REPO = Path("model_repository")


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
    from funasr_triton_export.exporters.wespeaker import WeSpeakerExportError
    from funasr_triton_export.repository import export_repository, reusable_stages
    from funasr_triton_export.exporters.itn import ITN_0_TO_9
    from funasr_triton_export.sources import PACKAGE_STAGES, SPEAKER_MODELS, STAGES, SourceError, resolve
    from funasr_triton_export.templates import TemplatesNotFound

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    models = {"speaker": SPEAKER_MODELS[args.speaker_model]}
    if args.itn_enable_0_to_9:
        models["itn"] = f"{STAGES['itn']}{ITN_0_TO_9}"
    model_dirs = _model_dirs(args.model_dir)
    requests = {}
    for stage in stages:
        model = models.get(stage, STAGES.get(stage, ""))
        local = model_dirs.get(stage) or model_dirs.get(model)
        requests[stage] = {"source": args.source, "model": model, "model_dir": str(local.resolve()) if local else None,
                           "quantize": args.quantize}
        if stage in PACKAGE_STAGES:  # built from an installed package: the same whatever the source
            requests[stage] = {"source": "package", "model": model, "model_dir": None, "quantize": False}
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


def cmd_triton(args) -> int:
    from .server import PortBusy, TritonOptions, serve_forever

    from .profiles import resolve

    try:
        return serve_forever(TritonOptions(Path(args.model_repository), resolve(args.profile), args.grpc_port,
                                           args.metrics_port, args.http_port, args.address, args.log_verbose))
    except PortBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


SHUTDOWN_GRACE_ENV = "FUNASR_TRITON_SHUTDOWN_GRACE_S"
MAX_RESTARTS_ENV = "FUNASR_TRITON_MAX_TRITON_RESTARTS"


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}")


def _uvicorn_server(app, host: str, port: int):
    """uvicorn that, on SIGTERM/SIGINT, stops accepting and lets in-flight requests finish for up to
    FUNASR_TRITON_SHUTDOWN_GRACE_S seconds (default 30) before cancelling them."""
    import uvicorn

    grace = _env_number(SHUTDOWN_GRACE_ENV, 30.0)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=grace)
    return uvicorn.Server(config)


class _Shutdown(Exception):
    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _raise_shutdown(signum, _frame):
    raise _Shutdown(signum)


def _run_until_signal(server) -> None:
    """Run uvicorn; a SIGTERM/SIGINT ends it gracefully and then returns here.

    uvicorn restores the handlers it found and re-raises the signal it caught after its own shutdown;
    with the default SIGTERM handler that kills the process right there (no cleanup: an embedded Triton
    was left running). Our handler turns the re-raised signal into an exception, so callers' `with`
    blocks (EmbeddedTriton.__exit__) run. A signal before uvicorn is up raises the same exception."""
    previous = {sig: signal.signal(sig, _raise_shutdown) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    except _Shutdown as e:
        event(log, "shut down", signal=signal_name(e.signum))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_frontend(args) -> int:
    from .app.config import Settings
    from .app.main import create_app

    settings = Settings()
    logs.setup(settings.log_level)
    host, port = args.host or settings.host, args.port or settings.port
    _run_until_signal(_uvicorn_server(create_app(settings), host, port))
    return 0


def liveness_guard(app, triton):
    """ASGI wrapper: /health answers 503 once the supervised Triton is gone for good (triton.failed)."""
    async def guarded(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/health" and triton.failed:
            body = json.dumps({"status": "failed", "reason": "tritonserver exited and could not be restarted"}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)
    return guarded


def cmd_serve(args) -> int:
    """Embedded Triton + the HTTP frontend in one command (what `make serve` runs).

    Triton is supervised (restarted with backoff when it dies; /health fails after
    FUNASR_TRITON_MAX_TRITON_RESTARTS failed attempts in a row, default 5). SIGTERM/SIGINT: the frontend
    stops accepting and drains (FUNASR_TRITON_SHUTDOWN_GRACE_S), then Triton gets SIGTERM and is waited for.
    """
    from .app.config import Settings
    from .app.main import create_app
    from .server import EmbeddedTriton, PortBusy, TritonOptions

    settings = Settings()
    from .profiles import resolve

    opts = TritonOptions(Path(args.model_repository), resolve(args.profile), args.grpc_port, args.metrics_port,
                         args.http_port)
    settings.triton.url = f"127.0.0.1:{args.grpc_port}"
    triton = EmbeddedTriton(opts)
    max_restarts = int(_env_number(MAX_RESTARTS_ENV, 5))
    previous = {sig: signal.signal(sig, _raise_shutdown) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with triton:
            triton.supervise(max_restarts=max_restarts)
            server = _uvicorn_server(liveness_guard(create_app(settings), triton),
                                     args.host or settings.host, args.port or settings.port)
            _run_until_signal(server)
    except PortBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except _Shutdown as e:  # while Triton was starting
        event(log, "shut down", signal=signal_name(e.signum))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def cmd_transcribe(args) -> int:
    from .audio import decode
    from .errors import AsrError
    from .triton_client import TranscribeOptions, TritonAsrClient

    hotwords = args.hotwords.split() if args.hotwords else []
    client = TritonAsrClient(args.url, timeout_s=args.timeout)
    status = 0
    try:
        for path in args.files:
            try:
                samples = decode(Path(path).read_bytes())
                result = client.transcribe(samples, TranscribeOptions(hotwords=hotwords, punctuation=not args.no_punc))
            except (AsrError, OSError) as e:
                print(f"{path}: error: {getattr(e, 'message', e)}", file=sys.stderr)
                status = 1
                continue
            if args.json:
                print(json.dumps({"file": path, **result}, ensure_ascii=False))
            else:
                print(result["text"] if len(args.files) == 1 else f"{path}\t{result['text']}")
    finally:
        client.close()
    return status


def cmd_verify(args) -> int:
    from funasr_triton_export.verify import main as verify_main

    return verify_main(args)


def cmd_bench(args) -> int:
    from funasr_triton_export.bench import main as bench_main

    return bench_main(args)


def cmd_eval_diarization(args) -> int:
    from .diarization_eval import main as eval_main

    return eval_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="funasr-triton", description=__doc__.splitlines()[0])
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)

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

    t = sub.add_parser("triton", help="run the embedded tritonserver on this repository")
    t.add_argument("--profile", default="cpu", help="cpu, cpu-int8, gpu-6gb/-8gb/-12gb/-16gb, or auto (from nvidia-smi)")
    t.add_argument("--model-repository", default=str(DEFAULT_REPO))
    t.add_argument("--address", default="127.0.0.1")
    t.add_argument("--grpc-port", type=int, default=8001)
    t.add_argument("--metrics-port", type=int, default=8002)
    t.add_argument("--http-port", type=int, default=8003)
    t.add_argument("--log-verbose", type=int, default=0)
    t.set_defaults(func=cmd_triton)

    f = sub.add_parser("frontend", help="run the HTTP frontend (OpenAI, Aliyun NLS, /api) against a running Triton")
    f.add_argument("--host", default=None, help="default: FUNASR_TRITON_HOST or 127.0.0.1")
    f.add_argument("--port", type=int, default=None, help="default: FUNASR_TRITON_PORT or 8000")
    f.set_defaults(func=cmd_frontend)

    s = sub.add_parser("serve", help="embedded Triton + HTTP frontend")
    s.add_argument("--profile", default="cpu", help="cpu, cpu-int8, gpu-6gb/-8gb/-12gb/-16gb, or auto (from nvidia-smi)")
    s.add_argument("--model-repository", default=str(DEFAULT_REPO))
    s.add_argument("--host", default=None)
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.add_argument("--http-port", type=int, default=8003)
    s.set_defaults(func=cmd_serve)

    r = sub.add_parser("transcribe", help="recognise audio files through the pipeline model")
    r.add_argument("files", nargs="+")
    r.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address")
    r.add_argument("--hotwords", default="", help="space-separated hotwords")
    r.add_argument("--no-punc", action="store_true")
    r.add_argument("--json", action="store_true", help="print the full result (sentences, timestamps)")
    r.add_argument("--timeout", type=float, default=600.0)
    r.set_defaults(func=cmd_transcribe)

    from .listen import add_parser as add_listen
    add_listen(sub)

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

    b = sub.add_parser("bench", help="throughput/RTF of the served pipeline and real-time streaming latency vs "
                       "AutoModel and funasr-onnx")
    b.add_argument("--output-dir", default="bench/results")
    b.add_argument("--concurrency", default="1,4,8")
    b.add_argument("--profiles", default="cpu,cpu-int8")
    b.add_argument("--audio-seconds", type=float, default=20.0)
    b.add_argument("--requests", type=int, default=16)
    b.add_argument("--streams", default="20,4",
                   help="simulated real-time streams for the streaming_asr measurement: the first count is the "
                   "main load (paced and unpaced runs), further counts add paced runs (0: skip streaming)")
    b.add_argument("--skip-offline", action="store_true",
                   help="only the streaming measurement (quick iteration); the offline tables are left out")
    b.add_argument("--long", action="store_true", help="also the long-file measurement (bench_longfile.py): long MP3 "
                   "uploads through the HTTP frontend vs funasr-onnx and AutoModel, memory per request, per-model time")
    b.add_argument("--long-only", action="store_true", help="only the long-file measurement (its own results JSON; "
                   "replaces the long-file section of docs/benchmark.md)")
    b.add_argument("--long-minutes", default="10,60", help="long files measured served vs the baselines (minutes)")
    b.add_argument("--long-automodel-minutes", default=None,
                   help="the --long-minutes files AutoModel is also run on (default: all; AutoModel's 1 h file takes "
                   "about 40 min on 2 cores)")
    b.add_argument("--long-memory-minutes", default="10,60,240", help="long files measured for memory only (served)")
    b.add_argument("--long-parallel", type=int, default=4,
                   help="concurrent uploads of the longest --long-minutes file in the memory runs (1: none)")
    b.add_argument("--long-memory-source", choices=["test", "test-large"], default="test",
                   help="models of the memory runs: tiny `test` models (fast; memory hardly depends on model size) "
                   "or the bench's test-large repository")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("eval-diarization", help="DER/JER of the served diarization against reference RTTMs "
                       "(needs the eval extra: pyannote.metrics)")
    d.add_argument("--rttm-dir", required=True, help="reference <uri>.rttm files")
    d.add_argument("--audio-dir", default=None, help="audio files, scored against <uri>.rttm in --rttm-dir")
    d.add_argument("--hypothesis-dir", default=None,
                   help="score existing hypothesis <uri>.rttm files instead of calling Triton")
    d.add_argument("--output-dir", default=None, help="write the hypothesis RTTMs here")
    d.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address")
    d.add_argument("--num-speakers", type=int, default=None, help="exact speaker count per file")
    d.add_argument("--min-speakers", type=int, default=None)
    d.add_argument("--max-speakers", type=int, default=None)
    d.add_argument("--collar", type=float, default=0.25,
                   help="total width (s) of the unscored zone centred on each reference boundary "
                   "(pyannote convention; md-eval -c 0.25 is --collar 0.5)")
    d.add_argument("--skip-overlap", action="store_true", help="do not score overlapped reference speech")
    d.add_argument("--json", action="store_true", help="print per-file and corpus scores as JSON")
    d.add_argument("--timeout", type=float, default=600.0)
    d.add_argument("--compare-backends", action="store_true",
                   help="score the served clustering and FunASR's cluster backend side by side on the same "
                        "embeddings (oracle speech; needs funasr)")
    d.add_argument("--embeddings", choices=["served", "resemblyzer"], default="served",
                   help="embedding source for --compare-backends: the served speaker model, or resemblyzer's "
                        "trained d-vector encoder")
    d.set_defaults(func=cmd_eval_diarization)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
