"""Embedded Triton: the tritonserver shipped in the `nvidia-pytriton` wheel, python backend only.

Locates the binary, its bundled libraries and the python-backend stub for the running Python,
assembles a backend directory, starts the server on 127.0.0.1, waits for readiness and stops it
cleanly. The same model repository loads unchanged in the NGC image (see README).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .logs import event

log = logging.getLogger(__name__)

PROFILES = ("cpu", "cpu-int8", "gpu-6gb", "gpu-8gb", "gpu-12gb", "gpu-16gb")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct TCP ports free right now on `host` (for test and benchmark servers)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind((host, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class TritonNotFound(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class TritonInstall:
    binary: Path
    lib_dir: Path
    backend_lib: Path
    backend_utils: Path
    stub: Path


def locate() -> TritonInstall:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotFound("nvidia-pytriton is not installed: `pip install 'funasr-triton[triton]'` (or `make setup`)")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    site = root.parent.parent
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        lib_dir=site / "nvidia_pytriton.libs",
        backend_lib=root / "backends" / "python" / "libtriton_python.so",
        backend_utils=root / "backends" / "python" / "triton_python_backend_utils.py",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    for f in dataclasses.fields(install):
        if not getattr(install, f.name).exists():
            raise TritonNotFound(f"{getattr(install, f.name)} not found (Python {version} stub or broken install)")
    return install


def backend_dir(install: TritonInstall, cache: Path) -> Path:
    """`<cache>/python/` holding the backend library, its utils and the stub for this Python."""
    target = cache / "python"
    target.mkdir(parents=True, exist_ok=True)
    for src in (install.backend_lib, install.backend_utils, install.stub):
        dst = target / src.name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            shutil.copy2(src, dst)
    return cache


@dataclasses.dataclass
class TritonOptions:
    model_repository: Path
    profile: str = "cpu"
    grpc_port: int = 8001
    metrics_port: int = 8002
    http_port: int = 8003
    address: str = "127.0.0.1"
    log_verbose: int = 0
    extra_args: tuple[str, ...] = ()


def command(install: TritonInstall, opts: TritonOptions, backends: Path) -> list[str]:
    if opts.profile not in PROFILES:
        raise ValueError(f"unknown profile {opts.profile!r}; one of {', '.join(PROFILES)}")
    return [
        str(install.binary),
        f"--model-repository={Path(opts.model_repository).resolve()}",
        f"--backend-directory={backends}",
        f"--model-config-name={opts.profile}",
        f"--http-address={opts.address}", f"--http-port={opts.http_port}",
        f"--grpc-address={opts.address}", f"--grpc-port={opts.grpc_port}",
        "--allow-metrics=true", f"--metrics-address={opts.address}", f"--metrics-port={opts.metrics_port}",
        "--allow-gpu-metrics=false", "--exit-on-error=true", "--strict-readiness=true",
        f"--log-verbose={opts.log_verbose}",
        *opts.extra_args,
    ]


def environment(install: TritonInstall) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(install.lib_dir), env.get("LD_LIBRARY_PATH")]))
    # the stub starts `python3` from PATH: it must be this interpreter's environment
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class EmbeddedTriton:
    def __init__(self, opts: TritonOptions, cache: Path | None = None, log_file: Path | None = None):
        self.opts = opts
        self.cache = cache or Path(os.environ.get("FUNASR_TRITON_CACHE", Path.home() / ".cache" / "funasr-triton"))
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None
        self._log_handle = None

    @property
    def ready_url(self) -> str:
        return f"http://{self.opts.address}:{self.opts.http_port}/v2/health/ready"

    def start(self) -> "EmbeddedTriton":
        install = locate()
        cmd = command(install, self.opts, backend_dir(install, self.cache / "backends"))
        event(log, "starting tritonserver", profile=self.opts.profile, grpc_port=self.opts.grpc_port,
              repository=str(self.opts.model_repository))
        out = None
        if self.log_file is not None:
            self._log_handle = open(self.log_file, "ab")
            out = self._log_handle
        self.proc = subprocess.Popen(cmd, env=environment(install), stdout=out, stderr=subprocess.STDOUT if out else None,
                                     start_new_session=True)
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.proc.returncode} while loading models"
                                   + (f"; see {self.log_file}" if self.log_file else ""))
            if self.is_ready():
                event(log, "tritonserver ready", url=self.ready_url)
                return
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        event(log, "tritonserver stopped", code=self.proc.returncode)
        if self._log_handle:
            self._log_handle.close()

    def __enter__(self) -> "EmbeddedTriton":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(opts: TritonOptions) -> int:
    """Run until SIGINT/SIGTERM, then stop Triton cleanly."""
    server = EmbeddedTriton(opts)
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True
        event(log, "signal received, stopping", signal=signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with server:
        while not stopping and server.proc.poll() is None:
            time.sleep(0.5)
    return 0 if stopping else (server.proc.returncode or 1)
