"""Native durable jobs (`/v1/jobs`) against the real frontend process, Triton and the SQLite store:
submit (upload or URL), poll, result in every OpenAI format, cancel, list, limits, and a frontend
killed with SIGKILL in the middle of a job whose job completes after the restart."""
from __future__ import annotations

import http.server
import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_frontend
from tests.synth import SENTENCES, compose, write_wav

POLL_S = 0.3


class AudioHost:
    """A local HTTP server serving the files put in `files` (path -> bytes), and recording POSTed bodies
    (callbacks) in `posts`."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.posts: list[tuple[str, dict, bytes]] = []
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = host.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                host.posts.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def audio_host(speech_wav):
    host = AudioHost()
    host.files["/speech.wav"] = speech_wav.read_bytes()
    host.files["/noise.wav"] = b"RIFF not really a wav file at all" * 10
    yield host
    host.close()


def job_env(host: AudioHost, **extra: str) -> dict:
    return {"FUNASR_TRITON_AUDIO__URL_FETCH_ENABLED": "true",
            "FUNASR_TRITON_AUDIO__URL_ALLOWED_HOSTS": json.dumps([f"127.0.0.1:{host.port}"]),
            "FUNASR_TRITON_JOBS__POLL_INTERVAL_S": "0.2", **extra}


@pytest.fixture(scope="module")
def jobs_frontend(triton, tmp_path_factory, audio_host, long_wav):
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("jobs"),
                        **job_env(audio_host, FUNASR_TRITON_JOBS__MAX_FILES="3", FUNASR_TRITON_JOBS__WORKERS="1",
                                  FUNASR_TRITON_JOBS__MAX_JOB_BYTES=str(long_wav.stat().st_size + 1000)))
    yield fe
    fe.stop()


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory) -> Path:
    """About 3 minutes of speech (the sentences over and over), long enough to still be running when killed."""
    parts: list = []
    for _ in range(6):
        for s in SENTENCES[:4]:
            parts += [s, 1.0]
    return write_wav(tmp_path_factory.mktemp("long") / "long.wav", compose(*parts))


def wait_job(c: httpx.Client, job_id: str, until=("succeeded", "failed", "cancelled"), timeout: float = 300,
             **params) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(f"/v1/jobs/{job_id}", params=params)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in until:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
        time.sleep(POLL_S)


def submit(c: httpx.Client, wav: Path | None = None, **fields) -> dict:
    files = {"file": (wav.name, wav.read_bytes(), "audio/wav")} if wav else None
    r = c.post("/v1/jobs", data=fields, files=files)
    assert r.status_code == 202, r.text
    return r.json()


def test_upload_job_matches_the_direct_transcription(jobs_frontend, speech_wav):
    with httpx.Client(base_url=jobs_frontend.base_url, timeout=120) as c:
        direct = c.post("/v1/audio/transcriptions", files={"file": ("speech.wav", speech_wav.read_bytes())},
                        data={"response_format": "verbose_json"}).json()
        job = submit(c, speech_wav, response_format="verbose_json")
        assert job["status"] in ("queued", "running") and job["object"] == "transcription.job"
        done = wait_job(c, job["id"])
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 1
        assert done["result"]["text"] == direct["text"] and done["result"]["text"]
        assert [s["text"] for s in done["result"]["segments"]] == [s["text"] for s in direct["segments"]]
        assert done["progress"]["final"] is True and done["progress"]["processed_ms"] > 8000
        # any OpenAI format afterwards, as a view or as the exact /v1/audio/transcriptions answer
        assert wait_job(c, job["id"], response_format="text")["result"] == direct["text"] + "\n"
        srt = c.get(f"/v1/jobs/{job['id']}/result", params={"response_format": "srt"})
        assert srt.status_code == 200 and srt.headers["content-type"].startswith("application/x-subrip")
        assert srt.text.startswith("1\n00:00:")
        plain = c.get(f"/v1/jobs/{job['id']}/result").json()
        assert plain["text"] == direct["text"] and "segments" in plain  # the job's own format
        listed = c.get("/v1/jobs", params={"limit": 100}).json()
        assert job["id"] in [j["id"] for j in listed["data"]]
        assert c.delete(f"/v1/jobs/{job['id']}").status_code == 409  # finished: nothing to cancel


def test_url_jobs_and_a_failed_file(jobs_frontend, audio_host):
    with httpx.Client(base_url=jobs_frontend.base_url, timeout=120) as c:
        r = c.post("/v1/jobs", data={"url": [f"{audio_host.url}/speech.wav", f"{audio_host.url}/noise.wav",
                                             f"{audio_host.url}/missing.wav"]})
        assert r.status_code == 202, r.text
        done = wait_job(c, r.json()["id"])
        assert done["status"] == "succeeded"  # one file recognised: the job succeeded, the others failed alone
        good, bad, missing = done["files"]
        assert good["status"] == "succeeded" and good["result"]["text"]
        assert bad["status"] == "failed" and bad["error"]["status"] == 400, bad
        assert missing["status"] == "failed" and missing["error"]["code"] == "fetch_failed", missing
        # all files failing fails the job
        only_bad = submit(c, audio_address=f"{audio_host.url}/missing.wav")
        failed = wait_job(c, only_bad["id"])
        assert failed["status"] == "failed" and failed["error"]["code"] == "fetch_failed"
        res = c.get(f"/v1/jobs/{only_bad['id']}/result")
        assert res.status_code == 400 and res.json()["error"]["code"] == "fetch_failed"


def test_bad_submissions_are_openai_errors(jobs_frontend, speech_wav, audio_host, long_wav):
    with httpx.Client(base_url=jobs_frontend.base_url, timeout=60) as c:
        def error(r, status, code):
            assert r.status_code == status, r.text
            assert r.json()["error"]["code"] == code, r.text

        error(c.post("/v1/jobs", data={"response_format": "json"}), 400, "missing_file")
        error(c.post("/v1/jobs", data={"url": "ftp://example.com/a.wav"}), 400, "invalid_url")
        error(c.post("/v1/jobs", data={"url": [f"{audio_host.url}/speech.wav"] * 4}), 400, "too_many_files")
        error(c.post("/v1/jobs", data={"response_format": "yaml"}, files={"file": ("a.wav", b"x")}), 400,
              "invalid_value")
        error(c.post("/v1/jobs", data={"model": "whisper-large"}, files={"file": ("a.wav", b"x")}), 404,
              "model_not_found")
        error(c.get("/v1/jobs/nope"), 404, "job_not_found")
        two = [("file", (f"{i}.wav", long_wav.read_bytes(), "audio/wav")) for i in range(2)]
        error(c.post("/v1/jobs", files=two), 413, "too_large")  # JOBS__MAX_JOB_BYTES: one long file fits, two do not
        error(c.delete("/v1/jobs/nope"), 404, "job_not_found")


def test_cancel_a_running_job(jobs_frontend, long_wav):
    with httpx.Client(base_url=jobs_frontend.base_url, timeout=120) as c:
        job = submit(c, long_wav)
        wait_job(c, job["id"], until=("running",))
        r = c.delete(f"/v1/jobs/{job['id']}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        time.sleep(2)
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        # the worker is free again: the next job runs
        nxt = submit(c, long_wav.with_name("long.wav"))
        c.delete(f"/v1/jobs/{nxt['id']}")


def test_queue_limit(triton, tmp_path_factory, audio_host, long_wav):
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("jobs-limit"),
                        **job_env(audio_host, FUNASR_TRITON_JOBS__MAX_QUEUED="1", FUNASR_TRITON_JOBS__WORKERS="1"))
    try:
        with httpx.Client(base_url=fe.base_url, timeout=120) as c:
            first = submit(c, long_wav)
            wait_job(c, first["id"], until=("running",))
            second = submit(c, long_wav)
            r = c.post("/v1/jobs", files={"file": ("long.wav", long_wav.read_bytes())})
            assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_jobs", r.text
            for j in (first, second):
                c.delete(f"/v1/jobs/{j['id']}")
            metrics = c.get("/metrics").text
            assert "funasr_jobs_rejected_total 1.0" in metrics
    finally:
        fe.stop()


def test_sigkill_mid_job_then_restart_completes_it(triton, tmp_path_factory, audio_host, long_wav):
    """The frontend dies (SIGKILL, no cleanup) while recognising; a new process on the same data directory
    finds the job's lease expired, runs it again, and the job completes."""
    logs = tmp_path_factory.mktemp("jobs-kill")
    data = logs / "data"
    env = job_env(audio_host, FUNASR_TRITON_JOBS__DATA_DIR=str(data), FUNASR_TRITON_JOBS__LEASE_S="3",
                  FUNASR_TRITON_JOBS__MAINTENANCE_INTERVAL_S="1", FUNASR_TRITON_LIMITS__SEND_SECONDS="5")
    fe = start_frontend(triton.grpc_url, logs, **env)
    try:
        with httpx.Client(base_url=fe.base_url, timeout=120) as c:
            job = submit(c, long_wav, response_format="json")
            running = wait_job(c, job["id"], until=("running",))
            deadline = time.monotonic() + 120
            while not (running.get("progress") or {}).get("processed_ms"):
                assert time.monotonic() < deadline and running["status"] == "running", running
                time.sleep(0.1)
                running = c.get(f"/v1/jobs/{job['id']}").json()
        fe.proc.send_signal(signal.SIGKILL)
        fe.proc.wait(timeout=10)
        assert running["status"] == "running"
        assert list((data / "audio" / job["id"]).iterdir()), "the job's audio is on disk"
    finally:
        fe.stop()
    fe2 = start_frontend(triton.grpc_url, logs, **env)
    try:
        with httpx.Client(base_url=fe2.base_url, timeout=120) as c:
            done = wait_job(c, job["id"], timeout=600)
            assert done["status"] == "succeeded", done
            assert done["attempts"] == 2
            assert done["result"]["text"]
            assert "job recovered" in fe2.log_file.read_text()  # logged at WARNING
    finally:
        fe2.stop()


def test_graceful_stop_queues_the_running_job_at_once(triton, tmp_path_factory, audio_host, long_wav):
    """SIGTERM: the running job goes back to the queue (not counted as an attempt) instead of waiting for its
    lease to expire; the next process runs it."""
    import sqlite3

    logs = tmp_path_factory.mktemp("jobs-term")
    data = logs / "data"
    env = job_env(audio_host, FUNASR_TRITON_JOBS__DATA_DIR=str(data), FUNASR_TRITON_JOBS__LEASE_S="3600")
    fe = start_frontend(triton.grpc_url, logs, **env)
    try:
        with httpx.Client(base_url=fe.base_url, timeout=120) as c:
            job = submit(c, long_wav)
            wait_job(c, job["id"], until=("running",))
    finally:
        fe.stop()
    assert fe.proc.returncode is not None
    with sqlite3.connect(data / "jobs.sqlite3") as db:
        state, attempts, owner = db.execute("SELECT state, attempts, owner FROM funasr_jobs WHERE id = ?",
                                            (job["id"],)).fetchone()
    assert (state, attempts, owner) == ("queued", 0, None)
    fe2 = start_frontend(triton.grpc_url, logs, **env)
    try:
        with httpx.Client(base_url=fe2.base_url, timeout=120) as c:
            done = wait_job(c, job["id"], timeout=600)
            assert done["status"] == "succeeded" and done["attempts"] == 1, done
    finally:
        fe2.stop()


def test_the_store_takes_another_table(tmp_path):
    """Another feature (e.g. a vocabulary registry) keeps its rows in the same database as the jobs."""
    from peewee import CharField, TextField

    from funasr_triton.jobs.store import TABLES, Base, JobStore

    class Vocabulary(Base):
        id = CharField(primary_key=True)
        words = TextField()

        class Meta:
            table_name = "test_vocabularies"

    store = JobStore(None, tmp_path)
    try:
        store.add_table(Vocabulary)
        Vocabulary.create(id="v1", words="阿里巴巴 达摩院")
        assert Vocabulary.get_by_id("v1").words == "阿里巴巴 达摩院"
        assert store.db.table_exists("funasr_jobs") and store.db.table_exists("test_vocabularies")
    finally:
        TABLES.remove(Vocabulary)
        store.close()


def test_retention_purges_results_and_audio(triton, tmp_path_factory, audio_host, speech_wav):
    logs = tmp_path_factory.mktemp("jobs-retention")
    data = logs / "data"
    fe = start_frontend(triton.grpc_url, logs, **job_env(
        audio_host, FUNASR_TRITON_JOBS__DATA_DIR=str(data), FUNASR_TRITON_JOBS__RETENTION_HOURS="0.001",
        FUNASR_TRITON_JOBS__MAINTENANCE_INTERVAL_S="1"))  # 3.6 s
    try:
        with httpx.Client(base_url=fe.base_url, timeout=120) as c:
            job = submit(c, speech_wav)
            assert wait_job(c, job["id"])["status"] == "succeeded"
            expired = wait_job(c, job["id"], until=("expired",), timeout=60)
            assert expired["files"][0].get("result") is None
            assert not (data / "audio" / job["id"]).exists()
            assert c.get(f"/v1/jobs/{job['id']}/result").status_code == 409
    finally:
        fe.stop()
