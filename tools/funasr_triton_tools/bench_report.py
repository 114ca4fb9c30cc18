"""docs/benchmark.md from one `funasr-triton bench` result: the offline tables and ratios, the streaming and
long-file sections (rendered by their modules), the machine and the caveats.
"""
from __future__ import annotations

from pathlib import Path

from . import bench_longfile, bench_streaming
from .bench_common import THREADS, WARMUP, _fmt, _settings_text, other_load_text


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
