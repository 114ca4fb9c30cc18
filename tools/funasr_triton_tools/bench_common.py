"""What the bench modules share: paths and constants, CPU/RSS meters, clips, summaries, worker spawning,
the baselines' model loaders, machine info and small text helpers.

Every bench module (bench_prepare, bench_offline, bench_streaming, bench_longfile, bench_sensevoice, ...) imports
this module; it imports none of them, so the bench modules form no import cycle.
"""
from __future__ import annotations

import datetime
import contextlib
import importlib.metadata
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import tritonclient.grpc as grpcclient

from funasr_triton.server import EmbeddedTriton, TritonOptions, free_ports

from .speech import SENTENCES, espeak

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"
BENCH = CACHE / "bench"
REPO = BENCH / "model_repository"
ONNX_DIR = BENCH / "funasr_onnx"
AUDIO_DIR = BENCH / "audio"
DOC = ROOT / "docs" / "benchmark.md"
SR = 16000
THREADS = 2
WARMUP = 2
N_CLIPS = 4
PUNCTUATION = set(" \t\n，。？、！,.?!;；:：")


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _machine_busy_s() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / tick, steal / tick


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its descendants, reaped ones included (children_user/system)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:  # exited in between
            pass
    return total


class CpuMeter:
    """CPU used during one measurement: the whole machine (/proc/stat) vs this bench's process tree.

    `other_cores` = average cores kept busy by processes outside the bench (other jobs on a shared
    VM: their load slows every runtime down and makes absolute numbers and ratios noisy).
    """

    def __init__(self, pid: int | None = None):
        self.pid = pid or os.getpid()
        self.t0 = time.perf_counter()
        self.machine0 = _machine_busy_s()
        self.own0 = _tree_cpu_s(self.pid)

    def stop(self) -> dict | None:
        machine = _machine_busy_s()
        if machine is None or self.machine0 is None:
            return None
        wall = max(time.perf_counter() - self.t0, 1e-6)
        busy, steal = machine[0] - self.machine0[0], machine[1] - self.machine0[1]
        own = _tree_cpu_s(self.pid) - self.own0
        return {"machine_busy_cores": round(busy / wall, 2), "bench_cores": round(own / wall, 2),
                "other_cores": round(max(busy - own, 0.0) / wall, 2), "steal_cores": round(steal / wall, 2)}


class RssSampler:
    """Peak resident set size of a process (and, with tree=True, all its descendants), sampled."""

    def __init__(self, pid: int, tree: bool = False, interval_s: float = 0.25):
        self.pid, self.tree, self.interval_s = pid, tree, interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import psutil

            self._proc = psutil.Process(pid)
        except Exception:  # noqa: BLE001 - psutil missing or process gone: no RSS numbers
            self._proc = None

    def sample(self) -> int:
        if self._proc is None:
            return 0
        try:
            procs = [self._proc] + (self._proc.children(recursive=True) if self.tree else [])
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except Exception:  # noqa: BLE001 - a child that just exited
                    pass
            return total
        except Exception:  # noqa: BLE001
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval_s)

    def start(self) -> "RssSampler":
        if self._proc is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def reset(self) -> None:
        self.peak = self.sample()

    def peak_mb(self) -> float | None:
        self.peak = max(self.peak, self.sample())
        return round(self.peak / 2**20, 1) if self._proc is not None else None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


def text_units(text: str) -> int:
    """Recognised units in a text: non-space, non-punctuation characters."""
    return sum(1 for ch in text if ch not in PUNCTUATION)


def summarize(latencies: list[float], wall_s: float, audio_s: float, units: list[int], sample_text: str = "",
              segments: list[int] | None = None, **extra) -> dict:
    lat = np.asarray(latencies, dtype=np.float64)
    return {
        "requests": len(latencies),
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall_s, 3),
        "throughput_x": round(audio_s / wall_s, 2),  # audio seconds per wall second
        "rtf": round(wall_s / audio_s, 4),
        "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
        "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
        "latency_mean_s": round(float(lat.mean()), 3),
        "units_per_request": round(float(np.mean(units)), 1) if units else 0.0,
        "segments_per_request": round(float(np.mean(segments)), 2) if segments else None,
        **extra,
        "sample_text": sample_text[:160],  # the first request's text (clip 0)
    }


def describe(m: dict) -> str:
    rss = f", peak RSS {m['peak_rss_mb']:.0f} MB" if m.get("peak_rss_mb") else ""
    return (f"{m['requests']} req, {m['audio_s']:.0f} s audio in {m['wall_s']:.1f} s -> {m['throughput_x']:.1f}x "
            f"realtime, RTF {m['rtf']:.4f}, latency p50 {m['latency_p50_s']:.2f} s p95 {m['latency_p95_s']:.2f} s{rss}")


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:2000]


def run_sequential(fn, clips: list[np.ndarray], order: list[int], sampler: RssSampler | None) -> dict:
    latencies, units, texts, segments = [], [], [], []
    if sampler is not None:
        sampler.reset()
    cpu = CpuMeter()
    t0 = time.perf_counter()
    for i in order:
        t = time.perf_counter()
        text, n_segments = fn(clips[i])
        latencies.append(time.perf_counter() - t)
        if n_segments is not None:
            segments.append(n_segments)
        units.append(text_units(text))
        texts.append(text)
    wall = time.perf_counter() - t0
    audio = sum(len(clips[i]) for i in order) / SR
    return summarize(latencies, wall, audio, units, texts[0], segments, concurrency=1,
                     peak_rss_mb=sampler.peak_mb() if sampler is not None else None, cpu=cpu.stop())


def make_clips(seconds: float, n: int = N_CLIPS) -> list[np.ndarray]:
    """`n` different Mandarin clips of about `seconds` each: sentences with pauses.

    Pauses are short (0.3-1.0 s, inside one VAD segment) or, 40 % of the time, 1.5-2 s (FunASR's
    FSMN-VAD ends a segment after about 1.3 s of silence), so a clip holds a few VAD segments.
    """
    clips = []
    for k in range(n):
        rng = random.Random(1000 + k)
        speed, pitch = rng.choice([150, 160, 170, 180]), rng.choice([40, 50, 60])
        parts, length = [np.zeros(int(0.3 * SR), np.float32)], int(0.3 * SR)
        sentences = []
        while length < seconds * SR:
            if not sentences:
                sentences = SENTENCES[:]
                rng.shuffle(sentences)
            speech = espeak(sentences.pop(), speed=speed, pitch=pitch)
            pause_s = rng.uniform(1.5, 2.0) if rng.random() < 0.4 else rng.uniform(0.3, 1.0)
            pause = np.zeros(int(pause_s * SR), np.float32)
            parts += [speech, pause]
            length += len(speech) + len(pause)
        clips.append(np.concatenate(parts).astype(np.float32))
    return clips


def _load_clips(spec: dict) -> list[np.ndarray]:
    return [np.load(p) for p in spec["clips"]]


def load_automodel(dirs: dict):
    """FunASR AutoModel (PyTorch fp32, THREADS torch threads) with vad_model + punc_model."""
    import torch

    torch.set_num_threads(THREADS)
    from funasr import AutoModel

    # ncpu: AutoModel (and every generate()) calls torch.set_num_threads(ncpu), default 4
    model = AutoModel(model=dirs["asr"], vad_model=dirs["vad"], punc_model=dirs["punc"], disable_update=True,
                      device="cpu", ncpu=THREADS, disable_pbar=True, disable_log=True)
    torch.set_num_threads(THREADS)
    return model


def load_funasr_onnx(onnx_dir: Path) -> tuple:
    """funasr_onnx's Fsmn_vad, SeacoParaformer and CT_Transformer, THREADS intra-op threads each."""
    from funasr_onnx import CT_Transformer, Fsmn_vad, SeacoParaformer

    return (Fsmn_vad(str(onnx_dir / "vad"), intra_op_num_threads=THREADS),
            SeacoParaformer(str(onnx_dir / "asr"), intra_op_num_threads=THREADS),
            CT_Transformer(str(onnx_dir / "punc"), intra_op_num_threads=THREADS))


def funasr_onnx_transcribe(models: tuple, wav: np.ndarray) -> tuple[str, int]:
    """VAD -> SeACo-Paraformer per segment -> punctuation of the joined text: (text, VAD segments)."""
    vad, asr, punc = models
    segments = vad(wav)[0]
    texts = []
    for beg, end in segments:
        seg = wav[beg * 16: end * 16]
        if len(seg) < 480:  # as the served pipeline: too short for one LFR window
            continue
        res = asr(seg, "")  # SeACo without hotwords (funasr's export always runs the bias branch)
        if res and res[0].get("preds"):
            texts.append(res[0]["preds"] if isinstance(res[0]["preds"], str) else "".join(res[0]["preds"]))
    joined = " ".join(t for t in texts if t)
    return (punc(joined)[0] if joined.strip() else ""), len(segments)


def run_worker(name: str, spec: dict, timeout_s: float = 3600) -> dict:
    spec_path, out_path = BENCH / f"{name}.spec.json", BENCH / f"{name}.out.json"
    spec_path.write_text(json.dumps(spec, ensure_ascii=False))
    out_path.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tools"), str(ROOT / "export"), str(ROOT / "frontend"),
                                                      env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run([sys.executable, "-m", "funasr_triton_tools.bench_workers", name, str(spec_path), str(out_path)],
                          env=env, cwd=ROOT, timeout=timeout_s)
    if out_path.exists():
        return json.loads(out_path.read_text())
    return {"error": f"worker {name} exited with code {proc.returncode} and wrote no result"}


def write_results(result: dict, output_dir: str | Path, started: datetime.datetime) -> Path:
    """<output_dir>/<started, UTC>.json (a relative output_dir is below the working directory), written whole."""
    out_dir = Path(output_dir)
    if not out_dir.is_absolute():
        out_dir = Path.cwd() / out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=2))
    tmp.replace(out_path)
    return out_path


@contextlib.contextmanager
def bench_triton(profile: str, models: Iterable[str], log_file: Path, out: dict) -> Iterator[tuple[str, RssSampler]]:
    """An embedded Triton on the bench repository that loads only `models` (explicit model control), logging to
    `log_file`. Yields (gRPC url, RSS sampler of its process tree) once ready, after recording `log`, `load_s`
    and `triton_version` in `out`; stopped on exit."""
    grpc_port, metrics_port, http_port = free_ports(3)
    url = f"127.0.0.1:{grpc_port}"
    log_file.unlink(missing_ok=True)
    load = ("--model-control-mode=explicit", *(f"--load-model={m}" for m in models))
    server = EmbeddedTriton(TritonOptions(REPO, profile, grpc_port, metrics_port, http_port, extra_args=load),
                            cache=CACHE, log_file=log_file)
    out["log"] = str(log_file.relative_to(ROOT))
    t0 = time.monotonic()
    server.start()
    sampler = None
    try:
        server.wait_ready(timeout_s=600)
        out["load_s"] = round(time.monotonic() - t0, 1)
        meta = grpcclient.InferenceServerClient(url=url)
        out["triton_version"] = meta.get_server_metadata(as_json=True).get("version")
        meta.close()
        sampler = RssSampler(server.proc.pid, tree=True).start()
        yield url, sampler
    finally:
        if sampler is not None:
            sampler.stop()
        server.stop()


def _model_counts(url: str, model: str) -> tuple[int, int]:
    c = grpcclient.InferenceServerClient(url=url)
    try:
        stats = c.get_inference_statistics(model_name=model, as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))
    finally:
        c.close()


def served_settings(profile: str, models: tuple[str, ...] = ("pipeline", "vad", "feature_extractor", "paraformer",
                                                              "asr_decode", "punc")) -> dict:
    """intra_op_threads / instance count per model as the profile's config files say."""
    import re

    out = {}
    for model in models:
        cfg = REPO / model / "configs" / f"{profile}.pbtxt"
        if not cfg.exists():
            cfg = REPO / model / "config.pbtxt"
        if not cfg.exists():
            continue
        text = cfg.read_text()
        threads = re.search(r'key:\s*"intra_op_threads",?\s*value:\s*{\s*string_value:\s*"(\d+)"', text)
        count = re.search(r"instance_group\s*\[\s*{\s*count:\s*(\d+)", text)
        out[model] = {"intra_op_threads": int(threads.group(1)) if threads else None,
                      "instances": int(count.group(1)) if count else None}
    return out


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info(start: dict | None = None) -> dict:
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    # the bench's own outputs (results, docs/benchmark.md) written by an earlier part of the same run do not
    # make the measured tree dirty
    outputs = (":(exclude)bench/results", ":(exclude)docs/benchmark.md")
    status = _git("status", "--porcelain", "--", ".", *outputs)
    info = {
        "cpu": cpu, "logical_cores": os.cpu_count(), "usable_cores": usable, "ram_gib": ram,
        "platform": platform.platform(), "python": platform.python_version(),
        "versions": {name: _version(dist) for name, dist in (
            ("onnxruntime", "onnxruntime"), ("torch", "torch"), ("funasr", "funasr"), ("funasr_onnx", "funasr-onnx"),
            ("nvidia_pytriton", "nvidia-pytriton"), ("tritonclient", "tritonclient"), ("numpy", "numpy"),
            ("psutil", "psutil"))},
        "espeak_ng": espeak.split(":")[0].strip() or None,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }
    if start is not None:  # the run measured the tree of its start: dirty if it was then, or changed since
        changed = start.get("git_commit") != info["git_commit"] and _git(
            "diff", "--name-only", str(start.get("git_commit")), "HEAD", "--", ".", *outputs) != ""
        info["git_commit"] = start.get("git_commit")
        info["git_dirty"] = None if start.get("git_dirty") is None or info["git_dirty"] is None else (
            start["git_dirty"] or info["git_dirty"] or changed)
    return info


def _settings_text(settings: dict) -> str:
    parts = []
    for model, s in settings.items():
        bits = []
        if s.get("instances"):
            bits.append(f"{s['instances']} instance{'s' if s['instances'] != 1 else ''}")
        if s.get("intra_op_threads") is not None:
            bits.append(f"{s['intra_op_threads']} intra-op thread{'s' if s['intra_op_threads'] != 1 else ''}")
        if bits:
            parts.append(f"`{model}` {', '.join(bits)}")
    return "; ".join(parts) or "?"


def other_load_text(measurements: list[dict], cores: int | None) -> str:
    """One sentence on CPU used by processes outside the bench during the given measurements."""
    loads = [m["cpu"]["other_cores"] for m in measurements if isinstance(m, dict) and m.get("cpu")]
    if not loads:
        return ""
    worst, mean = max(loads), sum(loads) / len(loads)
    if worst <= 0.25 and mean <= 0.1:
        return (f"Processes outside the bench used {mean:.2f} core on average, at most {worst:.2f}, during these "
                "measurements: the machine was otherwise about idle.")
    return (f"**Shared machine:** processes outside the bench (other jobs on this VM) kept on average {mean:.2f} "
            f"and at worst {worst:.2f} of the {cores or '?'} cores busy during these measurements (`cpu.other_cores` "
            "per measurement in the JSON): every runtime ran slower than on an idle machine, and unevenly, so "
            "read ratios with that noise in mind.")


def _fmt(v, spec: str = "") -> str:
    return "—" if v is None else format(v, spec)

