"""Two frontend replicas sharing a real PostgreSQL (Debian's `postgresql`, started and stopped here) and one data
directory: every job runs exactly once, both replicas take jobs, and a job whose replica is killed (SIGKILL)
is finished by the other one."""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from funasr_triton.server import free_ports
from tests.conftest import start_frontend
from tests.test_jobs import audio_host, job_env, long_wav, submit, wait_job  # noqa: F401  (fixtures)

N_JOBS = 8


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        pytest.fail(f"{name} not found: install the `postgresql` Debian package (.ci/apt-packages)")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the package's `postgres` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres():
    # not under pytest's tmp dir: that is private to the test user, and the server may run as `postgres`
    root = Path(tempfile.mkdtemp(prefix="funasr-jobs-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(data), "-U", "funasr", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    (port,) = free_ports(1)
    log = open(root / "postgres.log", "wb")
    proc = subprocess.Popen(_as_postgres([_pg_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(sock),
                                          "-c", "listen_addresses=127.0.0.1"]), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            assert proc.poll() is None, (root / "postgres.log").read_text()
            assert time.monotonic() < deadline, "postgres did not start"
            time.sleep(0.3)
        subprocess.run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "funasr", "jobs"], check=True)
        yield f"postgresql://funasr@127.0.0.1:{port}/jobs"
    finally:
        proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def replicas(triton, tmp_path_factory, audio_host, postgres):
    logs = tmp_path_factory.mktemp("replicas")
    env = job_env(audio_host, FUNASR_TRITON_JOBS__BACKEND_URL=postgres,
                  FUNASR_TRITON_JOBS__DATA_DIR=str(logs / "shared-data"), FUNASR_TRITON_JOBS__WORKERS="1",
                  FUNASR_TRITON_JOBS__LEASE_S="3", FUNASR_TRITON_JOBS__MAINTENANCE_INTERVAL_S="1",
                  FUNASR_TRITON_LOG_LEVEL="INFO")
    pair = [start_frontend(triton.grpc_url, logs, **env), start_frontend(triton.grpc_url, logs, **env)]
    yield pair
    for fe in pair:
        fe.stop()


def _started(fe) -> list[str]:
    return re.findall(r'msg="job started" job=([0-9a-f]{32})', fe.log_file.read_text())


def test_each_job_runs_exactly_once_on_either_replica(replicas, speech_wav):
    a, b = replicas
    ids = []
    for i in range(N_JOBS):
        with httpx.Client(base_url=replicas[i % 2].base_url, timeout=120) as c:
            ids.append(submit(c, speech_wav)["id"])
    with httpx.Client(base_url=a.base_url, timeout=120) as c:
        for job_id in ids:
            done = wait_job(c, job_id)
            assert done["status"] == "succeeded" and done["attempts"] == 1, done
    with httpx.Client(base_url=b.base_url, timeout=120) as c:  # the other replica sees the same store
        listed = {j["id"]: j for j in c.get("/v1/jobs", params={"limit": 100}).json()["data"]}
    assert set(ids) <= set(listed)
    ran_a, ran_b = [j for j in _started(a) if j in ids], [j for j in _started(b) if j in ids]
    assert sorted(ran_a + ran_b) == sorted(ids), "every job started exactly once, on one replica"
    assert ran_a and ran_b, "both replicas took jobs"
    finished = 0
    for fe in replicas:
        text = httpx.get(fe.base_url + "/metrics").text
        finished += sum(float(v) for v in re.findall(r'funasr_jobs_finished_total\{kind="openai",state="succeeded"\} (\S+)',
                                                     text))
    assert finished == N_JOBS


def test_a_killed_replicas_job_is_finished_by_the_other(replicas, long_wav):
    a, b = replicas
    with httpx.Client(base_url=a.base_url, timeout=120) as c:
        job = submit(c, long_wav)
        deadline = time.monotonic() + 120
        while job["id"] not in _started(a) + _started(b):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        victim = a if job["id"] in _started(a) else b
        survivor = b if victim is a else a
        wait_job(c, job["id"], until=("running",))
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    with httpx.Client(base_url=survivor.base_url, timeout=120) as c:
        done = wait_job(c, job["id"], timeout=600)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    assert job["id"] in _started(survivor)
    assert "job recovered" in survivor.log_file.read_text()
