"""Entry point of the bench's child processes: `python -m funasr_triton_tools.bench_workers WORKER SPEC.json
OUT.json` (bench_common.run_worker starts it), so each baseline's peak RSS is its own.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from . import bench_longfile, bench_offline, bench_prepare, bench_streaming
from .bench_common import error_text

WORKERS = {**bench_prepare.WORKERS, **bench_offline.WORKERS, **bench_streaming.WORKERS, **bench_longfile.WORKERS}


def _quiet_logging() -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[bench:%(name)s] %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]  # funasr's logging.basicConfig() becomes a no-op
    root.setLevel(logging.ERROR)


def worker_main(argv: list[str]) -> int:
    """WORKER SPEC.json OUT.json: run the worker on the spec, write its result (and peak RSS) as JSON."""
    name, spec_path, out_path = argv
    _quiet_logging()
    spec = json.loads(Path(spec_path).read_text())
    try:
        import resource

        with open(os.devnull, "w") as devnull:  # funasr prints banners on stdout
            sys.stdout = devnull
            result = WORKERS[name](spec)
            sys.stdout = sys.__stdout__
        result["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except Exception as e:  # noqa: BLE001
        sys.stdout = sys.__stdout__
        result = {"error": error_text(e), "traceback": traceback.format_exc()[-3000:]}
    Path(out_path).write_text(json.dumps(result, ensure_ascii=False, indent=2))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
