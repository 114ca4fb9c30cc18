"""Long recordings (`funasr-triton bench --long` / `--long-only`): the served HTTP path vs funasr-onnx and AutoModel.

Audio: one ~90 s block of espeak-ng Mandarin (varied sentences, voices and pauses) tiled to 10 min, 1 h
(and 4 h for memory) with varying pauses between the repeats, encoded to 48 kbit/s MP3 and cached in
.cache/bench/audio.

served       the embedded Triton on the bench repository (profile `cpu`, explicit model control: transcribe,
             asr, feature_extractor, paraformer, asr_decode, punc) and the real `funasr-triton frontend`
             process; each file is a multipart upload to /v1/audio/transcriptions with stream=true, so the
             frontend's spooling, its streamed ffmpeg decode and the Triton `transcribe` sequence are all in
             the time. First result = the first `transcript.text.delta` event.
funasr-onnx  Fsmn_vad -> SeacoParaformer per segment -> CT_Transformer (bench.load_funasr_onnx), and
automodel    FunASR AutoModel with vad_model + punc_model at its default batch_size_s (bench.load_automodel):
             each in its own child process, loaded once, warmed up on 20 s, then one call per file timed
             from the MP3 path (ffmpeg decode included) to the punctuated text. They have no streaming: their
             first result is their total time.

Per served run: Triton's inference statistics (queue, compute_input/infer/output, counts) of every model
before and after, the frontend's own /metrics (time it waited for ffmpeg chunks and for Triton answers),
the CPU seconds of the frontend and Triton process trees, and the peak RSS above idle of the frontend
process tree (with its ffmpeg) PLUS the tritonserver process tree (server + python-backend stubs).

Overhead = end-to-end wall time minus the `compute_infer` of the busiest model doing the math
(feature_extractor, paraformer, asr_decode, punc; per execution, so a batch counts once; in practice
paraformer), as a share of the wall time. The stages run at the same time, so the busiest bounds the
end-to-end time; what the frontend and Triton's plumbing add is the time that model is not busy: waiting for
the upload, the decode and the first VAD segment, BLS hand-offs, the tail after its last batch.

Memory runs (`--long-memory-minutes`, `--long-parallel` concurrent uploads of the longest
`--long-minutes` file) use `--long-memory-source`: by default the tiny `test` models (exported into
.cache/bench/long-test), since the memory per recording does not depend on the model size and the 4 h
file then takes minutes instead of an hour. Each memory run gets a fresh Triton + frontend and a
3-minute warm-up upload first (SERVED_WARMUP_SECONDS: several VAD strides and full batches, so the
allocator and the ONNX Runtime arenas reach their working size, as on any server that has seen a long
file), so none starts from memory an earlier run left allocated, and none counts one-time growth.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from funasr_triton.audio import decode
from funasr_triton.server import EmbeddedTriton, TritonOptions, free_ports

from .bench_common import (AUDIO_DIR, BENCH, CACHE, DOC, ONNX_DIR, REPO, ROOT, SR, CpuMeter, RssSampler, _tree_cpu_s,
                           error_text, funasr_onnx_transcribe, load_automodel, load_funasr_onnx, machine_info,
                           other_load_text, progress, run_worker, served_settings, text_units, write_results)
from .speech import SENTENCES, espeak

LONG_DIR = BENCH / "long"
TEST_REPO = BENCH / "long-test" / "model_repository"
SERVED_MODELS = ("transcribe", "asr", "feature_extractor", "paraformer", "asr_decode", "punc")
MATH_MODELS = ("feature_extractor", "paraformer", "asr_decode", "punc")
# frontend settings of the served runs (FUNASR_TRITON_*): room for 4 h recordings and 4+ uploads at once
FRONTEND_ENV = {"FUNASR_TRITON_LOG_LEVEL": "WARNING", "FUNASR_TRITON_STREAMING__ENABLED": "false",
                "FUNASR_TRITON_TRITON__TIMEOUT_S": "7200", "FUNASR_TRITON_LIMITS__FFMPEG_TIMEOUT_S": "14400",
                "FUNASR_TRITON_LIMITS__MAX_CONCURRENT_JOBS": "8",
                # the 4 h MP3 decodes a few ms past 4 h, the default limit
                "FUNASR_TRITON_LIMITS__MAX_AUDIO_SECONDS": str(5 * 3600)}
BLOCK_SECONDS = 90.0
WARMUP_SECONDS = 20.0
# the served stack's warm-up: long enough for several VAD strides and full batches, so the allocator and the
# ONNX Runtime arenas reach their working size once (what any server that has seen a long file holds)
SERVED_WARMUP_SECONDS = 180.0
DELTA = "transcript.text.delta"
DONE = "transcript.text.done"
# goals from issue 11 (reported, never asserted)
GOALS = {"served_vs_funasr_onnx_at_1h": 1.2, "overhead_share_max": 0.05, "first_delta_after_upload_s_max": 5.0,
         "rss_per_request_mb_max": 400.0}
MARK_BEGIN, MARK_END = "<!-- long-file section: begin -->", "<!-- long-file section: end -->"


def parse_minutes(text: str) -> list[float]:
    return [float(x) for x in str(text or "").split(",") if x.strip()]


def _label(minutes: float) -> str:
    return f"{minutes / 60:g} h" if minutes >= 60 else f"{minutes:g} min"


# --------------------------------------------------------------------------------------------
# audio


def speech_block(seconds: float = BLOCK_SECONDS, seed: int = 11) -> np.ndarray:
    """About `seconds` of Mandarin: every sentence in turn, voices and pauses (0.3 s to 3 s) varied."""
    rng = random.Random(seed)
    parts, length, sentences = [np.zeros(int(0.5 * SR), np.float32)], 0, []
    while length < seconds * SR:
        if not sentences:
            sentences = SENTENCES[:]
            rng.shuffle(sentences)
        speech = espeak(sentences.pop(), speed=rng.choice([140, 160, 175, 190]), pitch=rng.choice([35, 50, 65]))
        pause = np.zeros(int(rng.choice([0.3, 0.6, 1.0, 1.8, 3.0]) * SR), np.float32)
        parts += [speech, pause]
        length += len(speech) + len(pause)
    return np.concatenate(parts).astype(np.float32)


def long_mp3(minutes: float, block: np.ndarray | None = None) -> tuple[Path, float]:
    """(path, seconds) of the cached MP3 of `minutes`: the block tiled with 0.5-8 s pauses between repeats."""
    path = AUDIO_DIR / f"long-{minutes:g}min.mp3"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())["seconds"]
    block = speech_block() if block is None else block
    AUDIO_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp3")
    proc = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(SR), "-ac",
                             "1", "-i", "pipe:0", "-b:a", "48k", str(tmp)], stdin=subprocess.PIPE)
    rng, total = random.Random(int(minutes * 60)), 0
    while total < minutes * 60 * SR:
        pause = np.zeros(int(rng.choice([0.5, 1.0, 2.0, 4.0, 8.0]) * SR), np.float32)
        piece = np.concatenate([block, pause])[: int(minutes * 60 * SR) - total]
        proc.stdin.write(piece.astype("<f4").tobytes())
        total += len(piece)
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed to encode {tmp}")
    tmp.replace(path)
    meta.write_text(json.dumps({"seconds": total / SR, "block_seconds": len(block) / SR}))
    return path, total / SR


def warmup_mp3(seconds: float = WARMUP_SECONDS) -> Path:
    return long_mp3(seconds / 60)[0]


# --------------------------------------------------------------------------------------------
# baselines (child processes: `python -m funasr_triton_tools.bench_workers long-baseline spec out`)


def _baseline_runner(runtime: str, spec: dict):
    if runtime == "automodel":
        model = load_automodel(spec["source_dirs"])  # default batch_size_s
        return lambda wav: (model.generate(input=wav, disable_pbar=True)[0]["text"], None)
    models = load_funasr_onnx(Path(spec["onnx_dir"]))
    return lambda wav: funasr_onnx_transcribe(models, wav)


def bench_long_baseline(spec: dict) -> dict:
    """(worker) One runtime over each long file: MP3 path -> decoded -> punctuated text, timed whole."""
    runtime = spec["runtime"]
    t0 = time.monotonic()
    run = _baseline_runner(runtime, spec)
    out: dict = {"runtime": runtime, "load_s": round(time.monotonic() - t0, 1), "files": {}}
    run(decode(spec["warmup"]))
    sampler = RssSampler(os.getpid(), interval_s=0.1).start()
    idle = sampler.sample()
    for label, path in spec["files"].items():
        try:
            sampler.reset()
            cpu = CpuMeter()
            t = time.perf_counter()
            wav = decode(path)
            decode_s = time.perf_counter() - t
            text, segments = run(wav)
            wall = time.perf_counter() - t
            audio_s = len(wav) / SR
            del wav
            peak = sampler.peak_mb()
            m = {"audio_s": round(audio_s, 1), "wall_s": round(wall, 2), "decode_s": round(decode_s, 2),
                 "throughput_x": round(audio_s / wall, 2), "first_result_s": round(wall, 2),
                 "units": text_units(text), "segments": segments, "peak_rss_mb": peak,
                 "rss_above_idle_mb": round(peak - idle / 2**20, 1) if peak is not None else None,
                 "cpu": cpu.stop(), "sample_text": text[:160]}
            progress(f"long {runtime} {label}: {m['audio_s']:.0f} s in {wall:.1f} s -> {m['throughput_x']:.1f}x "
                     f"real time, {m['units']} units, peak RSS {peak} MB")
        except Exception as e:  # noqa: BLE001 - reported in the results
            m = {"error": error_text(e), "traceback": traceback.format_exc()[-3000:]}
            progress(f"long {runtime} {label}: FAILED {m['error']}")
        out["files"][label] = m
    sampler.stop()
    return out


WORKERS = {"long-baseline": bench_long_baseline}


# --------------------------------------------------------------------------------------------
# served: embedded Triton + the real frontend process


def test_repository() -> Path:
    """A fresh repository of the tiny `--source test` models (vad, asr, punc) with the committed code."""
    shutil.rmtree(TEST_REPO.parent, ignore_errors=True)

    def ignore(directory, names):
        d = Path(directory)
        return [n for n in names if (d.name == "1" and not n.endswith(".py") and n != ".keep")
                or n in ("MANIFEST.json", "__pycache__")]

    shutil.copytree(ROOT / "model_repository", TEST_REPO, symlinks=True, ignore=ignore)
    progress(f"exporting --source test (vad, asr, punc) into {TEST_REPO} for the memory runs")
    subprocess.run([str(Path(sys.executable).parent / "funasr-triton"), "--log-level", "WARNING", "export",
                    "--source", "test", "--stages", "vad,asr,punc", "--quantize", "--repository", str(TEST_REPO),
                    "--cache-dir", str(CACHE / "models")], check=True, cwd=ROOT, stdout=sys.stderr)
    # the 4 h MP3 decodes a few ms past 4 h, transcribe's default limit: 5 h here, as for the frontend
    config = TEST_REPO / "transcribe" / "config.pbtxt"
    config.write_text(re.sub(r'(key: "max_audio_seconds" value: \{ string_value: )"\d+"', r'\1"18000"',
                             config.read_text()))
    return TEST_REPO


def _get(url: str, timeout_s: float = 10.0) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return r.read().decode("utf-8")


class ServedStack:
    """Embedded Triton (`cpu` profile) on `repo` plus a `funasr-triton frontend` process pointed at it."""

    def __init__(self, repo: Path, name: str):
        self.repo, self.name = repo, name
        self.triton = None
        self.frontend: subprocess.Popen | None = None

    def __enter__(self) -> "ServedStack":
        LONG_DIR.mkdir(parents=True, exist_ok=True)
        grpc, metrics, http, port = free_ports(4)
        self.triton_url, self.base_url = f"127.0.0.1:{grpc}", f"http://127.0.0.1:{port}"
        load = ("--model-control-mode=explicit", *(f"--load-model={m}" for m in SERVED_MODELS))
        self.triton = EmbeddedTriton(TritonOptions(self.repo, "cpu", grpc, metrics, http, extra_args=load),
                                     cache=CACHE, log_file=LONG_DIR / f"triton-{self.name}.log")
        t0 = time.monotonic()
        try:
            self.triton.start()
            self.triton.wait_ready(timeout_s=600)
            self.load_s = round(time.monotonic() - t0, 1)
            self._start_frontend(port)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start_frontend(self, port: int) -> None:
        env = dict(os.environ, FUNASR_TRITON_TRITON__URL=self.triton_url, FUNASR_TRITON_PORT=str(port), **FRONTEND_ENV)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        log = open(LONG_DIR / f"frontend-{self.name}.log", "wb")
        self.frontend = subprocess.Popen([str(Path(sys.executable).parent / "funasr-triton"), "frontend"], env=env,
                                         cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.frontend.poll() is not None:
                raise RuntimeError(f"frontend exited; see {LONG_DIR / f'frontend-{self.name}.log'}")
            with contextlib.suppress(OSError):
                _get(self.base_url + "/health", 1)
                return
            time.sleep(0.2)
        raise TimeoutError("frontend did not start")

    def __exit__(self, *exc) -> None:
        if self.frontend is not None and self.frontend.poll() is None:
            self.frontend.terminate()
            try:
                self.frontend.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.frontend.kill()
        if self.triton is not None:
            self.triton.stop()

    @property
    def pids(self) -> dict[str, int]:
        return {"frontend": self.frontend.pid, "triton": self.triton.proc.pid}

    def model_stats(self) -> dict[str, dict]:
        """Triton's cumulative statistics per model: counts and seconds.

        queue_s sums every request's wait; compute_*_s sum every execution once (from batch_stats: the
        per-request compute times count a batch's time once per request in it). Models without
        batch_stats (ensembles) keep the per-request sums.
        """
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(url=self.triton_url)
        try:
            raw = client.get_inference_statistics(as_json=True).get("model_stats", [])
        finally:
            client.close()
        out: dict[str, dict] = {}
        for s in raw:
            stats = s.get("inference_stats", {})
            m = out.setdefault(s["name"], {"requests": 0, "inferences": 0, "executions": 0, "queue_s": 0.0,
                                           "compute_input_s": 0.0, "compute_infer_s": 0.0, "compute_output_s": 0.0})
            m["requests"] += int(stats.get("success", {}).get("count", 0))
            m["inferences"] += int(s.get("inference_count", 0))
            m["executions"] += int(s.get("execution_count", 0))
            m["queue_s"] += int(stats.get("queue", {}).get("ns", 0)) / 1e9
            batches = s.get("batch_stats") or [stats]
            for key in ("compute_input", "compute_infer", "compute_output"):
                m[f"{key}_s"] += sum(int(b.get(key, {}).get("ns", 0)) for b in batches) / 1e9
        return out

    def frontend_seconds(self) -> dict[str, float]:
        """The frontend's cumulative wait for ffmpeg chunks and for Triton answers (its /metrics sums)."""
        wanted = {"funasr_ffmpeg_seconds_sum": "decode_wait_s", "funasr_triton_seconds_sum": "triton_wait_s"}
        out = dict.fromkeys(wanted.values(), 0.0)
        for line in _get(self.base_url + "/metrics").splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in wanted:
                out[wanted[name]] += float(line.split()[-1])
        return out


class _TimedFile(io.BufferedReader):
    """The upload's file: notes when the HTTP client has read all of it (the upload ends right after)."""

    eof_at: float | None = None

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        if not data and self.eof_at is None:
            self.eof_at = time.perf_counter()
        return data


def post_streaming(base_url: str, path: Path, timeout_s: float = 4 * 3600) -> dict:
    """One multipart upload with stream=true: times of the upload's end, the first delta and the last event."""
    import httpx

    t0 = time.perf_counter()
    first = done = None
    deltas, text = 0, ""
    with httpx.Client(timeout=timeout_s) as http, _TimedFile(io.FileIO(path)) as f:
        with http.stream("POST", base_url + "/v1/audio/transcriptions", files={"file": (path.name, f, "audio/mpeg")},
                         data={"model": "whisper-1", "stream": "true"}) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:500]!r}")
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("type") == DELTA:
                    deltas += 1
                    first = first or time.perf_counter()
                elif event.get("type") == DONE:
                    done, text = time.perf_counter(), event.get("text", "")
                elif "error" in event:
                    raise RuntimeError(f"stream failed: {event['error']}")
    if done is None:
        raise RuntimeError("the stream ended without transcript.text.done")
    upload = (f.eof_at or t0) - t0
    return {"wall_s": done - t0, "upload_s": upload, "first_delta_s": (first or done) - t0,
            "first_delta_after_upload_s": (first or done) - t0 - upload, "deltas": deltas,
            "units": text_units(text), "text": text}


def tree_pss(pid: int) -> int:
    """Proportional set size of a process and its descendants (bytes; 0 when unreadable).

    Summed RSS counts a page mapped by several processes once per process: the python backend's
    shared-memory pool (tensors between tritonserver and each stub) and the shared libraries. PSS
    splits each shared page among the processes mapping it, so the sum over a tree is its real size."""
    try:
        import psutil

        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except Exception:  # noqa: BLE001 - psutil missing or process gone
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except Exception:  # noqa: BLE001 - a child that just exited, or no smaps
            pass
    return total


class TreesRss:
    """Peak of the summed RSS of several process trees (frontend + Triton), and each tree's at that peak;
    also the peak of their summed PSS (`tree_pss`: shared pages counted once)."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.1, with_pss: bool = True):
        self.pids = dict(pids)
        self.parts = {name: RssSampler(pid, tree=True) for name, pid in pids.items()}
        self.interval_s, self.with_pss = interval_s, with_pss
        self._stop = threading.Event()
        self.idle = self.sample()
        self.peak = dict(self.idle)
        self.pss_idle = self.pss() if with_pss else 0
        self.pss_peak = self.pss_idle
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, int]:
        return {name: p.sample() for name, p in self.parts.items()}

    def pss(self) -> int:
        return sum(tree_pss(pid) for pid in self.pids.values())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = self.sample()
            if sum(now.values()) > sum(self.peak.values()):
                self.peak = now
            if self.with_pss:
                self.pss_peak = max(self.pss_peak, self.pss())

    def __enter__(self) -> "TreesRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        mb = 2**20
        return {"idle_mb": round(sum(self.idle.values()) / mb, 1), "peak_mb": round(sum(self.peak.values()) / mb, 1),
                "above_idle_mb": round((sum(self.peak.values()) - sum(self.idle.values())) / mb, 1),
                **({"pss_idle_mb": round(self.pss_idle / mb, 1),
                    "pss_above_idle_mb": round((self.pss_peak - self.pss_idle) / mb, 1)} if self.with_pss else {}),
                **{f"{name}_above_idle_mb": round((self.peak[name] - self.idle[name]) / mb, 1) for name in self.parts}}


def _stats_delta(before: dict, after: dict) -> dict:
    out = {}
    for name, a in after.items():
        b = before.get(name, {})
        d = {k: (v - b.get(k, 0)) for k, v in a.items()}
        if d["requests"] or d["executions"]:
            d = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}
            d["mean_batch"] = round(d["inferences"] / d["executions"], 2) if d["executions"] else None
            out[name] = d
    return out


def measure_served(stack: ServedStack, path: Path, audio_s: float, uploads: int = 1, memory: bool = False) -> dict:
    """`uploads` concurrent uploads of `path`: times, memory, CPU, Triton and frontend statistics.

    memory: a memory run, sampled closely (RSS every 0.1 s and PSS). A throughput run samples RSS once a second
    and no PSS: reading every process's smaps ten times a second took about a third of a core from the stack
    (bench_cores 1.88 against 1.55 of Triton + frontend on the 1 h file), a cost the baselines never paid."""
    stats0, front0 = stack.model_stats(), stack.frontend_seconds()
    cpu0 = {name: _tree_cpu_s(pid) for name, pid in stack.pids.items()}
    machine = CpuMeter()
    with TreesRss(stack.pids, interval_s=0.1 if memory else 1.0, with_pss=memory) as rss:
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=uploads) as pool:
            runs = list(pool.map(lambda _: post_streaming(stack.base_url, path), range(uploads)))
        wall = time.perf_counter() - t0
    models = _stats_delta(stats0, stack.model_stats())
    front = {k: round(v - front0[k], 2) for k, v in stack.frontend_seconds().items()}
    cpu = {f"{name}_cpu_s": round(_tree_cpu_s(pid) - cpu0[name], 1) for name, pid in stack.pids.items()}
    # the stages overlap, so the busiest one bounds the time: what the end-to-end time has beyond it is the
    # frontend's and Triton's overhead (decode, upload, BLS hand-offs, waiting for the first segment, the tail)
    busiest = max(MATH_MODELS, key=lambda m: models.get(m, {}).get("compute_infer_s", 0.0))
    compute = models.get(busiest, {}).get("compute_infer_s", 0.0)
    m = {"uploads": uploads, "audio_s": round(audio_s * uploads, 1), "wall_s": round(wall, 2),
         "throughput_x": round(audio_s * uploads / wall, 2),
         "first_delta_s": round(max(r["first_delta_s"] for r in runs), 2),
         "first_delta_after_upload_s": round(max(r["first_delta_after_upload_s"] for r in runs), 2),
         "upload_s": round(max(r["upload_s"] for r in runs), 2), "deltas": runs[0]["deltas"],
         "units": runs[0]["units"], "rss": rss.summary(), "models": models, "frontend": front,
         "cpu": {**cpu, "frontend_share": round(cpu["frontend_cpu_s"] / max(sum(cpu.values()), 1e-6), 3),
                 "machine": machine.stop()},
         "overhead": {"busiest_model": busiest, "model_compute_s": round(compute, 2), "overhead_s": round(wall - compute, 2),
                      "share": round((wall - compute) / wall, 3)} if uploads == 1 else None,
         "sample_text": runs[0]["text"][:160]}
    return m


def _served_runs(repo: Path, name: str, files: dict[str, tuple[Path, float]], jobs: list[tuple[str, int]],
                 fresh: bool = False) -> dict:
    """Each job (file label, concurrent uploads) after a warm-up upload: all on one ServedStack (the throughput
    runs), or (fresh: the memory runs, sampled closely) each on its own, so that no run starts from memory an
    earlier one left allocated."""
    if not fresh:
        return _one_stack_runs(repo, name, files, jobs, memory=False)
    out: dict = {"repository": str(repo), "fresh_stack_per_run": True, "files": {}}
    for job in jobs:
        run = _one_stack_runs(repo, name, files, [job], memory=True)
        out["files"].update(run["files"])
        if "error" in run:
            out["error"] = run["error"]
    return out


def _one_stack_runs(repo: Path, name: str, files: dict[str, tuple[Path, float]], jobs: list[tuple[str, int]],
                    memory: bool) -> dict:
    out: dict = {"repository": str(repo), "frontend_env": FRONTEND_ENV, "files": {}}
    if repo == REPO:
        out["settings"] = served_settings("cpu", SERVED_MODELS)
    try:
        with ServedStack(repo, name) as stack:
            out["load_s"] = stack.load_s
            post_streaming(stack.base_url, warmup_mp3(SERVED_WARMUP_SECONDS))
            for label, n in jobs:
                key = label if n == 1 else f"{n}x {label}"
                try:
                    m = measure_served(stack, files[label][0], files[label][1], n, memory=memory)
                    progress(f"long served[{name}] {key}: {m['audio_s']:.0f} s in {m['wall_s']:.1f} s -> "
                             f"{m['throughput_x']:.1f}x real time, first delta {m['first_delta_s']:.1f} s, "
                             f"RSS +{m['rss']['above_idle_mb']:.0f} MB")
                except Exception as e:  # noqa: BLE001 - reported in the results
                    m = {"uploads": n, "error": error_text(e)}
                    progress(f"long served[{name}] {key}: FAILED {m['error']}")
                out["files"][key] = m
    except Exception as e:  # noqa: BLE001
        out["error"] = error_text(e)
        progress(f"long served[{name}]: FAILED {out['error']} (logs in {LONG_DIR})")
    return out


# --------------------------------------------------------------------------------------------
# the whole long-file measurement


def run_long(prep: dict, args) -> dict:
    """Throughput files on the bench repository (served + both baselines), then the memory runs."""
    t_start = time.monotonic()
    minutes = parse_minutes(args.long_minutes)
    memory_minutes = parse_minutes(args.long_memory_minutes)
    parallel = int(args.long_parallel)
    block = speech_block()
    files = {_label(m): long_mp3(m, block) for m in sorted(set(minutes) | set(memory_minutes))}
    progress("long files: " + ", ".join(f"{k} ({s:.0f} s, {p.stat().st_size / 2**20:.0f} MB MP3)"
                                        for k, (p, s) in files.items()))
    throughput = {_label(m): files[_label(m)] for m in minutes}
    out: dict = {"files": {k: {"path": str(p.relative_to(ROOT)), "audio_s": round(s, 1), "mp3_mb":
                               round(p.stat().st_size / 2**20, 1)} for k, (p, s) in files.items()},
                 "memory_source": args.long_memory_source}
    if throughput:  # `--long-minutes ""`: the memory runs only
        out["served"] = _served_runs(REPO, "test-large", throughput, [(label, 1) for label in throughput])
    spec = {"files": {k: str(p) for k, (p, _) in throughput.items()}, "warmup": str(warmup_mp3()),
            "source_dirs": prep["source_dirs"], "onnx_dir": str(ONNX_DIR)}
    automodel_minutes = minutes if args.long_automodel_minutes is None else parse_minutes(args.long_automodel_minutes)
    automodel_files = {k: v for k, v in spec["files"].items() if k in {_label(m) for m in automodel_minutes}}
    for runtime in ("funasr-onnx", "automodel") if throughput else ():
        progress(f"long {runtime}: loading")
        run_spec = {**spec, "runtime": runtime, **({"files": automodel_files} if runtime == "automodel" else {})}
        out[runtime.replace("-", "_")] = run_worker("long-baseline", run_spec, timeout_s=6 * 3600)
    if memory_minutes or parallel > 1:
        repo = REPO if args.long_memory_source == "test-large" else test_repository()
        longest = _label(max(minutes)) if minutes else None
        jobs = [(_label(m), 1) for m in memory_minutes] + ([(longest, parallel)] if longest and parallel > 1 else [])
        out["memory"] = _served_runs(repo, f"memory-{args.long_memory_source}", files, jobs, fresh=True)
        out["memory"]["parallel"] = parallel
    out["summary"] = summarize_long(out)
    out["total_s"] = round(time.monotonic() - t_start, 1)
    return out


def summarize_long(long: dict) -> dict:
    """Ratios per file and the issue's goals, from the recorded measurements."""
    served = long.get("served", {}).get("files", {})
    per_file = {}
    for label, s in served.items():
        if "throughput_x" not in s:
            continue
        entry = {}
        for key in ("funasr_onnx", "automodel"):
            b = long.get(key, {}).get("files", {}).get(label, {})
            if "throughput_x" in b:
                entry[f"vs_{key}"] = round(s["throughput_x"] / b["throughput_x"], 2)
        per_file[label] = entry
    one_hour = per_file.get("1 h", {})
    memory = long.get("memory", {}).get("files", {})
    single_rss = {k: m["rss"]["above_idle_mb"] for k, m in memory.items() if "rss" in m and m["uploads"] == 1}
    parallel_rss = {k: round(m["rss"]["above_idle_mb"] / m["uploads"], 1) for k, m in memory.items()
                    if "rss" in m and m["uploads"] > 1}
    overhead = {k: s["overhead"]["share"] for k, s in served.items() if s.get("overhead")}
    first = {k: s["first_delta_after_upload_s"] for k, s in served.items() if "first_delta_after_upload_s" in s}
    return {
        "ratios": per_file,
        "goals": {
            "served_vs_funasr_onnx_at_1h": {"goal": GOALS["served_vs_funasr_onnx_at_1h"],
                                            "value": one_hour.get("vs_funasr_onnx")},
            "overhead_share": {"goal": GOALS["overhead_share_max"], "value": overhead},
            "first_delta_after_upload_s": {"goal": GOALS["first_delta_after_upload_s_max"], "value": first},
            "rss_above_idle_mb_one_request": {"goal": GOALS["rss_per_request_mb_max"], "value": single_rss},
            "rss_above_idle_mb_per_request_concurrent": {"goal": GOALS["rss_per_request_mb_max"], "value": parallel_rss},
        },
    }


# --------------------------------------------------------------------------------------------
# markdown


def _f(value, fmt: str = ".1f", none: str = "—") -> str:
    return none if value is None else format(value, fmt)


def _ratio(value) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _runtime_rows(long: dict) -> list[str]:
    rows = []
    ratios = long.get("summary", {}).get("ratios", {})
    for label, s in long.get("served", {}).get("files", {}).items():
        if "error" in s:
            rows.append(f"| {label} | served | failed: `{s['error'][:120]}` | | | | | |")
        else:
            r = ratios.get(label, {})
            rows.append(f"| {label} | served (HTTP, `cpu`) | {s['wall_s']:.1f} | {s['throughput_x']:.1f}× | "
                        f"{s['first_delta_s']:.1f} ({s['first_delta_after_upload_s']:.1f} after the upload) | "
                        f"{_ratio(r.get('vs_funasr_onnx'))} / {_ratio(r.get('vs_automodel'))} | "
                        f"{s['rss']['above_idle_mb']:.0f} ({s['rss']['peak_mb']:.0f}) | {s['units']} |")
        for key, name in (("funasr_onnx", "funasr-onnx"), ("automodel", "AutoModel")):
            b = long.get(key, {}).get("files", {}).get(label)
            if b is None:
                err = long.get(key, {}).get("error")
                if err:
                    rows.append(f"| {label} | {name} | failed: `{err[:120]}` | | | | | |")
            elif "error" in b:
                rows.append(f"| {label} | {name} | failed: `{b['error'][:120]}` | | | | | |")
            else:
                rows.append(f"| {label} | {name} | {b['wall_s']:.1f} | {b['throughput_x']:.1f}× | "
                            f"{b['first_result_s']:.1f} (no streaming) | | {_f(b.get('rss_above_idle_mb'), '.0f')} "
                            f"({_f(b.get('peak_rss_mb'), '.0f')}) | {b['units']} |")
    return rows


def _overhead_rows(long: dict) -> list[str]:
    rows = []
    for label, s in long.get("served", {}).get("files", {}).items():
        o = s.get("overhead")
        if not o:
            continue
        fr, cpu = s.get("frontend", {}), s.get("cpu", {})
        rows.append(f"| {label} | {s['wall_s']:.1f} | {o['model_compute_s']:.1f} | {o['overhead_s']:.1f} | "
                    f"{100 * o['share']:.1f} % | {_f(fr.get('decode_wait_s'))} | {_f(fr.get('triton_wait_s'))} | "
                    f"{_f(cpu.get('frontend_cpu_s'))} / {_f(cpu.get('triton_cpu_s'))} "
                    f"({100 * cpu.get('frontend_share', 0):.1f} %) |")
    return rows


def _memory_rows(long: dict) -> list[str]:
    rows = []
    for label, m in long.get("memory", {}).get("files", {}).items():
        if "error" in m:
            rows.append(f"| {label} | failed: `{m['error'][:120]}` | | | | | |")
            continue
        r = m["rss"]
        rows.append(f"| {label} | {r['idle_mb']:.0f} | {r['above_idle_mb']:.0f} | {r.get('frontend_above_idle_mb', 0):.0f}"
                    f" | {r.get('triton_above_idle_mb', 0):.0f} | {r['above_idle_mb'] / m['uploads']:.0f} | "
                    f"{_f(r.get('pss_above_idle_mb'), '.0f')} |")
    return rows


def _model_rows(run: dict) -> list[str]:
    rows = []
    for name, d in sorted(run.get("models", {}).items(), key=lambda kv: -kv[1]["compute_infer_s"]):
        rows.append(f"| `{name}` | {d['requests']} | {d['executions']} | {_f(d.get('mean_batch'), '.2f')} | "
                    f"{d['queue_s']:.1f} | {d['compute_input_s']:.1f} | {d['compute_infer_s']:.1f} | "
                    f"{d['compute_output_s']:.1f} |")
    return rows


def _goal_lines(summary: dict) -> list[str]:
    g = summary.get("goals", {})

    def fmt(values: dict, unit: str, scale: float = 1.0, digits: str = ".1f") -> str:
        return ", ".join(f"{k}: {format(v * scale, digits)}{unit}" for k, v in values.items()) or "not measured"

    ratio = g.get("served_vs_funasr_onnx_at_1h", {})
    return [
        "| goal (issue 11) | target | measured |", "|---|---|---|",
        f"| served / funasr-onnx throughput, 1 h file, concurrency 1 | ≥ {ratio.get('goal')}× | "
        f"{_ratio(ratio.get('value')) if ratio.get('value') is not None else 'not measured'} |",
        f"| frontend + Triton overhead share of end-to-end time | ≤ {100 * g['overhead_share']['goal']:.0f} % | "
        f"{fmt(g['overhead_share']['value'], ' %', 100)} |",
        f"| first delta after the upload ends | within a few s (≤ {g['first_delta_after_upload_s']['goal']:.0f} s) | "
        f"{fmt(g['first_delta_after_upload_s']['value'], ' s')} |",
        f"| RSS above idle, one request (memory runs) | ≤ {g['rss_above_idle_mb_one_request']['goal']:.0f} MB | "
        f"{fmt(g['rss_above_idle_mb_one_request']['value'], ' MB', digits='.0f')} |",
        f"| RSS above idle per request, concurrent uploads (memory runs) | ≈ one request's | "
        f"{fmt(g['rss_above_idle_mb_per_request_concurrent']['value'], ' MB', digits='.0f')} |",
    ]


def _load_text(long: dict, cores: int | None) -> list[str]:
    """bench.other_load_text over every long-file run (served runs keep the machine's CPU under cpu.machine)."""
    runs = [{"cpu": m.get("cpu", {}).get("machine")} for part in ("served", "memory")
            for m in long.get(part, {}).get("files", {}).values()]
    runs += [b for key in ("funasr_onnx", "automodel") for b in long.get(key, {}).get("files", {}).values()]
    text = other_load_text(runs, cores)
    return [text, ""] if text else []


def render_section(long: dict, footer: list[str] = (), cores: int | None = None) -> list[str]:
    served = long.get("served", {}).get("files", {})
    longest = max((k for k, s in served.items() if s.get("models")), default=None,
                  key=lambda k: served[k]["audio_s"])
    memory = long.get("memory", {})
    files = ", ".join(f"{k} ({f['audio_s']:.0f} s, {f['mp3_mb']:.0f} MB)" for k, f in long.get("files", {}).items())
    lines = [
        MARK_BEGIN, "## Long files (HTTP upload, concurrency 1)", "",
        f"Files: espeak-ng Mandarin, one ~{BLOCK_SECONDS:.0f} s block tiled with 0.5–8 s pauses, 48 kbit/s MP3: "
        f"{files}. Served = the real `funasr-triton frontend` process in front of the embedded Triton (profile "
        "`cpu`, test-large weights): multipart upload to `/v1/audio/transcriptions` with `stream=true`, spooled, "
        "decoded by ffmpeg in chunks and sent to the `transcribe` sequence as decoded. funasr-onnx (Fsmn_vad -> "
        "SeacoParaformer -> CT_Transformer) and AutoModel (vad_model + punc_model, default batch_size_s) run the "
        "same weights in their own process, one call per file from the MP3 path (decode included), after a 20 s "
        "warm-up; they do not stream, so their first result is their total time.", "",
        "| file | runtime | wall s | × real time | first result s | served ÷ funasr-onnx / ÷ AutoModel | "
        "peak RSS above idle (total) MB | units |", "|---|---|---:|---:|---:|---:|---:|---:|",
        *_runtime_rows(long), "",
        "Served RSS: the frontend process tree (with its ffmpeg) plus the tritonserver tree (server and python-"
        "backend stubs), peak during the request minus just before it. Baselines: their own process.", "",
        *_load_text(long, cores),
        "### Goals", "", *_goal_lines(long.get("summary", {})), "",
        "Goals are reported, not asserted.", "",
        "### Frontend + Triton overhead", "",
        "Overhead = end-to-end wall time (upload start to `transcript.text.done`) minus Triton's `compute_infer` "
        "of the busiest model doing the math (of feature_extractor, paraformer, asr_decode, punc; per execution: "
        "a batch counts once). The stages overlap, so the busiest bounds the time; the rest is the time it sat "
        "idle: upload, decode and first VAD segment before it, BLS hand-offs, the tail. Decode wait / Triton wait: time "
        "the frontend spent waiting for the next ffmpeg chunk / for Triton's answers (its `/metrics`). CPU: CPU "
        "seconds of the frontend tree (with ffmpeg) / the Triton tree during the request.", "",
        "| file | wall s | busiest model's compute s | overhead s | share | decode wait s | Triton wait s | "
        "CPU s frontend / Triton (frontend share) |", "|---|---:|---:|---:|---:|---:|---:|---:|",
        *_overhead_rows(long), "",
    ]
    if longest:
        lines += [f"### Where the time goes ({longest}, served)", "",
                  "Triton's inference statistics over the request, per model (queue: summed over requests; compute: "
                  "over executions, a batch counts once; "
                  "`transcribe` and the `asr` ensemble contain the time of the models they call; `transcribe`'s "
                  "requests last while the sequence waits for audio or results).", "",
                  "| model | requests | executions | mean batch | queue s | compute input s | compute infer s | "
                  "compute output s |", "|---|---:|---:|---:|---:|---:|---:|---:|", *_model_rows(served[longest]), ""]
    if memory:
        source = long.get("memory_source", "test")
        lines += ["### Memory per in-flight request", "",
                  f"Models: `{source}`" + (" (tiny random models: memory per recording does not depend on the model "
                                           "size, and the long files run fast)" if source == "test" else "") +
                  f"; the last row: {memory.get('parallel')} concurrent uploads of the same file. RSS in MB: "
                  "frontend tree + Triton tree, peak during the run minus idle after a 3-minute warm-up upload; each row on a fresh "
                  "Triton + frontend.", "",
                  "PSS above idle: the same trees' proportional set size (a page shared by several processes, such as "
                  "the python backend's shared-memory pool between tritonserver and its stubs, counted once; summed "
                  "RSS counts it in every process that maps it).", "",
                  "| file | idle | peak above idle | frontend part | Triton part | per request | PSS above idle |",
                  "|---|---:|---:|---:|---:|---:|---:|", *_memory_rows(long), ""]
        if memory.get("error"):
            lines += [f"Memory runs failed: `{memory['error']}`", ""]
    if long.get("served", {}).get("error"):
        lines += [f"Served runs failed: `{long['served']['error']}`", ""]
    lines += [f"Long-file part: {long.get('total_s', 0) / 60:.1f} min in all. Reproduce: `funasr-triton bench "
              "--long-only` (files and minutes: `--long-minutes`, `--long-automodel-minutes`, `--long-memory-minutes`, `--long-parallel`, "
              "`--long-memory-source`).", "", *footer, MARK_END]
    return lines


def section_of(doc: str) -> str | None:
    """The long-file section of `doc` (markers included), or None."""
    begin, end = doc.find(MARK_BEGIN), doc.find(MARK_END)
    return doc[begin:end + len(MARK_END)] if begin >= 0 and end > begin else None


def carry_section(new_doc: str, old_doc: str) -> str:
    """A regenerated document without long runs keeps the long-file section of the one it replaces (`make bench`
    after `make bench-long`), before its machine section."""
    section = section_of(old_doc)
    if section is None or section_of(new_doc) is not None:
        return new_doc
    at = new_doc.find("\n## Machine")
    if at < 0:
        return replace_section(new_doc, section)
    return new_doc[:at + 1] + section + "\n\n" + new_doc[at + 1:]


def replace_section(doc: str, section: str) -> str:
    """`doc` with its long-file section replaced by `section` (appended when it has none)."""
    begin, end = doc.find(MARK_BEGIN), doc.find(MARK_END)
    if begin >= 0 and end > begin:
        return doc[:begin] + section + doc[end + len(MARK_END):]
    return doc.rstrip("\n") + "\n\n" + section + "\n"


# --------------------------------------------------------------------------------------------
# `--long-only`


def main_long_only(args, prep: dict, started: datetime.datetime, load_at_start: list[float],
                   machine: dict | None = None) -> int:
    """Only the long-file part: its own results JSON, and its section of docs/benchmark.md replaced."""
    t0 = time.monotonic()
    long = run_long(prep, args)
    result = {
        "format": 1, "kind": "long-only", "started_at": started.isoformat(timespec="seconds"),
        "args": {"long_minutes": parse_minutes(args.long_minutes),
                 "long_automodel_minutes": (None if args.long_automodel_minutes is None
                                            else parse_minutes(args.long_automodel_minutes)),
                 "long_memory_minutes": parse_minutes(args.long_memory_minutes), "long_parallel": args.long_parallel,
                 "long_memory_source": args.long_memory_source},
        "machine": {**machine_info(start=machine), "loadavg_at_start": load_at_start},
        "models": {"repository": str(REPO.relative_to(ROOT)), **{k: v for k, v in prep.items() if k != "ru_maxrss_mb"}},
        "long": long, "total_s": round(time.monotonic() - t0, 1),
    }
    out_path = write_results(result, args.output_dir, started)
    mi = result["machine"]
    section = "\n".join(render_section(long, cores=mi.get("usable_cores"), footer=[
        f"Machine: {mi['cpu']}, {mi['usable_cores']} usable cores, load average at the start "
        f"{', '.join(str(x) for x in load_at_start)}; raw numbers in `{out_path.name}` (bench/results).", ""]))
    DOC.write_text(replace_section(DOC.read_text(encoding="utf-8") if DOC.exists() else "", section), encoding="utf-8")
    progress(f"wrote {out_path} and the long-file section of {DOC}")
    return 0
