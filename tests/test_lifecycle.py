"""Process lifecycle of `funasr-triton serve` (embedded Triton + frontend), with real processes:
SIGKILL of serve takes Triton down (PR_SET_PDEATHSIG); SIGTERM drains an in-flight request and leaves
nothing behind; a killed tritonserver is restarted by the supervisor (503 + Retry-After meanwhile, /ready
recovers by itself); /health fails once Triton cannot be restarted; a busy port is a clear start error."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from funasr_triton.server import free_ports
from tests.conftest import BIN, ROOT

psutil = pytest.importorskip("psutil")

TRITON_NAMES = ("tritonserver", "triton_python_backend_stub")


@pytest.fixture(scope="module")
def repository(repository, tmp_path_factory) -> Path:
    """A private copy of the session's repository: these tests look for (and kill) every Triton serving
    their repository, which must never be the session's own Triton."""
    copy = tmp_path_factory.mktemp("lifecycle-repo") / "model_repository"
    shutil.copytree(repository, copy, symlinks=True)
    return copy


def triton_processes(repo: Path) -> list:
    """tritonserver / python-backend stubs serving `repo`, wherever they are in the process tree."""
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            name = p.info["name"] or ""
            cmdline = " ".join(p.info["cmdline"] or [])
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(n in name or n in cmdline.split(" ", 1)[0] for n in TRITON_NAMES) and str(repo) in cmdline:
            out.append(p)
    return out


def wait_gone(repo: Path, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if not triton_processes(repo):
            return time.monotonic() - t0
        time.sleep(0.1)
    left = [(p.pid, p.name()) for p in triton_processes(repo)]
    raise AssertionError(f"Triton processes left after {timeout_s} s: {left}")


class Serve:
    def __init__(self, repo: Path, log_dir: Path, **env: str):
        self.repo = repo
        self.port, self.grpc, self.metrics, self.http = free_ports(4)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_file = log_dir / f"serve-{self.port}.log"
        full_env = dict(os.environ, FUNASR_TRITON_PORT=str(self.port), FUNASR_TRITON_LOG_LEVEL="INFO",
                        FUNASR_TRITON_CACHE=str(ROOT / ".cache"), **env)
        full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
        self.proc = subprocess.Popen(
            [str(BIN / "funasr-triton"), "serve", "--model-repository", str(repo), "--grpc-port", str(self.grpc),
             "--metrics-port", str(self.metrics), "--http-port", str(self.http)],
            env=full_env, cwd=ROOT, stdout=open(self.log_file, "wb"), stderr=subprocess.STDOUT)

    def log(self, tail: int = 4000) -> str:
        text = self.log_file.read_text(errors="replace")
        return text[-tail:] if tail else text

    def wait_ready(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited: {self.log()}"
            try:
                if httpx.get(self.base + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"serve not ready: {self.log()}")

    def tritonserver(self) -> psutil.Process:
        (p,) = [c for c in psutil.Process(self.proc.pid).children(recursive=True) if c.name() == "tritonserver"]
        return p

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for p in triton_processes(self.repo):
            p.kill()


@pytest.fixture()
def serve(repository, tmp_path):
    started = []

    def start(**env):
        s = Serve(repository, tmp_path, **env)
        started.append(s)
        s.wait_ready()
        return s
    yield start
    for s in started:
        s.close()


def transcribe(base: str, wav: Path, timeout: float = 120) -> httpx.Response:
    return httpx.post(base + "/v1/audio/transcriptions", timeout=timeout,
                      files={"file": ("speech.wav", wav.read_bytes())}, data={"model": "whisper-1"})


def test_sigkill_of_serve_takes_triton_down(serve, repository):
    s = serve()
    assert triton_processes(repository), "tritonserver and its stubs run under serve"
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    took = wait_gone(repository, 15)
    assert took < 15


def test_sigterm_drains_the_request_in_flight_then_stops_everything(serve, repository, speech_wav):
    s = serve(FUNASR_TRITON_SHUTDOWN_GRACE_S="60")
    result: dict = {}

    def request():
        try:
            result["response"] = transcribe(s.base, speech_wav)
        except httpx.HTTPError as e:
            result["error"] = e

    t = threading.Thread(target=request)
    t.start()
    time.sleep(0.3)  # the request is in flight (a 9 s file takes longer than this on the test models)
    s.proc.send_signal(signal.SIGTERM)
    t.join(120)
    assert s.proc.wait(timeout=90) == 0, s.log()
    assert "response" in result, f"the in-flight request failed: {result.get('error')!r}"
    r = result["response"]
    assert r.status_code == 200, r.text
    assert r.json()["text"]
    wait_gone(repository, 5)
    assert "tritonserver stopped" in s.log(tail=0)


def test_killed_triton_is_restarted_503_with_retry_after_meanwhile(serve, repository, speech_wav, record_property):
    s = serve()
    old = s.tritonserver()
    t0 = time.monotonic()
    old.kill()
    old.wait(10)
    saw_503 = None
    recovered_s = None
    while time.monotonic() - t0 < 300:
        r = transcribe(s.base, speech_wav, timeout=60)
        if r.status_code == 503 and saw_503 is None:
            saw_503 = r
        ready = httpx.get(s.base + "/ready", timeout=5).status_code
        if ready == 200 and r.status_code == 200:
            recovered_s = time.monotonic() - t0
            break
        assert r.status_code == 503, r.text
        assert httpx.get(s.base + "/health", timeout=5).status_code == 200, "liveness holds while restarting"
        time.sleep(0.5)
    assert saw_503 is not None, "a request during the outage gets 503"
    assert int(saw_503.headers["Retry-After"]) > 0
    assert recovered_s is not None, f"/ready did not come back: {s.log()}"
    new = s.tritonserver()
    assert new.pid != old.pid
    # the killed server's python-backend stubs do not outlive it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and [p for p in triton_processes(repository) if p.pid != new.pid and p.ppid() != new.pid]:
        time.sleep(0.3)
    assert [p.pid for p in triton_processes(repository) if p.pid != new.pid and p.ppid() != new.pid] == []
    assert "tritonserver exited, restarting" in s.log(tail=0)
    record_property("triton_kill_to_ready_s", round(recovered_s, 1))
    assert recovered_s < 120
    # the restarted Triton (started by the supervisor thread) still dies with serve
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    wait_gone(repository, 15)


def test_health_fails_when_triton_cannot_be_restarted(serve, repository):
    s = serve(FUNASR_TRITON_MAX_TRITON_RESTARTS="1")
    triton = s.tritonserver()
    triton.kill()
    triton.wait(10)
    blocker = socket.socket()  # someone else takes Triton's HTTP port: the restart cannot start
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        blocker.bind(("127.0.0.1", s.http))
        blocker.listen()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and httpx.get(s.base + "/health", timeout=5).status_code == 200:
            time.sleep(0.3)
        r = httpx.get(s.base + "/health", timeout=5)
        assert r.status_code == 503 and r.json()["status"] == "failed", s.log()
        assert "already in use" in s.log(tail=0)
    finally:
        blocker.close()


def test_busy_port_is_a_clear_start_error(repository, tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    (front,) = free_ports(1)
    try:
        out = subprocess.run([str(BIN / "funasr-triton"), "serve", "--model-repository", str(repository),
                              "--grpc-port", str(port), "--port", str(front)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT,
                             env=dict(os.environ, FUNASR_TRITON_CACHE=str(ROOT / ".cache")))
    finally:
        blocker.close()
    assert out.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
    assert not triton_processes(repository)


def test_wait_ready_ignores_a_ready_answer_from_another_process(repository, tmp_path):
    """A leftover Triton answering on our HTTP port must not count as ours: our process must own the port."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from funasr_triton import server as srv

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    grpc, metrics, http = free_ports(3)
    impostor = ThreadingHTTPServer(("127.0.0.1", http), Ready)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    triton = srv.EmbeddedTriton(srv.TritonOptions(repository, "cpu", grpc, metrics, http), cache=ROOT / ".cache",
                                log_file=tmp_path / "triton.log")
    real_busy = srv.busy_ports
    srv.busy_ports = lambda address, ports: []  # as if the port had been taken after the check
    try:
        triton.start()
        assert triton.is_ready(), "the impostor answers ready"
        with pytest.raises(RuntimeError, match="exited"):
            triton.wait_ready(timeout_s=300)  # Triton loads, fails to bind the HTTP port and exits
    finally:
        srv.busy_ports = real_busy
        triton.stop()
        impostor.shutdown()
