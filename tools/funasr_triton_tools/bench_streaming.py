"""Real-time streaming part of `funasr-triton bench` (`make bench`).

Runs after the offline measurements, on the same prepared repository (.cache/bench/model_repository,
whose `streaming_asr` holds the test-large streaming Paraformer: random weights at the real
paraformer-zh-streaming sizes) and the same clips:

  served       the Triton `streaming_asr` model (profile cpu: streaming VAD + streaming Paraformer
               in-process, 2-pass finals via `asr` and `punc`) through AsyncTritonAsrClient.open_stream
    paced      N simulated live streams, each sending 600 ms of audio every 600 ms of wall time
               (chunk_size [0,10,5]), starts staggered over one chunk period: partial / final latency,
               the longest wait for any chunk, how far behind real time streams fell, errors
    unpaced    the same N streams sending as fast as responses return (2-pass default config, and
               online-only: two_pass and punctuation off, the work AutoModel streaming does)
  automodel    FunASR AutoModel streaming generate(input=chunk, cache=..., is_final=...,
               chunk_size=[0,10,5], encoder/decoder_chunk_look_back=0) over each clip, one after
               another, in a child process (PyTorch fp32, 2 threads): compute per chunk, RTF
  funasr-onnx  funasr_onnx.paraformer_online_bin.Paraformer on our exported encoder/decoder ONNX
               (funasr's own streaming export layout), same chunking, 2 intra-op threads

Ratios: served unpaced throughput / the baseline's throughput (audio seconds per wall second).
"""
from __future__ import annotations

import asyncio
import math
import os
import shutil
import time
import traceback
from pathlib import Path

import numpy as np

from funasr_triton.triton_client import AsyncTritonAsrClient

from .bench_common import (BENCH, SR, THREADS, CpuMeter, RssSampler, _fmt, _load_clips, _model_counts, _settings_text,
                           bench_triton, error_text, other_load_text, progress, run_worker, served_settings, text_units)

CHUNK_SIZE = [0, 10, 5]  # 600 ms chunks, 300 ms look-ahead: FunASR's default
CHUNK = CHUNK_SIZE[1] * 960  # samples per chunk (60 ms per LFR frame)
CHUNK_S = CHUNK / SR
PROFILE = "cpu"
# models the streaming measurement loads: streaming_asr and what its 2-pass finals call
STREAMING_MODELS = ["streaming_asr", "asr", "feature_extractor", "paraformer", "asr_decode", "punc"]
ONLINE_ONLY = {"two_pass": False, "punctuation": False}
PROGRESS_EVERY_S = 5.0
WARMUP_S = 8.0  # seconds of each clip the warm-up streams send


def _chunks(clip: np.ndarray) -> list[np.ndarray]:
    return [clip[i:i + CHUNK] for i in range(0, clip.shape[0], CHUNK)] or [clip[:0]]


def _stats(values: list[float], digits: int = 3) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), digits),
            "p95": round(float(np.percentile(a, 95)), digits), "max": round(float(a.max()), digits),
            "mean": round(float(a.mean()), digits)}


# --------------------------------------------------------------------------------------------
# funasr_onnx directory (written by bench_prepare.prepare)


def funasr_onnx_streaming_dir(repo: Path, target: Path, source_dir: Path) -> None:
    """funasr_onnx's online Paraformer wants model.onnx (encoder) + decoder.onnx + config.yaml + am.mvn +
    tokens.json in one directory: funasr's own streaming export, which is what our exporter writes
    (encoder.onnx is funasr's model.onnx renamed). The ONNX files are linked, the rest copied."""
    exported = repo / "streaming_asr" / "1" / "paraformer"
    target.mkdir(parents=True, exist_ok=True)
    for src, name in ((exported / "encoder.onnx", "model.onnx"), (exported / "decoder.onnx", "decoder.onnx")):
        dst = target / name
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        os.symlink(src.resolve(), dst)
    for name in ("config.yaml", "am.mvn", "tokens.json"):
        shutil.copyfile(source_dir / name, target / name)


# --------------------------------------------------------------------------------------------
# baseline workers (child processes, `python -m funasr_triton_tools.bench_workers <worker> spec out`)


def _run_baseline(decode_clip, clips: list[np.ndarray], sampler: RssSampler) -> dict:
    """decode_clip(clip) -> (per-chunk seconds, text). Clips one after another; compute = sum of calls."""
    decode_clip(clips[0][:int(WARMUP_S * SR)])
    sampler.reset()
    cpu = CpuMeter()
    chunk_s: list[float] = []
    units = 0
    texts = []
    t0 = time.perf_counter()
    for clip in clips:
        times, text = decode_clip(clip)
        chunk_s += times
        units += text_units(text)
        texts.append(text)
    wall = time.perf_counter() - t0
    audio = sum(c.shape[0] for c in clips) / SR
    compute = sum(chunk_s)
    return {"clips": len(clips), "chunks": len(chunk_s), "audio_s": round(audio, 2), "compute_s": round(compute, 3),
            "wall_s": round(wall, 3), "throughput_x": round(audio / compute, 2), "rtf": round(compute / audio, 4),
            "chunk_compute_ms": {k: (round(v * 1000, 1) if k != "n" else v) for k, v in _stats(chunk_s, 6).items()},
            "units": units, "peak_rss_mb": sampler.peak_mb(), "cpu": cpu.stop(), "sample_text": texts[0][:160]}


def bench_automodel_streaming(spec: dict) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    from funasr import AutoModel

    clips = _load_clips(spec)
    t0 = time.monotonic()
    model = AutoModel(model=spec["streaming_dir"], disable_update=True, device="cpu", ncpu=THREADS,
                      disable_pbar=True, disable_log=True)
    torch.set_num_threads(THREADS)
    out: dict = {"load_s": round(time.monotonic() - t0, 1)}

    def decode_clip(clip: np.ndarray) -> tuple[list[float], str]:
        cache: dict = {}
        pieces = _chunks(clip)
        times, text = [], ""
        for i, piece in enumerate(pieces):
            t = time.perf_counter()
            res = model.generate(input=piece, cache=cache, is_final=i == len(pieces) - 1, chunk_size=CHUNK_SIZE,
                                 encoder_chunk_look_back=0, decoder_chunk_look_back=0, disable_pbar=True)
            times.append(time.perf_counter() - t)
            text += "".join(r.get("text", "") for r in res)
        return times, text

    sampler = RssSampler(os.getpid()).start()
    try:
        out.update(_run_baseline(decode_clip, clips, sampler))
        out["torch_threads"] = torch.get_num_threads()
        progress(f"streaming automodel: {_describe_baseline(out)}")
    except Exception as e:  # noqa: BLE001 - reported in the results
        out.update(error=error_text(e), traceback=traceback.format_exc()[-3000:])
        progress(f"streaming automodel: FAILED {out['error']}")
    sampler.stop()
    return out


def bench_funasr_onnx_streaming(spec: dict) -> dict:
    out: dict = {"class": "funasr_onnx.paraformer_online_bin.Paraformer"}
    try:
        from funasr_onnx.paraformer_online_bin import Paraformer

        t0 = time.monotonic()
        model = Paraformer(spec["onnx_streaming_dir"], chunk_size=CHUNK_SIZE, intra_op_num_threads=THREADS)
        out["load_s"] = round(time.monotonic() - t0, 1)
    except Exception as e:  # noqa: BLE001
        progress(f"streaming funasr-onnx: FAILED to load {error_text(e)}")
        return {**out, "error": error_text(e), "traceback": traceback.format_exc()[-3000:]}

    def text_of(res: list) -> str:
        parts = []
        for r in res:
            preds = r.get("preds")
            parts.append(preds[0] if isinstance(preds, (list, tuple)) and preds else str(preds or ""))
        return "".join(parts)

    def decode_clip(clip: np.ndarray) -> tuple[list[float], str]:
        # funasr_onnx 0.4.3 with chunk_size[0] == 0 keeps the whole overlap as cache on a final call
        # and then fails to pad a final piece of more than 5 LFR frames; so every piece goes in as
        # non-final and an empty final call decodes the look-ahead tail (as its short-final path does).
        # A non-final piece too short for one LFR frame makes its frontend return a 1-D array that
        # __call__ cannot index: a last piece under 100 ms is left out.
        cache: dict = {}
        model.frontend.cache_reset()  # the frontend keeps one stream's state; the empty final skips its reset
        pieces = [p for p in _chunks(clip) if p.shape[0] >= SR // 10]
        times, text = [], ""
        for piece, final in [(p, False) for p in pieces] + [(clip[:0], True)]:
            t = time.perf_counter()
            res = model(piece, param_dict={"cache": cache, "is_final": final})
            times.append(time.perf_counter() - t)
            text += text_of(res)
        return times, text

    sampler = RssSampler(os.getpid()).start()
    try:
        out.update(_run_baseline(decode_clip, _load_clips(spec), sampler))
        progress(f"streaming funasr-onnx: {_describe_baseline(out)}")
    except Exception as e:  # noqa: BLE001
        out.update(error=error_text(e), traceback=traceback.format_exc()[-3000:])
        progress(f"streaming funasr-onnx: FAILED {out['error']}")
    sampler.stop()
    return out


WORKERS = {"streaming-automodel": bench_automodel_streaming, "streaming-funasr-onnx": bench_funasr_onnx_streaming}


def _describe_baseline(m: dict) -> str:
    c = m["chunk_compute_ms"]
    return (f"{m['chunks']} chunks, {m['audio_s']:.0f} s audio in {m['compute_s']:.1f} s compute -> "
            f"{m['throughput_x']:.1f}x realtime (RTF {m['rtf']:.3f}), per chunk p50 {c['p50']:.0f} ms "
            f"p95 {c['p95']:.0f} ms, peak RSS {m['peak_rss_mb'] or 0:.0f} MB")


# --------------------------------------------------------------------------------------------
# served streams


class _Progress:
    def __init__(self, label: str, total_chunks: int):
        self.label, self.total, self.done, self.errors = label, total_chunks, 0, 0

    async def report(self, t0: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            progress(f"streaming served {self.label}: {loop.time() - t0:.0f} s, {self.done}/{self.total} chunks, "
                     f"{self.errors} errors")


async def _run_streams(url: str, clips: list[np.ndarray], n: int, paced: bool, config: dict, label: str) -> dict:
    """n streams (stream k plays clip k % len(clips)). Paced: chunk i of a stream is sent when its
    audio is complete (start + i x 600 ms; starts staggered by 600 ms / n) or, if the stream is
    behind, as soon as the previous response came back. Unpaced: back to back."""
    client = AsyncTritonAsrClient(url, timeout_s=300)
    loop = asyncio.get_running_loop()
    pieces = [_chunks(clips[k % len(clips)]) for k in range(n)]
    prog = _Progress(label, sum(len(p) for p in pieces))
    t0 = loop.time() + 0.5  # time 0 of every stream's audio is t0 + its stagger - CHUNK_S
    chunk_lat, partial_lat, final_lat, final_after_speech, lags = [], [], [], [], []
    end_lags: list[float] = []  # per stream: how far behind real time its last response came
    errors: list[str] = []
    counts = {"partial": 0, "sentence_end": 0, "sentence_begin": 0}
    completed, units, first_send, last_recv = 0, 0, [math.inf], [0.0]

    async def one(k: int) -> None:
        nonlocal completed, units
        stream = client.open_stream({"chunk_size": CHUNK_SIZE, **config})
        audio0 = t0 + (k * CHUNK_S / n if paced else 0.0) - CHUNK_S  # wall time of the stream's sample 0
        done = 0
        for i, piece in enumerate(pieces[k]):
            due = audio0 + (i * CHUNK + piece.shape[0]) / SR  # the piece's audio is complete
            if paced and loop.time() < due:
                await asyncio.sleep(due - loop.time())
            sent = loop.time()
            first_send[0] = min(first_send[0], sent)
            try:
                events = await stream.send(piece, end=i == len(pieces[k]) - 1)
            except Exception as e:  # noqa: BLE001 - counted; the stream is over
                errors.append(error_text(e))
                prog.errors += 1
                return
            got = loop.time()
            last_recv[0] = max(last_recv[0], got)
            prog.done += 1
            done += 1
            chunk_lat.append(got - sent)
            lags.append(got - due)
            kinds = {e.get("event") for e in events}
            for e in events:
                if e.get("event") in counts:
                    counts[e["event"]] += 1
                if e.get("event") == "sentence_end":
                    units += text_units(e.get("text", ""))
                    final_after_speech.append(got - (audio0 + e.get("end_ms", 0) / 1000))
            if "partial" in kinds:
                partial_lat.append(got - sent)
            if "sentence_end" in kinds:
                final_lat.append(got - sent)
        if done == len(pieces[k]):
            completed += 1
            end_lags.append(got - due)

    reporter = asyncio.create_task(prog.report(t0))
    try:
        await asyncio.gather(*(one(k) for k in range(n)))
    finally:
        reporter.cancel()
        await client.close()
    audio = sum(clips[k % len(clips)].shape[0] for k in range(n)) / SR
    wall = last_recv[0] - first_send[0] if last_recv[0] > first_send[0] else float("nan")
    ms = lambda s: {k: (round(v * 1000) if k != "n" else v) for k, v in _stats(s).items()}  # noqa: E731
    return {
        "streams": n, "paced": paced, "config": {"chunk_size": CHUNK_SIZE, **config},
        "requests": len(chunk_lat), "errors": len(errors), "error_samples": sorted(set(errors))[:5],
        "streams_completed": completed, "audio_s": round(audio, 2), "wall_s": round(wall, 3),
        "throughput_x": round(audio / wall, 2) if wall == wall else None,
        "chunk_latency_ms": ms(chunk_lat), "partial_latency_ms": ms(partial_lat), "final_latency_ms": ms(final_lat),
        # from the moment the audio at a sentence's end_ms existed to its sentence_end event: includes
        # the VAD's trailing silence (max_sentence_silence_ms) and the chunk that holds it
        "final_after_speech_end_ms": ms(final_after_speech) if paced else None,
        # response time minus the time the chunk's audio was complete: > 600 ms means a stream fell behind
        "behind_realtime_ms": ms(lags) if paced else None,
        "max_wait_ms": round(max(chunk_lat) * 1000) if chunk_lat else None,
        # fairness: spread over streams of how far behind their last response came (paced)
        "stream_end_behind_ms": ({"min": round(min(end_lags) * 1000), "max": round(max(end_lags) * 1000)}
                                 if paced and end_lags else None),
        "events": counts, "final_units": units,
    }


def _describe_served(m: dict) -> str:
    p, f = m["partial_latency_ms"], m["final_latency_ms"]
    text = (f"{m['streams_completed']}/{m['streams']} streams, {m['requests']} chunks, {m['errors']} errors, "
            f"{m['audio_s']:.0f} s audio in {m['wall_s']:.1f} s ({m['throughput_x']}x realtime); "
            f"partial p50/p95 {p.get('p50', '-')}/{p.get('p95', '-')} ms, final p50/p95 {f.get('p50', '-')}/"
            f"{f.get('p95', '-')} ms, max wait {m['max_wait_ms']} ms")
    if m.get("streaming_asr_mean_batch") is not None:
        text += f", batch {m['streaming_asr_mean_batch']}"
    return text


def _served_run(url: str, sampler: RssSampler, clips: list[np.ndarray], name: str, n_streams: int, paced: bool,
                config: dict) -> dict:
    """One measurement of `n_streams` streams: latencies (from _run_streams), CPU, RSS, streaming_asr batching."""
    progress(f"streaming served {name}: {n_streams} streams"
             + (f", 600 ms every 600 ms, starts staggered over {CHUNK_S * 1000:.0f} ms" if paced else
                ", back to back") + (f", config {config}" if config else ", 2-pass + punctuation"))
    try:
        before = _model_counts(url, "streaming_asr")
        sampler.reset()
        cpu = CpuMeter()
        m = asyncio.run(_run_streams(url, clips, n_streams, paced, config, name))
        m["cpu"] = cpu.stop()
        after = _model_counts(url, "streaming_asr")
        inferences, executions = after[0] - before[0], after[1] - before[1]
        m.update(peak_rss_mb=sampler.peak_mb(), streaming_asr_requests=inferences,
                 streaming_asr_executions=executions,
                 streaming_asr_mean_batch=round(inferences / executions, 2) if executions else None)
        progress(f"streaming served {name}: {_describe_served(m)}")
    except Exception as e:  # noqa: BLE001
        m = {"streams": n_streams, "error": error_text(e), "traceback": traceback.format_exc()[-3000:]}
        progress(f"streaming served {name}: FAILED {m['error']}")
    return {"kind": "paced" if paced else ("unpaced, online only" if config else "unpaced"), **m}


def bench_served_streaming(clips: list[np.ndarray], stream_counts: list[int]) -> dict:
    """`streaming_asr` on profile cpu: a warm-up, then the main count paced, unpaced and unpaced online-only,
    then each further count paced."""
    log_file = BENCH / f"triton-streaming-{PROFILE}.log"
    out: dict = {"profile": PROFILE, "settings": served_settings(PROFILE, ("streaming_asr", "paraformer", "punc")),
                 "runs": {}}
    n_main = stream_counts[0]
    runs = {f"paced, {n_main} streams": (n_main, True, {}), f"unpaced, {n_main} streams": (n_main, False, {}),
            f"unpaced, {n_main} streams, online only": (n_main, False, ONLINE_ONLY)}
    runs.update({f"paced, {n} streams": (n, True, {}) for n in stream_counts[1:]})
    try:
        with bench_triton(PROFILE, STREAMING_MODELS, log_file, out) as (url, sampler):
            warm = [c[:int(WARMUP_S * SR)] for c in clips[:2]]
            asyncio.run(_run_streams(url, warm, 2, False, {}, "warm-up"))  # both instances, 2-pass path included
            out["load_rss_mb"] = sampler.peak_mb()
            for name, (n_streams, paced, config) in runs.items():
                out["runs"][name] = _served_run(url, sampler, clips, name, n_streams, paced, config)
    except Exception as e:  # noqa: BLE001
        out["error"] = error_text(e)
        progress(f"streaming served: FAILED {out['error']} (log: {log_file})")
    return out


# --------------------------------------------------------------------------------------------
# entry (called by bench.measure) and results


def run_streaming(clips: list[np.ndarray], clip_paths: list[str], source_dirs: dict, onnx_dir: Path,
                  stream_counts: list[int]) -> dict:
    t0 = time.monotonic()
    progress(f"streaming: {stream_counts} simulated real-time streams against `streaming_asr` (profile {PROFILE})")
    served = bench_served_streaming(clips, stream_counts)
    spec = {"clips": clip_paths, "streaming_dir": source_dirs["streaming"],
            "onnx_streaming_dir": str(onnx_dir / "streaming")}
    progress("streaming automodel: loading (PyTorch fp32, ncpu=2)")
    automodel = run_worker("streaming-automodel", spec)
    progress("streaming funasr-onnx: loading (paraformer_online_bin.Paraformer, 2 intra-op threads)")
    funasr_onnx = run_worker("streaming-funasr-onnx", spec)
    result = {"chunk_size": CHUNK_SIZE, "chunk_ms": round(CHUNK_S * 1000), "streams": stream_counts[0],
              "stream_counts": stream_counts, "clips": len(clips),
              "served": served, "automodel": automodel, "funasr_onnx": funasr_onnx}
    result["ratios"] = streaming_ratios(result)
    result["total_s"] = round(time.monotonic() - t0, 1)
    for key, r in result["ratios"].items():
        progress(f"streaming ratio {key}: " + (f"{r['ratio']:.2f}x" if "ratio" in r else f"n/a ({r['error']})"))
    return result


def streaming_ratios(result: dict) -> dict:
    runs = {m.get("kind"): m for m in result["served"].get("runs", {}).values() if m.get("streams") == result["streams"]}
    out = {}
    for run in ("unpaced", "unpaced, online only"):
        for base in ("automodel", "funasr_onnx"):
            key = f"served {run} ({result['streams']} streams) vs {base.replace('_', '-')}"
            served_x, base_x = runs.get(run, {}).get("throughput_x"), result[base].get("throughput_x")
            if not served_x or not base_x or runs[run].get("errors"):
                out[key] = {"error": "missing or failed measurement"}
            else:
                out[key] = {"served_throughput_x": served_x, "baseline_throughput_x": base_x,
                            "ratio": round(served_x / base_x, 2)}
    return out


def _ms(d: dict | None, key: str) -> str:
    return "—" if not d or d.get(key) is None else f"{d[key]:,}"


def _keeps_up(m: dict, chunk_ms: int) -> bool | None:
    """Paced: did every response come within two chunk periods of its audio (no growing backlog)?"""
    b = m.get("behind_realtime_ms")
    if not b or m.get("errors") or m.get("streams_completed") != m.get("streams"):
        return None if not b else False
    return b["max"] < 2 * chunk_ms


def render_section(s: dict, usable_cores: int | None) -> list[str]:
    served, runs = s["served"], s["served"].get("runs", {})
    cores = usable_cores or "?"
    n = s["streams"]
    lines = [
        "## Real-time streaming",
        "",
        f"`streaming_asr` (profile `{PROFILE}`: streaming FSMN-VAD + streaming Paraformer in the python backend, "
        "2-pass finals re-decoded by the offline `asr` ensemble and punctuated by `punc` through BLS) on the same "
        "repository. Its streaming Paraformer is `--source test-large` too: random weights at the real "
        "paraformer-zh-streaming sizes (encoder 50 blocks, decoder 16, d=512); 2-pass uses the offline "
        "pipeline's `asr` and `punc`. "
        f"Chunks of {s['chunk_ms']} ms (`chunk_size` {s['chunk_size']}: 300 ms look-ahead, "
        "`encoder_chunk_look_back`/`decoder_chunk_look_back` 0). Stream k plays clip k mod "
        f"{s['clips']} of the clips above, from the start to the end, then ends the stream.",
        "",
    ]
    if "error" in served and not runs:
        lines += [f"Served streaming **failed**: `{served['error']}`", ""]
    lines += [
        "### Served streams",
        "",
        "- **paced**: every stream sends 600 ms of audio each 600 ms of wall time, as a live microphone would, "
        "starts staggered over one chunk period; one request in flight per stream, so a stream that falls "
        "behind sends its next chunk as soon as the previous response is back.",
        "- **unpaced**: the same streams send their chunks back to back: the capacity of the server. "
        "*online only* switches 2-pass and punctuation off (`two_pass`/`punctuation` false): streaming "
        "Paraformer + streaming VAD alone, the work AutoModel streaming does.",
        "",
        "Times in ms. *Partial* = send → response, for responses carrying a `partial` event; *final* = the same "
        "for responses carrying a `sentence_end` (they include the 2-pass offline decode of the sentence and "
        "punctuation). *Max wait* = the longest any stream waited for any one response (starvation). "
        "*Behind real time* (paced) = response time minus the moment the chunk's audio was complete: about the "
        "latency while the server keeps up, growing without bound when it does not. *Final after speech end* "
        "(paced) = from the moment the audio at a sentence's end existed to its `sentence_end` (includes the "
        "VAD's 800 ms of trailing silence). *Other load* = cores kept busy by processes outside the bench.",
        "",
        "| run | streams done | errors | chunks | throughput (× realtime) | partial p50 / p95 / max | "
        "final p50 / p95 | max wait | behind real time p50 / p95 / max | final after speech end p50 / p95 "
        "| mean batch | other load | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in runs.items():
        if "requests" not in m:
            lines.append(f"| {name} | **failed**: `{m.get('error', '?')[:200]}` | | | | | | | | | | | |")
            continue
        p, f, b, a = (m["partial_latency_ms"], m["final_latency_ms"], m.get("behind_realtime_ms"),
                      m.get("final_after_speech_end_ms"))
        lines.append(
            f"| {name} | {m['streams_completed']}/{m['streams']} | {m['errors']} | {m['requests']} | "
            f"{_fmt(m.get('throughput_x'), '.1f')} | {_ms(p, 'p50')} / {_ms(p, 'p95')} / {_ms(p, 'max')} | "
            f"{_ms(f, 'p50')} / {_ms(f, 'p95')} | {_ms(m, 'max_wait_ms')} | "
            + (f"{_ms(b, 'p50')} / {_ms(b, 'p95')} / {_ms(b, 'max')} | {_ms(a, 'p50')} / {_ms(a, 'p95')}"
               if b else "— | —")
            + f" | {m.get('streaming_asr_mean_batch') or '—'} | {_fmt((m.get('cpu') or {}).get('other_cores'), '.2f')}"
            + f" | {_fmt(m.get('peak_rss_mb'), '.0f')} |")
    for name, m in runs.items():
        if m.get("error_samples"):
            lines += ["", f"Errors in *{name}*: " + "; ".join(f"`{e[:300]}`" for e in m["error_samples"])]
    lines += [
        "",
        "Throughput = audio seconds of all streams / wall seconds from the first request to the last response "
        "(paced runs cannot exceed the stream count). Mean batch = `streaming_asr` inference_count / "
        "execution_count from Triton's statistics: chunks of different streams that the sequence batcher handed "
        "to one `execute`, i.e. one batched streaming-Paraformer step.",
        "",
        "### Baselines (same weights, same clips, one stream at a time)",
        "",
        "| runtime | chunks | audio (s) | compute (s) | throughput (× realtime) | RTF | compute per chunk p50 / p95 / "
        "max (ms) | other load | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("FunASR AutoModel streaming (PyTorch fp32, 2 threads)", s["automodel"]),
                    ("funasr-onnx `paraformer_online_bin.Paraformer` (ORT fp32, 2 threads)", s["funasr_onnx"])):
        if "throughput_x" not in r:
            lines.append(f"| {name} | **failed**: `{str(r.get('error', '?'))[:300]}` | | | | | | | |")
            continue
        c = r["chunk_compute_ms"]
        lines.append(f"| {name} | {r['chunks']} | {r['audio_s']:.1f} | {r['compute_s']:.1f} | "
                     f"{r['throughput_x']:.1f} | {r['rtf']:.3f} | {c['p50']:.0f} / {c['p95']:.0f} / {c['max']:.0f} | "
                     f"{_fmt((r.get('cpu') or {}).get('other_cores'), '.2f')} | "
                     f"{_fmt(r.get('peak_rss_mb'), '.0f')} |")
    lines += [
        "",
        "Each clip once, chunk by chunk, as one stream (`generate(input=chunk, cache=..., is_final=...)` / "
        "`__call__(chunk, param_dict={cache, is_final})`); throughput = audio seconds / summed compute seconds "
        "of those calls: the most one process of that runtime decodes, one stream after another, with no "
        "waiting for audio.",
        "",
        "### Ratios",
        "",
        f"Served unpaced throughput ({n} streams together) / the baseline's throughput.",
        "",
        "| comparison | ratio (served / baseline × realtime) |",
        "|---|---:|",
    ]
    for key, r in s.get("ratios", {}).items():
        lines.append(f"| {key} | " + (f"{r['ratio']:.2f}× ({r['served_throughput_x']:.1f} / "
                                      f"{r['baseline_throughput_x']:.1f})" if "ratio" in r else f"n/a ({r['error']})")
                     + " |")
    lines += ["", f"### What this means on {cores} shared cores", ""]
    by_kind = {m.get("kind"): m for m in runs.values() if m.get("streams") == n and "requests" in m}
    two_pass, online = by_kind.get("unpaced", {}), by_kind.get("unpaced, online only", {})
    if two_pass.get("throughput_x"):
        lines.append(
            f"- **Capacity.** Unpaced, {n} streams decode {two_pass['throughput_x']:.1f}× real time with 2-pass "
            + (f"({online['throughput_x']:.1f}× online only)" if online.get("throughput_x") else "")
            + f": these {cores} cores carry at most about {int(two_pass['throughput_x'])} live streams with 2-pass "
            + (f"(about {int(online['throughput_x'])} online only) " if online.get("throughput_x") else "")
            + "of this model size before they fall behind, fewer with latency headroom"
            + (f". The 2-pass re-decode of every sentence by the offline Paraformer-large is "
               f"{(1 - two_pass['throughput_x'] / online['throughput_x']) * 100:.0f} % of the work (speech is decoded "
               "twice: chunk by chunk online, then each sentence again offline)." if online.get("throughput_x") else "."))
    for name, m in runs.items():
        ok = _keeps_up(m, s["chunk_ms"])
        if ok is None and not m.get("behind_realtime_ms"):
            continue
        b = m["behind_realtime_ms"]
        if ok:
            lines.append(f"- **{name}: keeps up.** Every response came within {b['max']:,} ms of its audio; partials "
                         f"p50 {_ms(m['partial_latency_ms'], 'p50')} ms / p95 {_ms(m['partial_latency_ms'], 'p95')} ms, "
                         f"finals {_ms(m['final_latency_ms'], 'p50')} / {_ms(m['final_latency_ms'], 'p95')} ms after "
                         "the chunk that ends the sentence.")
        else:
            lines.append(f"- **{name}: falls behind.** {m['streams']} live streams are more than these cores decode "
                         f"({m.get('throughput_x') or 0:.1f}× real time reached): responses came up to {b['max'] / 1000:.1f} s "
                         f"after their audio (p50 {b['p50'] / 1000:.1f} s) and the backlog grows with the length of the "
                         "streams; per-request latency (partial p95 "
                         f"{_ms(m['partial_latency_ms'], 'p95')} ms) hides this because each stream has one request "
                         f"in flight. The longest single wait was {_ms(m, 'max_wait_ms')} ms"
                         + (f"; at their last chunk the streams were between {e['min'] / 1000:.1f} and "
                            f"{e['max'] / 1000:.1f} s behind (the spread shows how evenly the batcher served them)"
                            if (e := m.get("stream_end_behind_ms")) else "")
                         + (f"; {m['errors']} errors." if m.get("errors") else "; no errors."))
    batches = [f"{name}: {m['streaming_asr_mean_batch']}" for name, m in runs.items()
               if m.get("streaming_asr_mean_batch")]
    lines += [
        "- **Batching** (mean batch " + "; ".join(batches) + "). The sequence batcher puts the chunks of "
        "different streams that wait at the same moment into one `execute` (one streaming-Paraformer step for "
        "all of them). Paced streams with staggered starts arrive spread out, so batches stay small while the "
        "server keeps up and grow once requests queue; all chunks have the same length, so batching pads "
        "nothing.",
        "- **Finals cost more than partials.** A response with a `sentence_end` waits for the offline "
        "Paraformer-large to re-decode the whole sentence and for punctuation, on the same cores as every other "
        "stream's chunks; the online-only row shows the latency without that.",
        "- **Baselines decode one stream at a time** and run only the streaming Paraformer (no VAD, no 2-pass, "
        "no batching): compare them with the *online only* row for like-for-like work, with the 2-pass row for "
        "what the served model delivers. A baseline at R× real time could interleave at most R live streams in "
        "one process. funasr-onnx's online `Paraformer` runs the very ONNX files `streaming_asr` serves, with "
        "its fbank computed frame by frame in Python. funasr_onnx 0.4.3 cannot finish a stream with "
        "`chunk_size[0] = 0` when the final piece is longer than 5 LFR frames (its final path keeps the whole "
        "overlap as cache and then pads by a negative amount), so the bench feeds every piece as non-final and "
        "ends each clip with an empty final call (its short-final path, which decodes the look-ahead tail), "
        "leaving out a last piece shorter than 100 ms (its frontend cannot take it as non-final): the same "
        "chunks, at most the last 100 ms of a clip not decoded.",
        "- **Random weights.** As above: realistic compute per chunk (real sizes), gibberish text, more tokens "
        "per second than real speech (a heavier decoder and CIF share than with the real checkpoint). The "
        "streaming VAD is the real FSMN-VAD, so sentence boundaries are real.",
    ]
    measured = list(runs.values()) + [s["automodel"], s["funasr_onnx"]]
    load_text = other_load_text(measured, usable_cores)
    if load_text:
        lines.append("- " + load_text)
    lines.append("")
    if served.get("load_s"):
        extra = [f"AutoModel loaded in {s['automodel']['load_s']:.0f} s" if s["automodel"].get("load_s") else "",
                 f"funasr-onnx in {s['funasr_onnx']['load_s']:.0f} s" if s["funasr_onnx"].get("load_s") else ""]
        lines += [f"Triton with `streaming_asr` (+ `asr`, `punc`) ready in {served['load_s']:.0f} s"
                  + "".join(f", {e}" for e in extra if e)
                  + f"; the streaming part of the bench took {s['total_s'] / 60:.1f} min. Served threads: "
                  + _settings_text(served.get("settings", {})) + ".", ""]
    return lines
