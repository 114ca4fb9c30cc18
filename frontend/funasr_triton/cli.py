"""`funasr-triton` command line, the runtime's commands: triton, frontend, serve, transcribe, listen.

They need neither torch nor funasr. The installed `funasr-triton` command is funasr_triton_tools.cli, which
adds the export package's commands (export, verify) and the tools' (bench, eval-diarization) to these
through `register`; `python -m funasr_triton.cli` runs these alone.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Iterable

from . import logs
from .listen import add_parser as add_listen
from .logs import event

log = logging.getLogger("funasr_triton")
DEFAULT_REPO = Path("model_repository")


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


def register(sub) -> None:
    """Add the runtime's commands to the subparsers of a `funasr-triton` parser."""
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

    add_listen(sub)


def build_parser(registers: Iterable[Callable] = (register,), description: str = __doc__) -> argparse.ArgumentParser:
    """The `funasr-triton` parser with the commands each of `registers` adds (`register(subparsers)`)."""
    p = argparse.ArgumentParser(prog="funasr-triton", description=description.splitlines()[0])
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)
    for add in registers:
        add(sub)
    return p


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    args = (parser or build_parser()).parse_args(argv)
    logs.setup(args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
