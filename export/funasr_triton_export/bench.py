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
funasr_triton_export.bench <worker> spec.json out.json`) so their peak RSS is their own.

After the offline measurements, bench_streaming.py measures real-time streaming on the same
repository (`streaming_asr`, test-large streaming Paraformer): N simulated live streams against the
served model, and FunASR AutoModel / funasr-onnx streaming on the same weights (`--streams 0`
skips it; `--skip-offline` runs only the streaming part, for quick iteration).

Writes bench/results/<UTC timestamp>.json and regenerates docs/benchmark.md. Progress: one line
per measurement on stderr. Targets from the issue are reported, not asserted.

What the bench modules share (paths, CPU/RSS meters, clips, summaries, worker spawning, the baselines'
loaders, machine info) is in bench_common.py, which imports none of them.
"""
from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from funasr_triton.server import free_ports

from . import bench_longfile, bench_streaming
from .bench_common import (AUDIO_DIR, BENCH, CACHE, DOC, ONNX_DIR, REPO, ROOT, SR, THREADS, WARMUP, CpuMeter, RssSampler,
                           _fmt, _load_clips, _model_counts, _settings_text, describe, error_text, funasr_onnx_transcribe,
                           load_automodel, load_funasr_onnx, machine_info, make_clips, other_load_text, progress,
                           run_sequential, run_worker, served_settings, summarize, text_units)
from .repository import STAGE_GRAPH_OUTPUTS
from .templates import write_repository

SOURCE = "test-large"
ASR_ORIGIN = "test:paraformer-large"
STREAMING_ORIGIN = "test:paraformer_streaming-large"
STAGES = ["vad", "asr", "punc", "streaming"]
# models the offline measurements load (explicit model control: streaming_asr stays unloaded)
OFFLINE_MODELS = ["pipeline", "vad", "asr", "feature_extractor", "paraformer", "asr_decode", "punc"]
# issue targets (throughput ratios); reported, never asserted
TARGETS = {
    "served_fp32_vs_automodel": 1.2,
    "served_fp32_vs_funasr_onnx": 0.95,
    "served_int8_vs_automodel": 2.0,
}


# --------------------------------------------------------------------------------------------
# model repository and funasr_onnx directories


def _stages_to_export(repo: Path) -> list[str]:
    """The STAGES whose exported files are missing or not test-large (the rest are reused)."""
    manifest = repo / "MANIFEST.json"
    try:
        stages = json.loads(manifest.read_text())["stages"] if manifest.exists() else {}
    except (ValueError, KeyError):
        stages = {}
    ok = {
        "vad": (repo / "vad" / "1" / "model.onnx").exists()
        and (repo / "streaming_asr" / "1" / "vad" / "model.onnx").exists(),
        "asr": stages.get("asr", {}).get("origin") == ASR_ORIGIN
        and (repo / "paraformer" / "1" / "model_quant.onnx").exists(),
        "punc": (repo / "punc" / "1" / "model.onnx").exists(),
        "streaming": stages.get("streaming", {}).get("origin") == STREAMING_ORIGIN
        and (repo / "streaming_asr" / "1" / "paraformer" / "encoder_quant.onnx").exists(),
    }
    # an export from before a graph gained outputs (token_logprobs) is stale, as for `funasr-triton export`
    current = {s: stages.get(s, {}).get("graph_outputs") == STAGE_GRAPH_OUTPUTS[s] for s in STAGE_GRAPH_OUTPUTS}
    return [s for s in STAGES if not (s in stages and stages[s].get("quantize") and ok[s] and current.get(s, True))]


def prepare(spec: dict) -> dict:
    """(worker) Export the bench repository and funasr_onnx's directories when missing."""
    from .repository import export_repository
    from .sources import resolve

    repo, onnx_dir, cache_dir = Path(spec["repo"]), Path(spec["onnx_dir"]), Path(spec["cache_dir"])
    out: dict = {}
    missing = _stages_to_export(repo)
    if not missing:
        progress(f"reusing {repo} (MANIFEST.json: asr from {ASR_ORIGIN}, streaming from {STREAMING_ORIGIN})")
    else:
        progress(f"exporting --source {SOURCE} ({', '.join(missing)}, --quantize) into {repo}; takes 1-2 min "
                 "per large stage")
        t0 = time.monotonic()
        sources = resolve(SOURCE, missing, {}, cache_dir)
        export_repository(repo, sources, quantize=True, progress=progress)
        out["export_s"] = round(time.monotonic() - t0, 1)
        out["exported_stages"] = missing
    manifest = json.loads((repo / "MANIFEST.json").read_text())
    src = {s: Path(manifest["stages"][s]["source_dir"]) for s in STAGES}
    asr_stamp = f"{manifest['stages']['asr']['origin']} {manifest['stages']['asr']['files']['paraformer/1/model.onnx']['sha256']}"

    # funasr_onnx wants funasr's own export layout per model: model.onnx (+ model_eb.onnx for
    # SeACo), config.yaml, am.mvn, tokens.json in one directory
    asr = onnx_dir / "asr"
    stamp = asr / "SOURCE"
    if not (asr / "model.onnx").exists() or not (asr / "model_eb.onnx").exists() or \
            not stamp.exists() or stamp.read_text() != asr_stamp:
        progress("exporting the ASR model with funasr's own exporter for funasr_onnx (model.onnx + model_eb.onnx)")
        from funasr import AutoModel

        from .onnx_utils import legacy_onnx_export

        t0 = time.monotonic()
        asr.mkdir(parents=True, exist_ok=True)
        auto = AutoModel(model=str(src["asr"]), disable_update=True, device="cpu", disable_pbar=True, disable_log=True)
        with legacy_onnx_export():
            auto.export(type="onnx", quantize=False, output_dir=str(asr), device="cpu")
        for name in ("config.yaml", "am.mvn", "tokens.json"):
            shutil.copyfile(src["asr"] / name, asr / name)
        stamp.write_text(asr_stamp)
        out["funasr_onnx_export_s"] = round(time.monotonic() - t0, 1)
    vad = onnx_dir / "vad"  # the repository's VAD model.onnx + its hub config.yaml
    vad.mkdir(parents=True, exist_ok=True)
    for s, name in ((repo / "vad" / "1" / "model.onnx", "model.onnx"), (repo / "vad" / "1" / "am.mvn", "am.mvn"),
                    (src["vad"] / "config.yaml", "config.yaml")):
        shutil.copyfile(s, vad / name)
    punc = onnx_dir / "punc"  # the repository's punc dir already has model.onnx, tokens.json, config.yaml
    punc.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "tokens.json", "config.yaml", "jieba_usr_dict"):
        if (repo / "punc" / "1" / name).exists():
            shutil.copyfile(repo / "punc" / "1" / name, punc / name)
    bench_streaming.funasr_onnx_streaming_dir(repo, onnx_dir / "streaming", src["streaming"])
    out["source_dirs"] = {k: str(v) for k, v in src.items()}
    out["origins"] = {s: manifest["stages"][s]["origin"] for s in STAGES}
    out["manifest_written_at"] = manifest["written_at"]
    return out


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


WORKERS = {"prepare": prepare, "automodel": bench_automodel, "funasr-onnx": bench_funasr_onnx}


def _workers() -> dict:
    return {**WORKERS, **bench_streaming.WORKERS, **bench_longfile.WORKERS}


def _quiet_logging() -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[bench:%(name)s] %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]  # funasr's logging.basicConfig() becomes a no-op
    root.setLevel(logging.ERROR)


def worker_main(argv: list[str]) -> int:
    """`python -m funasr_triton_export.bench WORKER SPEC.json OUT.json`."""
    name, spec_path, out_path = argv
    _quiet_logging()
    spec = json.loads(Path(spec_path).read_text())
    try:
        import resource

        with open(os.devnull, "w") as devnull:  # funasr prints banners on stdout
            sys.stdout = devnull
            result = _workers()[name](spec)
            sys.stdout = sys.__stdout__
        result["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except Exception as e:  # noqa: BLE001
        sys.stdout = sys.__stdout__
        result = {"error": error_text(e), "traceback": traceback.format_exc()[-3000:]}
    Path(out_path).write_text(json.dumps(result, ensure_ascii=False, indent=2))
    return 0 if "error" not in result else 1


# --------------------------------------------------------------------------------------------
# served pipeline


def bench_served(profile: str, clips: list[np.ndarray], order: list[int], concurrencies: list[int]) -> dict:
    import tritonclient.grpc as grpcclient

    from funasr_triton.server import EmbeddedTriton, TritonOptions
    from funasr_triton.triton_client import TranscribeOptions, TritonAsrClient

    grpc_port, metrics_port, http_port = free_ports(3)
    url = f"127.0.0.1:{grpc_port}"
    log_file = BENCH / f"triton-{profile}.log"
    log_file.unlink(missing_ok=True)
    load = ("--model-control-mode=explicit", *(f"--load-model={m}" for m in OFFLINE_MODELS))
    server = EmbeddedTriton(TritonOptions(REPO, profile, grpc_port, metrics_port, http_port, extra_args=load),
                            cache=CACHE, log_file=log_file)
    out: dict = {"profile": profile, "log": str(log_file.relative_to(ROOT)), "settings": served_settings(profile),
                 "concurrency": {}}
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
        options = TranscribeOptions(hotwords=[], punctuation=True, timestamps=True)
        local = threading.local()
        clients: list = []
        lock = threading.Lock()

        def transcribe(i: int) -> tuple[float, int, str, int]:
            if not hasattr(local, "client"):
                local.client = TritonAsrClient(url, timeout_s=600)
                with lock:
                    clients.append(local.client)
            t = time.perf_counter()
            result = local.client.transcribe(clips[i], options)
            text = result.get("text", "")
            return time.perf_counter() - t, text_units(text), text, len(result.get("vad_segments", []))

        try:
            for i in order[:WARMUP]:
                transcribe(i)
            out["load_rss_mb"] = sampler.peak_mb()
            for c in concurrencies:
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
                    m = summarize([r[0] for r in results], wall, sum(len(clips[i]) for i in order) / SR,
                                  [r[1] for r in results], results[0][2], [r[3] for r in results], concurrency=c, peak_rss_mb=sampler.peak_mb(),
                                  paraformer_segments=inferences, paraformer_executions=executions,
                                  paraformer_mean_batch=round(inferences / executions, 2) if executions else None,
                                  cpu=cpu.stop())
                    progress(f"served {profile} c={c}: {describe(m)}, paraformer batch {m['paraformer_mean_batch']}")
                except Exception as e:  # noqa: BLE001
                    m = {"concurrency": c, "error": f"{type(e).__name__}: {getattr(e, 'message', e)}"[:2000]}
                    progress(f"served {profile} c={c}: FAILED {m['error']}")
                out["concurrency"][str(c)] = m
        finally:
            for client in clients:
                client.close()
    except Exception as e:  # noqa: BLE001
        out["error"] = error_text(e)
        progress(f"served {profile}: FAILED {out['error']} (log: {log_file})")
    finally:
        if sampler is not None:
            sampler.stop()
        server.stop()
    return out


# --------------------------------------------------------------------------------------------
# results


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


def _rows(result: dict) -> list[tuple]:
    rows = []
    for profile, s in result["served"].items():
        label = {"cpu": "served, profile `cpu` (ORT fp32)", "cpu-int8": "served, profile `cpu-int8` (ORT int8)"}.get(
            profile, f"served, profile `{profile}`")
        if "error" in s and not s.get("concurrency"):
            rows.append((label, "—", s))
        for c, m in s.get("concurrency", {}).items():
            rows.append((label, c, m))
    for name, r in (("FunASR AutoModel (PyTorch fp32)", result["automodel"]),
                    ("funasr-onnx (ORT fp32)", result["funasr_onnx"])):
        if "error" in r and not r.get("modes"):
            rows.append((name, "1", r))
        for mode, m in r.get("modes", {}).items():
            rows.append((f"{name}, {mode}", "1", m))
    return rows


def _noise_text(result: dict) -> str:
    """The two AutoModel modes do identical work on CPU: their spread estimates run-to-run noise."""
    runs = [m["throughput_x"] for m in result["automodel"].get("modes", {}).values() if "throughput_x" in m]
    if len(runs) < 2:
        return ""
    spread = (max(runs) - min(runs)) / min(runs) * 100
    return (f" In this run the two AutoModel rows, which do identical work (see below), differ by "
            f"{spread:.0f} %: read ratio differences of that order as noise.")


def _offline_lines(result: dict) -> tuple[list[str], list[tuple[str, str]]]:
    """Whole-file measurements: results table, batch sizes, start-up, ratios; and their failures."""
    args = result["args"]
    lines = [
        "Same weights (`--source test-large`: random weights at the real SeACo-Paraformer-large sizes, the real "
        "FSMN-VAD, a tiny CT-Transformer), same audio, whole files in (VAD → ASR per segment → punctuation), "
        "no hotwords, punctuation on.",
        f"Audio: {len(result['audio']['clip_seconds'])} espeak-ng Mandarin clips of "
        f"{', '.join(f'{s:.1f}' for s in result['audio']['clip_seconds'])} s (sentences with 0.3–1 s pauses and, "
        f"between some, 1.5–2 s pauses that end a VAD segment); "
        f"{args['requests']} requests per measurement ({result['audio']['audio_s_per_measurement']:.0f} s of audio), "
        f"after {WARMUP} warm-up requests.",
        "",
        "## Results",
        "",
        "Throughput = audio seconds per wall-clock second (× realtime, higher is better); RTF = wall / audio "
        "(lower is better); latency = one request, end to end, as the client sees it.",
        "",
        "| runtime | concurrency | throughput (× realtime) | RTF | latency p50 (s) | latency p95 (s) | peak RSS (MB) "
        "| units/request | VAD segments/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    errors = []
    for label, c, m in _rows(result):
        if "throughput_x" not in m:
            lines.append(f"| {label} | {c} | **failed** (see below) | | | | | | |")
            errors.append((f"{label}, concurrency {c}", m.get("error", "?")))
            continue
        lines.append(f"| {label} | {c} | {m['throughput_x']:.1f} | {m['rtf']:.4f} | {m['latency_p50_s']:.2f} | "
                     f"{m['latency_p95_s']:.2f} | {_fmt(m.get('peak_rss_mb'), '.0f')} | {m['units_per_request']:.0f} | "
                     f"{_fmt(m.get('segments_per_request'), '.1f')} |")
    lines += [
        "",
        "Peak RSS: served = sum over the tritonserver process tree (server + python-backend stubs; shared pages "
        "count once per process) while the measurement ran; baselines = their own child process. "
        "Units/request = recognised characters per request (non-space, non-punctuation): a check that every "
        "runtime decoded about the same amount of text. VAD segments/request: as the served pipeline and "
        "funasr-onnx report them (AutoModel does not expose its segments; its VAD is the served one, see "
        "`funasr-triton verify`).",
        "",
    ]
    served_batches = [(p, c, m.get("paraformer_mean_batch")) for p, s in result["served"].items()
                      for c, m in s.get("concurrency", {}).items() if m.get("paraformer_mean_batch")]
    if served_batches:
        lines.append("Mean Paraformer batch size formed by Triton's dynamic batcher: " + ", ".join(
            f"`{p}` c={c}: {b}" for p, c, b in served_batches) + ".")
        lines.append("")
    loads = [f"Triton `{p}` ready in {s['load_s']:.0f} s" for p, s in result["served"].items() if s.get("load_s")]
    loads += [f"{name} loaded in {r['load_s']:.0f} s" for name, r in (("AutoModel", result["automodel"]),
                                                                       ("funasr-onnx", result["funasr_onnx"]))
              if r.get("load_s") is not None]
    if loads:
        lines += ["Start-up (not in the numbers above): " + ", ".join(loads) + ".", ""]
    measured = [m for s in result["served"].values() for m in s.get("concurrency", {}).values()]
    measured += [m for r in (result["automodel"], result["funasr_onnx"]) for m in r.get("modes", {}).values()]
    load_text = other_load_text(measured, result["machine"].get("usable_cores"))
    if load_text:
        lines += [load_text, ""]
    lines += ["## Ratios vs the issue's targets", "",
              "Throughput of the served pipeline divided by the baseline's (the faster of its modes). "
              "Sequential baselines are compared with the served pipeline at its best concurrency and at "
              "concurrency 1.", "",
              "| comparison | target | at best concurrency | at concurrency 1 |", "|---|---:|---:|---:|"]
    names = {"served_fp32_vs_automodel": "served `cpu` (fp32) vs AutoModel (fp32)",
             "served_fp32_vs_funasr_onnx": "served `cpu` (fp32) vs funasr-onnx (fp32)",
             "served_int8_vs_automodel": "served `cpu-int8` vs AutoModel (fp32)"}
    for key, r in result["ratios"].items():
        if "error" in r:
            lines.append(f"| {names[key]} | ≥ {r['target']}× | n/a ({r['error']}) | n/a |")
            continue
        best = f"{r['at_best_concurrency']:.2f}× (c={r['best_concurrency']}) {'✅' if r['meets_target_at_best'] else '❌'}"
        one = (f"{r['at_concurrency_1']:.2f}× {'✅' if r['meets_target_at_1'] else '❌'}"
               if "at_concurrency_1" in r else "—")
        lines.append(f"| {names[key]} | ≥ {r['target']}× | {best} | {one} |")
    lines += ["", "Targets are reported, not asserted: on this machine they are an observation, not a gate.", ""]
    return lines, errors


def render_markdown(result: dict, json_rel: str) -> str:
    mi, args = result["machine"], result["args"]
    v = mi["versions"]
    skip_offline = bool(args.get("skip_offline"))
    lines = [
        "# Benchmark: served pipeline vs FunASR AutoModel vs funasr-onnx",
        "",
        f"Generated by `make bench` (`funasr-triton bench`) on {result['started_at']}; raw numbers in "
        f"[`{json_rel}`]({json_rel if Path(json_rel).is_absolute() else '../' + json_rel}). "
        "Regenerated on every run: do not edit by hand.",
        "",
    ]
    errors: list[tuple[str, str]] = []
    if skip_offline:
        lines += ["Offline (whole-file) measurements skipped in this run (`--skip-offline`). Audio: "
                  f"{len(result['audio']['clip_seconds'])} espeak-ng Mandarin clips of "
                  f"{', '.join(f'{s:.1f}' for s in result['audio']['clip_seconds'])} s.", ""]
    else:
        offline, errors = _offline_lines(result)
        lines += offline
    if errors:
        lines += ["## Failures", ""]
        for what, err in errors:
            lines.append(f"- {what}: `{err}`")
        lines.append("")
    if result.get("streaming"):
        lines += bench_streaming.render_section(result["streaming"], mi.get("usable_cores"))
    if result.get("long"):
        lines += bench_longfile.render_section(result["long"], cores=mi.get("usable_cores")) + [""]
    triton_version = (result["served"].get("cpu", {}).get("triton_version")
                      or ((result.get("streaming") or {}).get("served") or {}).get("triton_version") or "?")
    lines += [
        "## Machine",
        "",
        f"- CPU: {mi['cpu']}, {mi['usable_cores']} usable cores ({mi['logical_cores']} logical), RAM {mi['ram_gib']} GiB",
        f"- {mi['platform']}, Python {mi['python']}",
        f"- onnxruntime {v.get('onnxruntime')}, torch {v.get('torch')}, funasr {v.get('funasr')}, "
        f"funasr-onnx {v.get('funasr_onnx')}, Triton {triton_version} "
        f"(nvidia-pytriton {v.get('nvidia_pytriton')}), tritonclient {v.get('tritonclient')}, numpy {v.get('numpy')}",
        f"- git commit `{(mi.get('git_commit') or '?')[:12]}`{' (with uncommitted changes)' if mi.get('git_dirty') else ''}",
    ]
    if not skip_offline:
        lines.append(
            f"- threads (offline): served (`cpu` profile) "
            f"{_settings_text(result['served'].get('cpu', {}).get('settings', {}))}; AutoModel `ncpu={THREADS}` "
            f"(torch threads {result['automodel'].get('torch_threads', '?')}); funasr-onnx "
            f"`intra_op_num_threads={THREADS}` for each of its three models")
    lines += [
        f"- load average at the start {', '.join(str(x) for x in mi.get('loadavg_at_start', [])) or '?'}; total bench "
        f"time {result['total_s'] / 60:.1f} min",
        "",
    ]
    if not skip_offline:
        lines += [
            "## How to read the offline numbers / caveats",
            "",
            "- **Ratios matter, absolute times do not.** Everything shares the same few cores (here "
            f"{mi['usable_cores']}) with the client, the server and the RSS sampler, on a VM whose neighbours "
            "are not ours; absolute RTFs move between runs. Compare runtimes within one run." + _noise_text(result),
            "- **Random weights.** The test-large Paraformer has the real sizes (≈220 M parameters, encoder 50 "
            "blocks, decoder 16) so the compute per audio second is realistic, but it emits more tokens than real "
            "speech (≈7–8/s vs 4–5/s), which overstates decoder cost, and its text is gibberish: the units/request "
            "column is a like-for-like check, not an accuracy figure. The punctuation model is tiny, so punctuation "
            "costs almost nothing here (the real 1 GB ct-punc does not).",
            "- **Concurrency on 2 cores.** Concurrency does not add cores: the served pipeline gains from "
            "concurrency only through Triton's dynamic batching of segments and overlap of VAD/features/decoding "
            "with the Paraformer; latency grows with concurrency as requests queue. Segments batched together are "
            "padded to the longest one, so on 2 cores a larger batch can cost more than it saves (compare the "
            "c=4 and c=8 rows with the batch sizes above).",
            "- **AutoModel batching.** funasr 1.4.16 sets `batch_size = 0` in `inference_with_vad` when the device "
            "is `cpu`, so `batch_size_s` has no effect on CPU and both AutoModel rows decode one VAD segment at a "
            "time; their difference is run-to-run noise.",
            "- **funasr-onnx** runs funasr's own SeACo export (`model.onnx` + `model_eb.onnx`), which always applies "
            "the SeACo bias branch (the served graph skips it without hotwords, as AutoModel does) and drops the last "
            "token. Its `Fsmn_vad` also segments differently from AutoModel's (and the served) FSMN-VAD on the "
            "same weights (see the VAD segments column), so it decodes more, shorter segments; with random weights "
            "its text differs from AutoModel's, the amount of text is comparable.",
            "- **int8** is dynamic MatMul quantization of random weights; token counts can differ a little from fp32.",
            "- Served latency includes gRPC and JSON results with timestamps; AutoModel and funasr-onnx are "
            "in-process calls.",
            "",
        ]
    lines += [
        "Reproduce: `make bench` (or `.venv/bin/funasr-triton bench --requests N --concurrency 1,4,8 "
        "--profiles cpu,cpu-int8 --audio-seconds 20 --streams 20`; `--streams 0` skips the streaming part, "
        "`--skip-offline` runs only the streaming part). The first run exports the test-large repository "
        "(offline and streaming models) into `.cache/bench/` (a few minutes); later runs reuse it.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# entry point


def main(args) -> int:
    t_total = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    concurrencies = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    profiles = [p.strip() for p in str(args.profiles).split(",") if p.strip()]
    n_requests = int(args.requests)
    try:
        stream_counts = [int(n) for n in str(getattr(args, "streams", "0") or "0").split(",") if n.strip()]
    except ValueError:
        stream_counts = [-1]
    stream_counts = [n for n in stream_counts if n != 0]
    skip_offline = bool(getattr(args, "skip_offline", False))
    if n_requests < 1 or not concurrencies or min(concurrencies) < 1 or min(stream_counts, default=0) < 0:
        print("error: --requests and every --concurrency must be >= 1, --streams a list of counts >= 0",
              file=sys.stderr)
        return 2
    if skip_offline and not stream_counts:
        print("error: --skip-offline with --streams 0 leaves nothing to measure", file=sys.stderr)
        return 2
    BENCH.mkdir(parents=True, exist_ok=True)
    progress(f"machine: {os.cpu_count()} cores; "
             + ("offline skipped" if skip_offline else f"profiles {profiles}, concurrency {concurrencies}, "
                f"{n_requests} requests of ~{args.audio_seconds:.0f} s per measurement")
             + (f"; real-time streams {stream_counts}" if stream_counts else "; streaming skipped")
             + f"; load average {load_at_start}")

    # 1. repository (templates refreshed, weights exported once) and funasr_onnx directories
    write_repository(REPO)
    prep = run_worker("prepare", {"repo": str(REPO), "onnx_dir": str(ONNX_DIR), "cache_dir": str(CACHE / "models")})
    if "error" in prep:
        print(f"error: preparing the models failed: {prep['error']}\n{prep.get('traceback', '')}", file=sys.stderr)
        return 1
    if (REPO / "speaker_embedding").exists():  # the pipeline never calls it, nothing exports it; Triton would load it
        shutil.rmtree(REPO / "speaker_embedding")
    if getattr(args, "long_only", False):
        return bench_longfile.main_long_only(args, prep, started, load_at_start)

    # 2. audio
    t0 = time.monotonic()
    clips = make_clips(args.audio_seconds)
    AUDIO_DIR.mkdir(parents=True, exist_ok=True)
    clip_paths = []
    for k, clip in enumerate(clips):
        path = AUDIO_DIR / f"clip{k}.npy"
        np.save(path, clip)
        clip_paths.append(str(path))
    order = [i % len(clips) for i in range(n_requests)]
    audio_s = sum(len(clips[i]) for i in order) / SR
    progress(f"audio: {len(clips)} clips ({', '.join(f'{len(c) / SR:.1f}' for c in clips)} s) in "
             f"{time.monotonic() - t0:.1f} s; {audio_s:.0f} s of audio per measurement")

    # 3. measurements: offline (whole files), then real-time streaming
    served: dict = {}
    automodel: dict = {}
    funasr_onnx: dict = {}
    if not skip_offline:
        served = {p: bench_served(p, clips, order, concurrencies) for p in profiles}
        spec = {"clips": clip_paths, "order": order, "source_dirs": prep["source_dirs"], "onnx_dir": str(ONNX_DIR)}
        progress("automodel: loading (PyTorch fp32, ncpu=2)")
        automodel = run_worker("automodel", spec)
        if "error" in automodel and not automodel.get("modes"):
            progress(f"automodel: FAILED {automodel['error']}")
        progress("funasr-onnx: loading (Fsmn_vad, SeacoParaformer, CT_Transformer; 2 intra-op threads)")
        funasr_onnx = run_worker("funasr-onnx", spec)
        if "error" in funasr_onnx and not funasr_onnx.get("modes"):
            progress(f"funasr-onnx: FAILED {funasr_onnx['error']}")
    streaming = None
    if stream_counts:
        streaming = bench_streaming.run_streaming(clips, clip_paths, prep["source_dirs"], ONNX_DIR, stream_counts)
    long = None
    if getattr(args, "long", False):
        long = bench_longfile.run_long(prep, args)

    # 4. results
    result = {
        "format": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "args": {"concurrency": concurrencies, "profiles": profiles, "audio_seconds": args.audio_seconds,
                 "requests": n_requests, "streams": stream_counts, "skip_offline": skip_offline},
        "machine": {**machine_info(), "loadavg_at_start": load_at_start},
        "models": {"source": SOURCE, "repository": str(REPO.relative_to(ROOT)),
                   **{k: v for k, v in prep.items() if k != "ru_maxrss_mb"}},
        "audio": {"clip_seconds": [round(len(c) / SR, 2) for c in clips], "order": order,
                  "audio_s_per_measurement": round(audio_s, 2), "warmup_requests": WARMUP},
        "served": served,
        "automodel": automodel,
        "funasr_onnx": funasr_onnx,
        "streaming": streaming,
        "long": long,
    }
    result["ratios"] = {} if skip_offline else compute_ratios(served, automodel, funasr_onnx)
    result["total_s"] = round(time.monotonic() - t_total, 1)
    out_dir = Path(args.output_dir)
    if not out_dir.is_absolute():
        out_dir = Path.cwd() / out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=2))
    tmp.replace(out_path)
    try:
        json_rel = str(out_path.relative_to(ROOT))
    except ValueError:
        json_rel = str(out_path)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render_markdown(result, json_rel), encoding="utf-8")
    for key, r in result["ratios"].items():
        if "error" in r:
            progress(f"ratio {key}: n/a ({r['error']})")
        else:
            progress(f"ratio {key}: {r['at_best_concurrency']:.2f}x at c={r['best_concurrency']}, "
                     f"{r.get('at_concurrency_1', float('nan')):.2f}x at c=1 (target >= {r['target']}x)")
    progress(f"wrote {out_path} and {DOC} in {result['total_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
