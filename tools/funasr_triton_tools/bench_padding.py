"""How much padding a `paraformer` batch should allow on a CPU: the stage alone, on one long file's real VAD segments.

    python -m funasr_triton_tools.bench_padding [--minutes 10] [--repeats 2] [--fractions 0.25,0.1,0.05,0]

The bench repository (`make bench` prepares it: test-large weights) gives the VAD, the features and the paraformer
graph; the file is the long-file bench's espeak-ng recording. Segments go to `PaddedParaformer` in windows of 16,
as one recording's segments are in flight in `transcribe`, once per `max_pad_fraction`; the time is the stage's
compute alone (2 onnxruntime threads, no spinning, as configured). Results: bench/results/<time>.json (kind "padding")
with the machine's description. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import datetime
import math
import subprocess
import time

import numpy as np

from .bench_common import AUDIO_DIR, REPO, THREADS, machine_info, progress, write_results

WINDOW = 16  # JobLimits.max_inflight: one recording's segments in flight at once


def _segments_features(minutes: int) -> list[np.ndarray]:
    from funasr_triton_models.features import AsrFrontend
    from funasr_triton_models.fsmn_vad import FsmnVad

    path = AUDIO_DIR / f"long-{minutes}min.mp3"
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
                         capture_output=True, check=True).stdout
    wav = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    segments = FsmnVad(REPO / "vad" / "1").segments(wav)
    frontend = AsrFrontend.from_dir(REPO / "feature_extractor" / "1")
    return [frontend(wav[b * 16:e * 16]) for b, e in segments]


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from funasr_triton_models.paraformer import PaddedParaformer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=10, help="the long-file bench's recording (10 or 60)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--fractions", default="0.25,0.1,0.05,0", help="max_pad_fraction values (inf: no limit)")
    ap.add_argument("--output-dir", default="bench/results")
    args = ap.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_info()
    feats = _segments_features(args.minutes)
    progress(f"{len(feats)} segments, {sum(f.shape[0] for f in feats) * 0.06:.0f} s of speech")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(REPO / "paraformer" / "1" / "model.onnx"), opts,
                                   providers=["CPUExecutionProvider"])
    no_hotwords = (np.array([[1]], np.int32), np.ones(1, np.int32))  # what `asr` sends without hotwords
    runs = []
    for repeat in range(args.repeats):
        for fraction in (float(x) for x in args.fractions.split(",")):
            stage = PaddedParaformer(session, 12000, fraction)
            t0, batches = time.perf_counter(), 0
            for w in range(0, len(feats), WINDOW):
                parsed = {i: (feats[i], *no_hotwords) for i in range(w, min(w + WINDOW, len(feats)))}
                batches += sum(1 for _ in stage.batches(parsed))
                stage.decode(parsed)
            seconds = time.perf_counter() - t0
            runs.append({"repeat": repeat, "max_pad_fraction": None if math.isinf(fraction) else fraction,
                         "seconds": round(seconds, 2), "batches": batches})
            progress(f"max_pad_fraction={fraction}: {seconds:.1f} s, {batches} batches")
    out = write_results({"format": 1, "kind": "padding", "machine": machine_info(start=machine), "minutes": args.minutes,
                         "segments": len(feats), "runs": runs}, args.output_dir, started)
    progress(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
