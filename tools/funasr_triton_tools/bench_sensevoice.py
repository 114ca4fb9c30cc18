"""The SenseVoice-Small bench row: the served model against AutoModel and funasr-onnx on the same weights.

  served       the Triton `pipeline` model with MODEL=sensevoice (FSMN-VAD -> `sensevoice` per segment, its
               own punctuation/ITN: use_itn), no word timestamps (the baselines compute none), at each
               concurrency; Triton loads only pipeline, vad, sensevoice
  automodel    FunASR AutoModel(model=SenseVoiceSmall, vad_model=FSMN-VAD), PyTorch fp32, 2 torch threads,
               use_itn=True, one request after another (on CPU AutoModel decodes one VAD segment at a time)
  funasr-onnx  funasr_onnx SenseVoiceSmall (the exported model.onnx: FunASR's own export graph) per VAD
               segment, textnorm withitn, 2 intra-op threads, sequential; its segments come from the
               served FSMN-VAD code (funasr_triton_models.fsmn_vad, onnxruntime) run in the same loop: funasr_onnx's own
               Fsmn_vad ends a segment after a fixed 800 ms of silence, while funasr 1.4.16's AutoModel (and
               the served VAD, a port of it) waits 2000 ms within a segment's first 10 s (its dynamic
               end-silence schedule), so Fsmn_vad cut about twice as many segments and the row decoded
               other audio pieces

Like for like: all three decode the same VAD segments (`segments_per_request`; AutoModel's counted by its
own VAD model outside the timed loop), with dither 0 in every frontend (the hub config.yaml leaves
WavFrontend's at 1.0, which funasr_onnx and AutoModel would apply), use_itn / withitn and language auto;
`units_per_request` counts the same units everywhere: the text without SenseVoice's <|...|> tags (the
served text has them taken out; AutoModel and funasr_onnx leave them in), spaces and punctuation.

Weights: `--source test-large` (random weights at the real SenseVoiceSmall encoder sizes), `test` for a
smoke run, or any exported repository. The baselines run in this process one after another (no child
processes: peak memory is not compared here, only speed). Writes one JSON file and prints the rows.

    python -m funasr_triton_tools.bench_sensevoice --source test-large --seconds 30 --clips 4
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from funasr_triton.server import EmbeddedTriton, TritonOptions, free_ports
from funasr_triton.triton_client import TranscribeOptions, TritonAsrClient

from .bench_common import (CACHE, ROOT, SR, THREADS, describe, machine_info, make_clips, progress, run_sequential,
                           summarize, text_units)

LOADED = ("pipeline", "vad", "sensevoice")
TAG = re.compile(r"<\|[^|]*\|>")  # SenseVoice's rich-transcription tags
MIN_SEGMENT_MS = 30  # the served job's min_segment_ms: shorter VAD segments are not decoded


def plain(text: str) -> str:
    """The text as the served model gives it: SenseVoice's tags taken out."""
    return TAG.sub("", text)


def prepare(repo: Path, source: str, cache_dir: Path) -> dict:
    """Export vad + sensevoice into `repo` (reused while MANIFEST.json says so); the source dirs."""
    subprocess.run([sys.executable, "-m", "funasr_triton_tools.cli", "--log-level", "WARNING", "export", "--source", source,
                    "--quantize", "--stages", "vad,sensevoice", "--repository", str(repo), "--cache-dir", str(cache_dir)],
                   check=True, cwd=ROOT)
    stages = json.loads((repo / "MANIFEST.json").read_text())["stages"]
    return {s: Path(stages[s]["source_dir"]) for s in ("vad", "sensevoice")}


def funasr_onnx_dirs(repo: Path, dirs: dict, out: Path) -> dict:
    """funasr_onnx's layouts from the repository's exported files (the same graphs) + the hub config.yaml."""
    sv, vad = out / "sensevoice", out / "vad"
    for d in (sv, vad):
        d.mkdir(parents=True, exist_ok=True)
    meta = json.loads((repo / "sensevoice" / "1" / "sensevoice.json").read_text())
    for name in ("model.onnx", "am.mvn", meta["bpemodel"]):
        shutil.copyfile(repo / "sensevoice" / "1" / name, sv / name)
    import yaml

    conf = yaml.safe_load((dirs["sensevoice"] / "config.yaml").read_text(encoding="utf-8"))
    conf.setdefault("frontend_conf", {})["dither"] = 0.0  # funasr_onnx's WavFrontend defaults to 1.0 (noise)
    (sv / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True, sort_keys=False), encoding="utf-8")
    for src, name in ((repo / "vad" / "1" / "model.onnx", "model.onnx"), (repo / "vad" / "1" / "am.mvn", "am.mvn"),
                      (dirs["vad"] / "config.yaml", "config.yaml")):
        shutil.copyfile(src, vad / name)
    return {"sensevoice": sv, "vad": vad}


def bench_served(repo: Path, clips: list[np.ndarray], order: list[int], concurrencies: list[int],
                 profile: str = "cpu") -> dict:
    grpc, metrics, http = free_ports(3)
    url = f"127.0.0.1:{grpc}"
    load = ("--model-control-mode=explicit", *(f"--load-model={m}" for m in LOADED))
    server = EmbeddedTriton(TritonOptions(repo, profile, grpc, metrics, http, extra_args=load), cache=CACHE,
                            log_file=repo.parent / f"triton-sensevoice-{profile}.log")
    out: dict = {"profile": profile, "concurrency": {}}
    options = TranscribeOptions(model="sensevoice", language="auto", timestamps=False)
    server.start()
    try:
        server.wait_ready(timeout_s=600)
        client = TritonAsrClient(url, timeout_s=600)

        def one(i: int) -> tuple[float, str, int]:
            t = time.perf_counter()
            result = client.transcribe(clips[i], options)
            return time.perf_counter() - t, result.get("text", ""), len(result.get("vad_segments", []))

        try:
            one(order[0])  # warm-up
            for c in concurrencies:
                t0 = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(max_workers=c) as pool:
                    results = list(pool.map(one, order))
                wall = time.perf_counter() - t0
                m = summarize([r[0] for r in results], wall, sum(len(clips[i]) for i in order) / SR,
                              [text_units(r[1]) for r in results], results[0][1], [r[2] for r in results], concurrency=c)
                progress(f"served sensevoice {profile} c={c}: {describe(m)}")
                out["concurrency"][str(c)] = m
        finally:
            client.close()
    finally:
        server.stop()
    return out


def bench_automodel(dirs: dict, clips: list[np.ndarray], order: list[int]) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    from funasr import AutoModel

    model = AutoModel(model=str(dirs["sensevoice"]), vad_model=str(dirs["vad"]), disable_update=True, device="cpu",
                      ncpu=THREADS, disable_pbar=True, disable_log=True)
    for kwargs in (model.kwargs, *getattr(model, "_base_kwargs_map", {}).values()):  # no fbank dither (as served)
        frontend = kwargs.get("frontend") if isinstance(kwargs, dict) else None
        if frontend is not None and hasattr(frontend, "dither"):
            frontend.dither = 0.0

    def run(wav):
        return plain(model.generate(input=wav, language="auto", use_itn=True, disable_pbar=True)[0]["text"]), None

    run(clips[order[0]])
    m = run_sequential(run, clips, order, None)
    # the segments AutoModel decoded: its VAD model on each clip again, outside the timed loop
    segments = [len(model.inference(clips[i], model=model.vad_model, kwargs=model.vad_kwargs)[0]["value"]) for i in order]
    m["segments_per_request"] = round(float(np.mean(segments)), 2)
    progress(f"automodel sensevoice: {describe(m)}")
    return m


def served_vad(repo: Path):
    """The served FSMN-VAD (funasr_triton_models.fsmn_vad: funasr 1.4.16's offline VAD on onnxruntime)
    on the repository's exported vad model."""
    from funasr_triton_models.fsmn_vad import FsmnVad  # onnxruntime: the bench extra only

    return FsmnVad(repo / "vad" / "1", intra_op_threads=THREADS)


def bench_funasr_onnx(onnx_dirs: dict, repo: Path, clips: list[np.ndarray], order: list[int]) -> dict:
    from funasr_onnx import Fsmn_vad, SenseVoiceSmall

    vad = served_vad(repo)
    sv = SenseVoiceSmall(str(onnx_dirs["sensevoice"]), intra_op_num_threads=THREADS)

    def run(wav):
        segments = [[b, e] for b, e in vad.segments(wav) if e - b >= MIN_SEGMENT_MS]
        texts = [plain(sv(wav[b * 16: e * 16], language="auto", textnorm="withitn")[0]) for b, e in segments]
        return " ".join(t for t in texts if t), len(segments)

    run(clips[order[0]])
    m = run_sequential(run, clips, order, None)
    # for the record: how many segments funasr_onnx's own Fsmn_vad (fixed 800 ms end silence) cuts
    own = Fsmn_vad(str(onnx_dirs["vad"]), intra_op_num_threads=THREADS)
    m["own_fsmn_vad_segments_per_request"] = round(float(np.mean([len(own(clips[i])[0]) for i in order])), 2)
    progress(f"funasr-onnx sensevoice: {describe(m)}")
    return m


def rows(result: dict) -> list[str]:
    """Markdown rows: runtime, concurrency, audio seconds per wall second, RTF, and what was decoded (VAD
    segments and text units per request: equal across the rows when the comparison is like for like)."""
    out = ["| runtime | concurrency | throughput (audio s / wall s) | RTF | segments / request | units / request |",
           "|---|---|---|---|---|---|"]

    def cells(m: dict) -> str:
        return (f"{m['throughput_x']:.2f} | {m['rtf']:.4f} | {m.get('segments_per_request')} | "
                f"{m.get('units_per_request')} |")

    for c, m in result["served"]["concurrency"].items():
        out.append(f"| served sensevoice ({result['served']['profile']}) | {c} | {cells(m)}")
    for name in ("automodel", "funasr_onnx"):
        out.append(f"| {name.replace('_', '-')} SenseVoiceSmall | 1 | {cells(result[name])}")
    return out


def run(source: str, seconds: float, n_clips: int, concurrencies: list[int], work: Path) -> dict:
    machine = machine_info()
    repo = work / "model_repository"
    dirs = prepare(repo, source, CACHE / "models")
    onnx = funasr_onnx_dirs(repo, dirs, work / "funasr_onnx")
    clips = make_clips(seconds, n_clips)
    order = list(range(len(clips)))
    result = {"source": source, "clips": n_clips, "clip_seconds": seconds, "threads": THREADS,
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
              "served": bench_served(repo, clips, order, concurrencies),
              "automodel": bench_automodel(dirs, clips, order),
              "funasr_onnx": bench_funasr_onnx(onnx, repo, clips, order)}
    result["machine"] = machine_info(start=machine)
    result["like_for_like"] = {name: {k: m[k] for k in ("segments_per_request", "units_per_request")}
                               for name, m in (("served", next(iter(result["served"]["concurrency"].values()))),
                                               ("automodel", result["automodel"]), ("funasr_onnx", result["funasr_onnx"]))}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m funasr_triton_tools.bench_sensevoice", description=__doc__.splitlines()[0])
    p.add_argument("--source", default="test-large", choices=["test", "test-large", "modelscope"])
    p.add_argument("--seconds", type=float, default=30.0, help="length of each clip")
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--concurrency", default="1,4", help="comma-separated served concurrencies")
    p.add_argument("--work-dir", type=Path, default=CACHE / "bench-sensevoice")
    p.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "sensevoice.json")
    args = p.parse_args(argv)
    result = run(args.source, args.seconds, args.clips, [int(c) for c in args.concurrency.split(",")], args.work_dir)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    print("\n".join(rows(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
