"""`funasr-triton bench` (`make bench`): the served pipeline against FunASR AutoModel and funasr-onnx.

One run, same weights, same audio, three runtimes:

  served       the Triton `pipeline` model (VAD -> SeACo-Paraformer -> punctuation) through
               TritonAsrClient.transcribe, per profile (cpu = fp32, cpu-int8), at each concurrency
  automodel    FunASR AutoModel (PyTorch fp32) with vad_model + punc_model, 2 torch threads,
               requests one after another (per-segment and default batch_size_s=300)
  funasr-onnx  funasr_onnx Fsmn_vad -> SeacoParaformer (funasr's own ONNX export of the same
               checkpoint) per segment -> CT_Transformer, 2 intra-op threads, sequential

Weights: `--source test-large` (random weights with the real Paraformer-large sizes, the real
FSMN-VAD, a tiny CT-Transformer), exported once into .cache/bench/model_repository and reused
while its MANIFEST.json says the asr stage came from test:paraformer-large. Audio: espeak-ng
Mandarin clips with short pauses. Baselines run in child processes (`python -m
funasr_triton_tools.bench_workers <worker> spec.json out.json`) so their peak RSS is their own.

After the offline measurements, bench_streaming.py measures real-time streaming on the same
repository (`streaming_asr`, test-large streaming Paraformer): N simulated live streams against the
served model, and FunASR AutoModel / funasr-onnx streaming on the same weights (`--streams 0`
skips it; `--skip-offline` runs only the streaming part, for quick iteration).

Writes bench/results/<UTC timestamp>.json and regenerates docs/benchmark.md. Progress: one line
per measurement on stderr. Targets from the issue are reported, not asserted.

This module is the run's outline (options, models, audio, measurements, results); the steps live in
  bench_prepare.py    the test-large repository and funasr_onnx's directories
  bench_offline.py    served pipeline and the sequential baselines; ratios against the targets
  bench_streaming.py  real-time streaming;  bench_longfile.py  long uploads (--long, --long-only)
  bench_report.py     docs/benchmark.md;    bench_workers.py   the child processes' entry point
What they share (paths, CPU/RSS meters, clips, summaries, worker spawning, the baselines' loaders, machine
info) is in bench_common.py, which imports none of them.
"""
from __future__ import annotations

import datetime
import os
import sys
import time
from typing import NamedTuple

import numpy as np

from . import bench_longfile, bench_streaming
from .bench_common import (AUDIO_DIR, BENCH, DOC, ONNX_DIR, REPO, ROOT, SR, WARMUP, machine_info, make_clips, progress,
                           write_results)
from .bench_offline import compute_ratios, run_offline
from .bench_prepare import SOURCE, prepare_models
from .bench_report import render_markdown


class Plan(NamedTuple):
    """What one run measures, from the command line."""
    profiles: list[str]
    concurrencies: list[int]
    requests: int
    stream_counts: list[int]  # real-time streams per streaming measurement, none: streaming skipped
    skip_offline: bool


class Audio(NamedTuple):
    clips: list[np.ndarray]
    paths: list[str]  # the clips saved as .npy for the child processes
    order: list[int]  # clip of each request
    seconds: float  # audio per measurement


def plan(args) -> Plan | str:
    """The run's plan, or the error message for options that leave nothing (sensible) to measure."""
    concurrencies = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    profiles = [p.strip() for p in str(args.profiles).split(",") if p.strip()]
    try:
        stream_counts = [int(n) for n in str(getattr(args, "streams", "0") or "0").split(",") if n.strip()]
    except ValueError:
        stream_counts = [-1]
    stream_counts = [n for n in stream_counts if n != 0]
    p = Plan(profiles, concurrencies, int(args.requests), stream_counts, bool(getattr(args, "skip_offline", False)))
    if p.requests < 1 or not concurrencies or min(concurrencies) < 1 or min(stream_counts, default=0) < 0:
        return "--requests and every --concurrency must be >= 1, --streams a list of counts >= 0"
    if p.skip_offline and not stream_counts:
        return "--skip-offline with --streams 0 leaves nothing to measure"
    return p


def _describe(p: Plan, audio_seconds: float, load_at_start: list[float]) -> str:
    return (f"machine: {os.cpu_count()} cores; "
            + ("offline skipped" if p.skip_offline else f"profiles {p.profiles}, concurrency {p.concurrencies}, "
               f"{p.requests} requests of ~{audio_seconds:.0f} s per measurement")
            + (f"; real-time streams {p.stream_counts}" if p.stream_counts else "; streaming skipped")
            + f"; load average {load_at_start}")


def make_audio(seconds: float, requests: int) -> Audio:
    """espeak-ng clips of about `seconds` each, saved for the workers; requests cycle through them."""
    t0 = time.monotonic()
    clips = make_clips(seconds)
    AUDIO_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, clip in enumerate(clips):
        path = AUDIO_DIR / f"clip{k}.npy"
        np.save(path, clip)
        paths.append(str(path))
    order = [i % len(clips) for i in range(requests)]
    audio = Audio(clips, paths, order, sum(len(clips[i]) for i in order) / SR)
    progress(f"audio: {len(clips)} clips ({', '.join(f'{len(c) / SR:.1f}' for c in clips)} s) in "
             f"{time.monotonic() - t0:.1f} s; {audio.seconds:.0f} s of audio per measurement")
    return audio


def measure(p: Plan, audio: Audio, prep: dict, args) -> dict:
    """Offline (whole files), then real-time streaming, then (--long) long uploads."""
    served, automodel, funasr_onnx = ({}, {}, {}) if p.skip_offline else run_offline(
        p.profiles, p.concurrencies, audio.clips, audio.paths, audio.order, prep["source_dirs"])
    streaming = (bench_streaming.run_streaming(audio.clips, audio.paths, prep["source_dirs"], ONNX_DIR, p.stream_counts)
                 if p.stream_counts else None)
    long = bench_longfile.run_long(prep, args) if getattr(args, "long", False) else None
    return {"served": served, "automodel": automodel, "funasr_onnx": funasr_onnx, "streaming": streaming, "long": long}


def write_report(result: dict, output_dir: str, started: datetime.datetime) -> None:
    """bench/results/<started>.json and docs/benchmark.md; the ratios on stderr."""
    out_path = write_results(result, output_dir, started)
    try:
        json_rel = str(out_path.relative_to(ROOT))
    except ValueError:
        json_rel = str(out_path)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    doc = render_markdown(result, json_rel)
    if not result.get("long") and DOC.exists():  # the long-file section of the last `bench --long-only` stays
        doc = bench_longfile.carry_section(doc, DOC.read_text(encoding="utf-8"))
    DOC.write_text(doc, encoding="utf-8")
    for key, r in result["ratios"].items():
        if "error" in r:
            progress(f"ratio {key}: n/a ({r['error']})")
        else:
            progress(f"ratio {key}: {r['at_best_concurrency']:.2f}x at c={r['best_concurrency']}, "
                     f"{r.get('at_concurrency_1', float('nan')):.2f}x at c=1 (target >= {r['target']}x)")
    progress(f"wrote {out_path} and {DOC} in {result['total_s'] / 60:.1f} min")


def main(args) -> int:
    t_total = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    machine = machine_info()  # the tree measured is the one at the start (machine_info(start=...) at the end)
    p = plan(args)
    if isinstance(p, str):
        print(f"error: {p}", file=sys.stderr)
        return 2
    BENCH.mkdir(parents=True, exist_ok=True)
    progress(_describe(p, args.audio_seconds, load_at_start))

    prep = prepare_models()
    if "error" in prep:
        print(f"error: preparing the models failed: {prep['error']}\n{prep.get('traceback', '')}", file=sys.stderr)
        return 1
    if getattr(args, "long_only", False):
        return bench_longfile.main_long_only(args, prep, started, load_at_start, machine)

    audio = make_audio(args.audio_seconds, p.requests)
    measured = measure(p, audio, prep, args)
    result = {
        "format": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "args": {"concurrency": p.concurrencies, "profiles": p.profiles, "audio_seconds": args.audio_seconds,
                 "requests": p.requests, "streams": p.stream_counts, "skip_offline": p.skip_offline},
        "machine": {**machine_info(start=machine), "loadavg_at_start": load_at_start},
        "models": {"source": SOURCE, "repository": str(REPO.relative_to(ROOT)),
                   **{k: v for k, v in prep.items() if k != "ru_maxrss_mb"}},
        "audio": {"clip_seconds": [round(len(c) / SR, 2) for c in audio.clips], "order": audio.order,
                  "audio_s_per_measurement": round(audio.seconds, 2), "warmup_requests": WARMUP},
        **measured,
    }
    result["ratios"] = {} if p.skip_offline else compute_ratios(
        measured["served"], measured["automodel"], measured["funasr_onnx"])
    result["total_s"] = round(time.monotonic() - t_total, 1)
    write_report(result, args.output_dir, started)
    return 0
