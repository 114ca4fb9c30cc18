"""Shared fixtures: a model repository exported from the test models, and a real embedded Triton."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from funasr_triton.server import free_ports

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CACHE = ROOT / ".cache" / "models"


@pytest.fixture(scope="session")
def repository(tmp_path_factory) -> Path:
    """`funasr-triton export` into an empty directory: skeleton (funasr_triton_export.templates) + test weights."""
    repo = tmp_path_factory.mktemp("repo") / "model_repository"
    subprocess.run([str(BIN / "funasr-triton"), "--log-level", "WARNING", "export", "--source", "test", "--quantize",
                    "--repository", str(repo), "--cache-dir", str(CACHE)], check=True, cwd=ROOT)
    return repo


class TritonHandle:
    def __init__(self, server, grpc_url: str, metrics_url: str, log_file: Path):
        self.server, self.grpc_url, self.metrics_url, self.log_file = server, grpc_url, metrics_url, log_file


def start_triton(repo: Path, log_dir: Path, profile: str = "cpu") -> TritonHandle:
    from funasr_triton.server import EmbeddedTriton, TritonOptions

    grpc, metrics, http = free_ports(3)
    log_file = log_dir / f"triton-{profile}-{grpc}.log"
    server = EmbeddedTriton(TritonOptions(repo, profile, grpc, metrics, http), cache=ROOT / ".cache", log_file=log_file)
    server.start()
    server.wait_ready(timeout_s=300)
    return TritonHandle(server, f"127.0.0.1:{grpc}", f"http://127.0.0.1:{metrics}/metrics", log_file)


@pytest.fixture(scope="session")
def triton(repository, tmp_path_factory):
    handle = start_triton(repository, tmp_path_factory.mktemp("triton-logs"))
    yield handle
    handle.server.stop()


@pytest.fixture()
def client(triton):
    from funasr_triton.triton_client import TritonAsrClient

    c = TritonAsrClient(triton.grpc_url, timeout_s=300)
    yield c
    c.close()


@pytest.fixture(scope="session")
def cli_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


class FrontendHandle:
    def __init__(self, proc, base_url: str, log_file: Path, tmpdir: Path):
        self.proc, self.base_url, self.log_file = proc, base_url, log_file
        self.tmpdir = tmpdir  # the process's private TMPDIR: spooled uploads land here and must not stay

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_frontend(triton_url: str, log_dir: Path, **env_overrides: str) -> FrontendHandle:
    """The real `funasr-triton frontend` process on a free port; env_overrides are FUNASR_TRITON_* settings."""
    import time
    import urllib.request

    (port,) = free_ports(1)
    tmpdir = log_dir / f"tmp-{port}"
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, FUNASR_TRITON_TRITON__URL=triton_url, FUNASR_TRITON_PORT=str(port),
               FUNASR_TRITON_LOG_LEVEL="WARNING", TMPDIR=str(tmpdir))
    env.setdefault("FUNASR_TRITON_JOBS__DATA_DIR", str(log_dir / f"jobs-{port}"))  # a private job store unless given
    env.update(env_overrides)
    log_file = log_dir / f"frontend-{port}.log"
    proc = subprocess.Popen([str(BIN / "funasr-triton"), "frontend"], env=env, cwd=ROOT,
                            stdout=open(log_file, "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"frontend exited: {log_file.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as r:
                if r.status == 200:
                    return FrontendHandle(proc, base, log_file, tmpdir)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("frontend did not start")


@pytest.fixture(scope="session")
def frontend(triton, tmp_path_factory):
    """The frontend with default settings (open, no API keys) against the session Triton."""
    handle = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("frontend-logs"))
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    """~9 s of Mandarin with pauses (several VAD segments), as a 16 kHz wav file."""
    from tests.synth import SENTENCES, compose, write_wav

    return write_wav(tmp_path_factory.mktemp("audio") / "speech.wav",
                     compose(0.3, SENTENCES[0], 1.5, SENTENCES[1], 1.5, SENTENCES[2], 0.3))


# ---- the fast loop: `pytest -m "not integration"` runs the pure unit tests, without Triton or built models -------

# a test that needs any of these (directly or through another fixture) runs against real models or servers
INTEGRATION_FIXTURES = frozenset({"repository", "triton", "client", "frontend", "cli_env"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if INTEGRATION_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.integration)


# ---- no silent skips in CI: a missing dependency (importorskip) fails the suite when CI=true ----------------------

def _import_skip(report) -> str | None:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "")
    return reason if "could not import" in reason else None


def _fail_import_skips(report) -> None:
    if report.skipped and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        reason = _import_skip(report)
        if reason:
            report.outcome = "failed"
            report.longrepr = f"CI=true: a dependency is missing, which must not skip tests here: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_import_skips(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_import_skips(outcome.get_result())
