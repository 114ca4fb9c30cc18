"""`funasr-triton` command line: triton, frontend, serve, transcribe, listen, export, verify, bench, eval-diarization.

The installed `funasr-triton` command. It composes the runtime's commands (funasr_triton.cli), the export
package's (funasr_triton_export.cli: export, verify) and the tools' below (bench, eval-diarization); each
package adds its own with `register(subparsers)`. Nothing imported here loads torch or funasr (they are
imported inside the functions that export, verify or run a baseline), so the frontend image, which has
neither, runs `funasr-triton frontend` and `serve` from it.
"""
from __future__ import annotations

import sys

from funasr_triton import cli as runtime_cli
from funasr_triton_export import cli as export_cli

from . import bench, diarization_eval


def register(sub) -> None:
    """Add `bench` and `eval-diarization` to the subparsers of a `funasr-triton` parser."""
    b = sub.add_parser("bench", help="throughput/RTF of the served pipeline and real-time streaming latency vs "
                       "AutoModel and funasr-onnx")
    b.add_argument("--output-dir", default="bench/results")
    b.add_argument("--concurrency", default="1,4,8")
    b.add_argument("--profiles", default="cpu,cpu-int8")
    b.add_argument("--audio-seconds", type=float, default=20.0)
    b.add_argument("--requests", type=int, default=16)
    b.add_argument("--streams", default="20,4",
                   help="simulated real-time streams for the streaming_asr measurement: the first count is the "
                   "main load (paced and unpaced runs), further counts add paced runs (0: skip streaming)")
    b.add_argument("--skip-offline", action="store_true",
                   help="only the streaming measurement (quick iteration); the offline tables are left out")
    b.add_argument("--long", action="store_true", help="also the long-file measurement (bench_longfile.py): long MP3 "
                   "uploads through the HTTP frontend vs funasr-onnx and AutoModel, memory per request, per-model time")
    b.add_argument("--long-only", action="store_true", help="only the long-file measurement (its own results JSON; "
                   "replaces the long-file section of docs/benchmark.md)")
    b.add_argument("--long-minutes", default="10,60", help="long files measured served vs the baselines (minutes)")
    b.add_argument("--long-automodel-minutes", default=None,
                   help="the --long-minutes files AutoModel is also run on (default: all; AutoModel's 1 h file takes "
                   "about 5 min on an idle 2-core machine)")
    b.add_argument("--long-memory-minutes", default="10,60,240", help="long files measured for memory only (served)")
    b.add_argument("--long-parallel", type=int, default=4,
                   help="concurrent uploads of the longest --long-minutes file in the memory runs (1: none)")
    b.add_argument("--long-memory-source", choices=["test", "test-large"], default="test",
                   help="models of the memory runs: tiny `test` models (fast; memory hardly depends on model size) "
                   "or the bench's test-large repository")
    b.set_defaults(func=bench.main)


    d = sub.add_parser("eval-diarization", help="DER/JER of the served diarization against reference RTTMs "
                       "(needs the eval extra: pyannote.metrics)")
    d.add_argument("--rttm-dir", required=True, help="reference <uri>.rttm files")
    d.add_argument("--audio-dir", default=None, help="audio files, scored against <uri>.rttm in --rttm-dir")
    d.add_argument("--hypothesis-dir", default=None,
                   help="score existing hypothesis <uri>.rttm files instead of calling Triton")
    d.add_argument("--output-dir", default=None, help="write the hypothesis RTTMs here")
    d.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address")
    d.add_argument("--num-speakers", type=int, default=None, help="exact speaker count per file")
    d.add_argument("--min-speakers", type=int, default=None)
    d.add_argument("--max-speakers", type=int, default=None)
    d.add_argument("--collar", type=float, default=0.25,
                   help="total width (s) of the unscored zone centred on each reference boundary "
                   "(pyannote convention; md-eval -c 0.25 is --collar 0.5)")
    d.add_argument("--skip-overlap", action="store_true", help="do not score overlapped reference speech")
    d.add_argument("--json", action="store_true", help="print per-file and corpus scores as JSON")
    d.add_argument("--timeout", type=float, default=600.0)
    d.add_argument("--compare-backends", action="store_true",
                   help="score the served clustering and FunASR's cluster backend side by side on the same "
                        "embeddings (oracle speech; needs funasr)")
    d.add_argument("--embeddings", choices=["served", "resemblyzer"], default="served",
                   help="embedding source for --compare-backends: the served speaker model, or resemblyzer's "
                        "trained d-vector encoder")
    d.set_defaults(func=diarization_eval.main)


def main(argv: list[str] | None = None) -> int:
    parser = runtime_cli.build_parser((runtime_cli.register, export_cli.register, register), __doc__)
    return runtime_cli.main(argv, parser)


if __name__ == "__main__":
    sys.exit(main())
