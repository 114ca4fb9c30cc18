"""Offline (whole-file) part of `funasr-triton bench`: the served `pipeline` per profile and concurrency, and
the sequential baselines (FunASR AutoModel, funasr-onnx) in child processes on the same clips; the ratios
against the issue's targets.
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from funasr_triton.triton_client import TranscribeOptions, TritonAsrClient

from .bench_common import (BENCH, ONNX_DIR, SR, WARMUP, CpuMeter, RssSampler, _load_clips, _model_counts, bench_triton,
                           describe, error_text, funasr_onnx_transcribe, load_automodel, load_funasr_onnx, progress,
                           run_sequential, run_worker, served_settings, summarize, text_units)

# models the offline measurements load (explicit model control: streaming_asr stays unloaded)
OFFLINE_MODELS = ["pipeline", "vad", "asr", "feature_extractor", "paraformer", "asr_decode", "punc"]
# issue targets (throughput ratios); reported, never asserted
TARGETS = {
    "served_fp32_vs_automodel": 1.2,
    "served_fp32_vs_funasr_onnx": 0.95,
    "served_int8_vs_automodel": 2.0,
}


# --------------------------------------------------------------------------------------------
# baseline workers (child processes)


def bench_automodel(spec: dict) -> dict:
    import torch

    clips, order = _load_clips(spec), spec["order"]
    t0 = time.monotonic()
    model = load_automodel(spec["source_dirs"])
    load_s = time.monotonic() - t0
    sampler = RssSampler(os.getpid()).start()
    out = {"load_s": round(load_s, 1), "torch_threads": torch.get_num_threads(), "modes": {}}
    modes = {"batch_size_s=1": {"batch_size_s": 1}, "batch_size_s=300 (default)": {"batch_size_s": 300}}
    for mode, kwargs in modes.items():
        def run(wav, kwargs=kwargs):
            return model.generate(input=wav, disable_pbar=True, **kwargs)[0]["text"], None
        try:
            for i in order[:WARMUP]:
                run(clips[i])
            m = run_sequential(run, clips, order, sampler)
            m["torch_threads"] = torch.get_num_threads()
            progress(f"automodel {mode}: {describe(m)}")
            out["modes"][mode] = m
        except Exception as e:  # noqa: BLE001 - reported in the results
            progress(f"automodel {mode}: FAILED {error_text(e)}")
            out["modes"][mode] = {"error": error_text(e), "traceback": traceback.format_exc()[-3000:]}
    sampler.stop()
    return out


def bench_funasr_onnx(spec: dict) -> dict:
    onnx_dir = Path(spec["onnx_dir"])
    clips, order = _load_clips(spec), spec["order"]
    out: dict = {"modes": {}}
    try:
        t0 = time.monotonic()
        models = load_funasr_onnx(onnx_dir)
        out["load_s"] = round(time.monotonic() - t0, 1)
        out["classes"] = ["Fsmn_vad", "SeacoParaformer", "CT_Transformer"]
    except Exception as e:  # noqa: BLE001
        progress(f"funasr-onnx: FAILED to load {error_text(e)}")
        out["error"] = error_text(e)
        out["traceback"] = traceback.format_exc()[-3000:]
        return out

    def run(wav: np.ndarray) -> tuple[str, int]:
        return funasr_onnx_transcribe(models, wav)

    sampler = RssSampler(os.getpid()).start()
    mode = "per-segment (batch_size=1)"
    try:
        for i in order[:WARMUP]:
            run(clips[i])
        m = run_sequential(run, clips, order, sampler)
        progress(f"funasr-onnx {mode}: {describe(m)}")
        out["modes"][mode] = m
    except Exception as e:  # noqa: BLE001
        progress(f"funasr-onnx {mode}: FAILED {error_text(e)}")
        out["modes"][mode] = {"error": error_text(e), "traceback": traceback.format_exc()[-3000:]}
    sampler.stop()
    return out


WORKERS = {"automodel": bench_automodel, "funasr-onnx": bench_funasr_onnx}


# --------------------------------------------------------------------------------------------
# served pipeline


class _Transcriber:
    """transcribe(i) -> (latency s, text units, text, VAD segments) for clip i, callable from any thread (one
    TritonAsrClient per thread); the clients are closed on exit."""

    def __init__(self, url: str, clips: list[np.ndarray]):
        self.url, self.clips = url, clips
        self.options = TranscribeOptions(hotwords=[], punctuation=True, timestamps=True)
        self.local = threading.local()
        self.clients: list[TritonAsrClient] = []
        self.lock = threading.Lock()

    def __enter__(self) -> "_Transcriber":
        return self

    def __exit__(self, *exc) -> None:
        for client in self.clients:
            client.close()

    def __call__(self, i: int) -> tuple[float, int, str, int]:
        if not hasattr(self.local, "client"):
            self.local.client = TritonAsrClient(self.url, timeout_s=600)
            with self.lock:
                self.clients.append(self.local.client)
        t = time.perf_counter()
        result = self.local.client.transcribe(self.clips[i], self.options)
        text = result.get("text", "")
        return time.perf_counter() - t, text_units(text), text, len(result.get("vad_segments", []))


def _at_concurrency(url: str, sampler: RssSampler, transcribe: _Transcriber, order: list[int], c: int,
                    profile: str) -> dict:
    """Every request of `order` through `c` threads: latencies, throughput, RSS, CPU, Paraformer batching."""
    try:
        before = _model_counts(url, "paraformer")
        sampler.reset()
        cpu = CpuMeter()
        t_start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=c) as pool:
            results = list(pool.map(transcribe, order))
        wall = time.perf_counter() - t_start
        after = _model_counts(url, "paraformer")
        inferences, executions = after[0] - before[0], after[1] - before[1]
        m = summarize([r[0] for r in results], wall, sum(len(transcribe.clips[i]) for i in order) / SR,
                      [r[1] for r in results], results[0][2], [r[3] for r in results], concurrency=c,
                      peak_rss_mb=sampler.peak_mb(), paraformer_segments=inferences, paraformer_executions=executions,
                      paraformer_mean_batch=round(inferences / executions, 2) if executions else None,
                      cpu=cpu.stop())
        progress(f"served {profile} c={c}: {describe(m)}, paraformer batch {m['paraformer_mean_batch']}")
    except Exception as e:  # noqa: BLE001
        m = {"concurrency": c, "error": f"{type(e).__name__}: {getattr(e, 'message', e)}"[:2000]}
        progress(f"served {profile} c={c}: FAILED {m['error']}")
    return m


def bench_served(profile: str, clips: list[np.ndarray], order: list[int], concurrencies: list[int]) -> dict:
    """The served `pipeline` on one profile: warm-up, then every request of `order` at each concurrency."""
    log_file = BENCH / f"triton-{profile}.log"
    out: dict = {"profile": profile, "settings": served_settings(profile), "concurrency": {}}
    try:
        with bench_triton(profile, OFFLINE_MODELS, log_file, out) as (url, sampler), _Transcriber(url, clips) as transcribe:
            for i in order[:WARMUP]:
                transcribe(i)
            out["load_rss_mb"] = sampler.peak_mb()
            for c in concurrencies:
                out["concurrency"][str(c)] = _at_concurrency(url, sampler, transcribe, order, c, profile)
    except Exception as e:  # noqa: BLE001
        out["error"] = error_text(e)
        progress(f"served {profile}: FAILED {out['error']} (log: {log_file})")
    return out


def run_offline(profiles: list[str], concurrencies: list[int], clips: list[np.ndarray], clip_paths: list[str],
                order: list[int], source_dirs: dict) -> tuple[dict, dict, dict]:
    """(served per profile, AutoModel, funasr-onnx) on the same clips in the same order."""
    served = {p: bench_served(p, clips, order, concurrencies) for p in profiles}
    spec = {"clips": clip_paths, "order": order, "source_dirs": source_dirs, "onnx_dir": str(ONNX_DIR)}
    baselines = []
    for name, what in (("automodel", "PyTorch fp32, ncpu=2"),
                       ("funasr-onnx", "Fsmn_vad, SeacoParaformer, CT_Transformer; 2 intra-op threads")):
        progress(f"{name}: loading ({what})")
        result = run_worker(name, spec)
        if "error" in result and not result.get("modes"):
            progress(f"{name}: FAILED {result['error']}")
        baselines.append(result)
    return served, baselines[0], baselines[1]


# --------------------------------------------------------------------------------------------
# ratios


def _best(measurements: dict) -> dict | None:
    ok = [m for m in measurements.values() if "throughput_x" in m]
    return max(ok, key=lambda m: m["throughput_x"]) if ok else None


def compute_ratios(served: dict, automodel: dict, funasr_onnx: dict) -> dict:
    auto_best = _best(automodel.get("modes", {}))
    onnx_best = _best(funasr_onnx.get("modes", {}))
    out = {}
    for key, profile, base, base_name in (
        ("served_fp32_vs_automodel", "cpu", auto_best, "automodel"),
        ("served_fp32_vs_funasr_onnx", "cpu", onnx_best, "funasr-onnx"),
        ("served_int8_vs_automodel", "cpu-int8", auto_best, "automodel"),
    ):
        entry: dict = {"target": TARGETS[key], "served_profile": profile, "baseline": base_name}
        runs = served.get(profile, {}).get("concurrency", {})
        best, c1 = _best(runs), runs.get("1")
        if base is None or best is None:
            entry["error"] = "missing measurement (see errors above)"
        else:
            entry["baseline_throughput_x"] = base["throughput_x"]
            entry["best_concurrency"] = best["concurrency"]
            entry["at_best_concurrency"] = round(best["throughput_x"] / base["throughput_x"], 2)
            entry["meets_target_at_best"] = entry["at_best_concurrency"] >= TARGETS[key]
            if c1 and "throughput_x" in c1:
                entry["at_concurrency_1"] = round(c1["throughput_x"] / base["throughput_x"], 2)
                entry["meets_target_at_1"] = entry["at_concurrency_1"] >= TARGETS[key]
        out[key] = entry
    return out
