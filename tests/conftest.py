"""Shared fixtures: a model repository exported from the test models, and a real embedded Triton."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from funasr_triton.server import free_ports

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CACHE = ROOT / ".cache" / "models"


def copy_templates(dst: Path) -> Path:
    """The committed repository (configs, model.py, symlinks) without any exported weights."""
    def ignore(directory, names):
        d = Path(directory)
        return [n for n in names if d.name == "1" and not n.endswith(".py") and n != ".keep"] + \
               [n for n in names if n in ("MANIFEST.json", "__pycache__")]
    shutil.copytree(ROOT / "model_repository", dst, symlinks=True, ignore=ignore)
    return dst


@pytest.fixture(scope="session")
def repository(tmp_path_factory) -> Path:
    repo = copy_templates(tmp_path_factory.mktemp("repo") / "model_repository")
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
