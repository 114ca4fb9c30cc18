"""Embedded Triton: the tritonserver shipped in the `nvidia-pytriton` wheel, python backend only.

Locates the binary, its bundled libraries and the python-backend stub for the running Python,
assembles a backend directory, starts the server on 127.0.0.1, waits for readiness and stops it
cleanly. The same model repository loads unchanged in the NGC image (see README).

Lifecycle: tritonserver gets PR_SET_PDEATHSIG (it is SIGTERMed by the kernel when the thread that started
it dies, so a SIGKILLed `funasr-triton serve` takes it down), runs in its own session (a terminal's Ctrl-C
reaches only `serve`, which stops the frontend first and Triton last), refuses to start on a busy port,
and `supervise()` restarts it with backoff when it dies.
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from .logs import event
from .profiles import NAMES as PROFILES  # the profile table: profiles.py

log = logging.getLogger(__name__)


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


class PortBusy(RuntimeError):
    pass


class ModelCodeMissing(TritonNotFound):
    pass


MODEL_CODE = "funasr_triton_models"  # what every model.py of the repository imports (model_code/ in the checkout)


def check_model_code(env: dict[str, str], package: str = MODEL_CODE) -> None:
    """Fail before starting Triton, not model by model, when the python stubs could not import the models' code.

    The stubs run this interpreter's environment (its site-packages, .pth files included) but do not honour
    PYTHONPATH, so the probe ignores the PYTHON* variables too (-E): the package must be installed."""
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({package!r}) is None)"
    if subprocess.run([sys.executable, "-E", "-c", probe], env=env, capture_output=True).returncode != 0:
        raise ModelCodeMissing(f"{package} (the models' code) is not importable by {sys.executable}: install it with "
                               "`pip install -e .` in the checkout (`make setup`), or `pip install ./model_code`")


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when the thread that forked it exits (Linux)."""
    os.setsid()  # own session: a terminal's SIGINT reaches `serve` only, which stops Triton last
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing equivalent, the supervisor's stop() still applies
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def busy_ports(address: str, ports: list[int]) -> list[int]:
    """The ports someone already listens on (SO_REUSEADDR: sockets in TIME_WAIT do not count)."""
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError as e:
                if e.errno in (errno.EADDRINUSE, errno.EACCES):
                    busy.append(port)
                else:
                    raise
    return busy


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on TCP `port` (from /proc/net/tcp{,6}); None where /proc is unavailable."""
    found, seen = set(), False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        seen = True
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                found.add(cols[9])
    return found if seen else None


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on `port` (True where this cannot be checked)."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return True
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


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
    # glibc raises its mmap threshold after large frees, so later multi-MB numpy buffers (60 s VAD
    # strides, segment audio) come from the heap and stay resident: a fixed threshold returns them to
    # the OS, and two arenas keep the BLS threads from each holding their own (the python stubs'
    # RSS then levels off after the first minutes of a recording instead of growing with it)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


class EmbeddedTriton:
    def __init__(self, opts: TritonOptions, cache: Path | None = None, log_file: Path | None = None):
        self.opts = opts
        self.cache = cache or Path(os.environ.get("FUNASR_TRITON_CACHE", Path.home() / ".cache" / "funasr-triton"))
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None
        self._log_handle = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0  # restarts after a crash, all together
        self.failed = False  # set by the supervisor when Triton is gone and could not be restarted

    @property
    def ready_url(self) -> str:
        return f"http://{self.opts.address}:{self.opts.http_port}/v2/health/ready"

    @property
    def ports(self) -> list[int]:
        return [self.opts.http_port, self.opts.grpc_port, self.opts.metrics_port]

    def start(self) -> "EmbeddedTriton":
        """Start tritonserver (after a stop() too). PR_SET_PDEATHSIG ties it to the calling thread."""
        self._stopping.clear()
        self._supervisor = None
        return self._spawn()

    def _spawn(self) -> "EmbeddedTriton":
        install = locate()
        cmd = command(install, self.opts, backend_dir(install, self.cache / "backends"))
        busy = busy_ports(self.opts.address, self.ports)
        if busy:
            raise PortBusy(f"port {', '.join(map(str, busy))} on {self.opts.address} is already in use (another "
                           "tritonserver, perhaps left over by an earlier run?): stop it or choose other ports "
                           "(--grpc-port, --http-port, --metrics-port)")
        event(log, "starting tritonserver", profile=self.opts.profile, grpc_port=self.opts.grpc_port,
              repository=str(self.opts.model_repository))
        out = None
        if self.log_file is not None:
            if self._log_handle is None:
                self._log_handle = open(self.log_file, "ab")
            out = self._log_handle
        env = environment(install)
        check_model_code(env)
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                     preexec_fn=lambda parent=os.getpid(): _die_with_parent(parent))
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Until our tritonserver answers ready: the process is alive, owns the HTTP port, and says ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"tritonserver exited with code {code} while loading models"
                                   + (f"; see {self.log_file}" if self.log_file else ""))
            if self.is_ready() and listens_on(self.proc.pid, self.opts.http_port) and self.proc.poll() is None:
                event(log, "tritonserver ready", url=self.ready_url, pid=self.proc.pid)
                return
            if self._stopping.is_set():
                raise RuntimeError("tritonserver stopped while loading models")
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s")

    def supervise(self, max_restarts: int = 5, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                  ready_timeout_s: float = 300.0) -> None:
        """Watch Triton in a thread; restart it when it dies, waiting backoff_s, doubled after every failed
        attempt (up to max_backoff_s). After max_restarts attempts in a row that do not get it ready,
        `failed` is set and the supervisor gives up (liveness then fails)."""
        def loop():
            failures, delay = 0, backoff_s
            while not self._stopping.is_set():
                if self.alive():
                    self._stopping.wait(0.2)
                    continue
                code = self.proc.returncode if self.proc is not None else None
                if failures >= max_restarts:
                    self.failed = True
                    event(log, "tritonserver is gone and could not be restarted", attempts=failures,
                          level=logging.ERROR)
                    return
                event(log, "tritonserver exited, restarting", code=code, in_s=delay, level=logging.WARNING)
                if self._stopping.wait(delay):
                    return
                try:
                    self._spawn()
                    self.wait_ready(ready_timeout_s)
                except (RuntimeError, TimeoutError, OSError) as e:
                    failures += 1
                    delay = min(delay * 2, max_backoff_s)
                    event(log, "tritonserver restart failed", error=str(e), attempts=failures,
                          level=logging.WARNING)
                    if self.alive():
                        self._terminate()
                    continue
                self.restarts += 1
                failures, delay = 0, backoff_s

        # the supervisor thread starts the new tritonservers: PR_SET_PDEATHSIG follows the forking thread,
        # so this thread lives as long as they may run (until stop())
        self._supervisor = threading.Thread(target=loop, name="triton-supervisor", daemon=True)
        self._supervisor.start()

    def _terminate(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (SIGKILL after timeout_s) and wait; the supervisor, if any, stops first."""
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=timeout_s + 5)
        running = self.proc is not None and self.proc.poll() is None
        self._terminate(timeout_s)
        if running:
            event(log, "tritonserver stopped", code=self.proc.returncode)
        if self._log_handle:
            self._log_handle.close()
            self._log_handle = None

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
