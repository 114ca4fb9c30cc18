"""Long recordings through the HTTP frontend: an hour-long MP3 streamed through ffmpeg and Triton, results
as they are recognised, the same result as the whole-file gRPC pipeline, and a client that hangs up stopping
the rest of the work."""
from __future__ import annotations

import subprocess
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
from openai import OpenAI

from funasr_triton.audio import decode
from tests.synth import SENTENCES, compose


def _mp3(path, block: np.ndarray, seconds: float) -> tuple:
    """`block` repeated (with a growing pause between repeats) to `seconds` of audio, as MP3."""
    proc = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "f32le", "-ar", "16000", "-ac", "1",
                             "-i", "pipe:0", "-b:a", "48k", str(path)], stdin=subprocess.PIPE)
    total, i = 0, 0
    while total < seconds * 16000:
        piece = np.concatenate([block, np.zeros(16000 * (i % 4) // 2, np.float32)])
        proc.stdin.write(piece.astype("<f4").tobytes())
        total += len(piece)
        i += 1
    proc.stdin.close()
    assert proc.wait() == 0
    return path, total / 16000


@pytest.fixture(scope="module")
def block() -> np.ndarray:
    return compose(0.3, SENTENCES[0], 1.0, SENTENCES[1], 2.0, SENTENCES[2], 0.5, SENTENCES[3], 3.0, SENTENCES[4], 1.0)


@pytest.fixture(scope="module")
def hour_mp3(tmp_path_factory, block):
    return _mp3(tmp_path_factory.mktemp("hour") / "hour.mp3", block, 3600)


@pytest.fixture(scope="module")
def ten_min_mp3(tmp_path_factory, block):
    return _mp3(tmp_path_factory.mktemp("ten") / "ten.mp3", block, 600)


class PeakRss:
    """Peak RSS above the start of one process, sampled every 50 ms."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return (self.peak - self.base) / 2**20


def test_hour_long_mp3_streams_with_results_as_they_come(frontend, hour_mp3):
    path, seconds = hour_mp3
    oai = OpenAI(base_url=frontend.base_url + "/v1", api_key="x", max_retries=0, timeout=900)
    rss = PeakRss(frontend.proc.pid)
    t0 = time.monotonic()
    arrivals, events = [], []
    with open(path, "rb") as f:
        for e in oai.audio.transcriptions.create(model="whisper-1", file=("hour.mp3", f), stream=True):
            arrivals.append(time.monotonic() - t0)
            events.append(e)
    grown_mb = rss.stop()
    assert events[-1].type == "transcript.text.done"
    deltas = [e for e in events[:-1] if e.type == "transcript.text.delta"]
    assert len(deltas) > 100, "one delta per recognised piece, not one at the end"
    assert "".join(d.delta for d in deltas) == events[-1].text
    first, total = arrivals[0], arrivals[-1]
    # results come while the rest of the hour is still being recognised
    assert first < total / 4, f"first delta after {first:.1f} s of {total:.1f} s"
    # the frontend never holds the hour: well under the 230 MB the decoded audio alone would take
    assert grown_mb < 200, f"frontend RSS grew {grown_mb:.0f} MB for a {seconds / 60:.0f} min file"
    assert events[-1].usage.input_tokens >= seconds * 1000 / 60 - 1


def test_http_result_equals_the_whole_file_pipeline(frontend, client, ten_min_mp3):
    path, _ = ten_min_mp3
    oai = OpenAI(base_url=frontend.base_url + "/v1", api_key="x", max_retries=0, timeout=600)
    with open(path, "rb") as f:
        verbose = oai.audio.transcriptions.create(model="whisper-1", file=("ten.mp3", f),
                                                   response_format="verbose_json", timestamp_granularities=["word"])
    whole = client.transcribe(decode(path.read_bytes()))
    assert verbose.text == whole["text"]
    assert [(round(s.start * 1000), round(s.end * 1000)) for s in verbose.segments] == \
        [(s["start_ms"], s["end_ms"]) for s in whole["sentences"]]
    assert [w.word for w in verbose.words] == [w for s in whole["sentences"] for w in s["words"]]
    assert abs(verbose.duration * 1000 - whole["duration_ms"]) <= 1


def _asr_count(client) -> int:
    return int(client.statistics("asr")["model_stats"][0].get("inference_count", 0))


def _gauge(base_url: str, name: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def test_client_hanging_up_stops_the_recording(frontend, client, hour_mp3):
    path, _ = hour_mp3
    before = _asr_count(client)
    with httpx.Client(timeout=300) as http, open(path, "rb") as f:
        with http.stream("POST", frontend.base_url + "/v1/audio/transcriptions",
                         files={"file": ("hour.mp3", f)}, data={"model": "whisper-1", "stream": "true"}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data:") and "transcript.text.delta" in line:
                    break  # first result: hang up
    time.sleep(2.0)  # what was already inside `asr` finishes
    settled = _asr_count(client)
    time.sleep(3.0)
    assert _asr_count(client) == settled, "the hour is still being recognised after the client left"
    assert settled - before < 300, "far less than the hour's segments were recognised"
    assert _gauge(frontend.base_url, "funasr_inflight_requests") == 0
