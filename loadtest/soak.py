"""Soak: mixed traffic for a long time against a running stack, watching errors, memory and latency.

    python -m loadtest.soak --host http://127.0.0.1:8000 --triton 127.0.0.1:8001 --duration 30m \
        --out loadtest/results/soak-$(date +%Y%m%d-%H%M%S)          # what `make soak` runs

`--concurrency` workers each loop over the surfaces in turn (OpenAI, Alibaba NLS REST, `/api`, the FunASR
WebSocket stream, the NLS WebSocket stream, Triton gRPC `pipeline`), one request or stream at a time, with the
same clip. Every `--sample-s` seconds the resident memory (RSS) of the frontend process (the one listening on
the --host port) and of the Triton process tree (the tritonserver listening on the --triton port and all its
children: the python-backend stubs) is recorded; give --frontend-pid / --triton-pid when the stack runs
elsewhere (e.g. in containers: then only the errors and latencies are judged).

Writes OUT/soak.json and OUT/soak.md: requests, errors (with the first few failures), latency percentiles per
surface, the RSS series and its growth after warm-up (median of the last 3 samples vs the first 3 after
--warmup). Passes (exit 0) with 0 errors and RSS growth < --max-growth-pct (5) for both; otherwise exit 1.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from loadtest.run import parse_duration
from loadtest.soak_clients import SURFACES, Clients, Outcome, speech_clip

log = logging.getLogger("soak")


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port (psutil; processes of this user)."""
    import psutil

    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None


def tree_rss(pid: int, children: bool) -> int | None:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *(root.children(recursive=True) if children else [])]
    except psutil.NoSuchProcess:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def growth_pct(series: list[tuple[float, int]], warmup_s: float) -> float | None:
    """RSS growth after warm-up: median of the last 3 samples vs median of the first 3 after warm-up, in %."""
    after = [rss for t, rss in series if t >= warmup_s and rss]
    if len(after) < 4:
        return None
    first, last = statistics.median(after[:3]), statistics.median(after[-3:])
    return round((last - first) / first * 100, 2)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "max": round(float(a.max()), 3)}


class Soak:
    def __init__(self, clients: Clients, surfaces: list[str], duration_s: float, concurrency: int, warmup_s: float,
                 sample_s: float, frontend_pid: int | None, triton_pid: int | None):
        self.clients, self.surfaces = clients, surfaces
        self.duration_s, self.concurrency, self.warmup_s, self.sample_s = duration_s, concurrency, warmup_s, sample_s
        self.frontend_pid, self.triton_pid = frontend_pid, triton_pid
        self.outcomes: list[tuple[float, Outcome]] = []
        self.rss: dict[str, list[tuple[float, int]]] = {"frontend": [], "triton": []}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _worker(self, index: int, t0: float) -> None:
        i = index
        while not self._stop.is_set() and time.monotonic() - t0 < self.duration_s:
            surface = self.surfaces[i % len(self.surfaces)]
            i += 1
            out = self.clients.call(surface)
            with self._lock:
                self.outcomes.append((time.monotonic() - t0, out))
            if not out.ok:
                log.warning("soak failure %s status=%s code=%s %s", surface, out.status, out.code, out.detail[:200])

    def _sample(self, t0: float) -> None:
        while True:
            t = time.monotonic() - t0
            if self.frontend_pid:
                self.rss["frontend"].append((round(t, 1), tree_rss(self.frontend_pid, children=False) or 0))
            if self.triton_pid:
                self.rss["triton"].append((round(t, 1), tree_rss(self.triton_pid, children=True) or 0))
            if self._stop.wait(self.sample_s) or t >= self.duration_s:
                return

    def run(self) -> dict:
        t0 = time.monotonic()
        sampler = threading.Thread(target=self._sample, args=(t0,), daemon=True)
        sampler.start()
        workers = [threading.Thread(target=self._worker, args=(i, t0), daemon=True) for i in range(self.concurrency)]
        for w in workers:
            w.start()
        try:
            for w in workers:
                w.join()
        except KeyboardInterrupt:
            log.warning("interrupted: reporting what ran")
        finally:
            self._stop.set()
            for w in workers:
                w.join(self.clients.timeout_s + 30)
            sampler.join(10)
        return self.report(time.monotonic() - t0)

    def report(self, wall_s: float) -> dict:
        by_surface: dict[str, list[Outcome]] = defaultdict(list)
        for _, out in self.outcomes:
            by_surface[out.surface].append(out)
        requests = {}
        for surface in self.surfaces:
            outs = by_surface.get(surface, [])
            requests[surface] = {"requests": len(outs), "errors": sum(not o.ok for o in outs),
                                 **percentiles([o.seconds for o in outs if o.ok])}
        all_ok = [o.seconds for _, o in self.outcomes if o.ok]
        errors = [{"t_s": round(t, 1), "surface": o.surface, "status": o.status, "code": o.code,
                   "detail": o.detail[:300]} for t, o in self.outcomes if not o.ok]
        growth = {name: growth_pct(series, self.warmup_s) for name, series in self.rss.items()}
        return {"duration_s": round(wall_s, 1), "concurrency": self.concurrency, "warmup_s": self.warmup_s,
                "surfaces": self.surfaces, "requests": len(self.outcomes), "errors": len(errors),
                "latency_s": percentiles(all_ok), "per_surface": requests, "first_errors": errors[:20],
                "rss_bytes": self.rss, "rss_growth_pct": growth,
                "pids": {"frontend": self.frontend_pid, "triton": self.triton_pid}}


def judge(report: dict, max_growth_pct: float) -> list[str]:
    failures = []
    if report["errors"]:
        failures.append(f"{report['errors']} errors")
    if report["requests"] == 0:
        failures.append("no request completed")
    for name, growth in report["rss_growth_pct"].items():
        if report["pids"][name] is None:
            continue
        if growth is None:
            failures.append(f"{name}: too few RSS samples after warm-up")
        elif growth >= max_growth_pct:
            failures.append(f"{name} RSS grew {growth} % after warm-up (limit {max_growth_pct} %)")
    return failures


def markdown(report: dict) -> str:
    mib = 1024 * 1024
    lines = [f"# Soak: {'PASS' if report['passed'] else 'FAIL'}", "",
             f"{report['duration_s']:.0f} s, {report['concurrency']} workers, warm-up {report['warmup_s']:.0f} s; "
             f"{report['requests']} requests/streams, {report['errors']} errors; latency of successful calls "
             f"p50 {report['latency_s']['p50']} s, p95 {report['latency_s']['p95']} s, "
             f"p99 {report['latency_s']['p99']} s.", ""]
    if report["failures"]:
        lines += ["Failed: " + "; ".join(report["failures"]), ""]
    lines += ["| surface | requests | errors | p50 s | p95 s | p99 s | max s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for surface, r in report["per_surface"].items():
        lines.append(f"| {surface} | {r['requests']} | {r['errors']} | {r['p50']} | {r['p95']} | {r['p99']} | "
                     f"{r['max']} |")
    lines += ["", "| process | RSS after warm-up (MiB) | RSS at the end (MiB) | growth after warm-up |",
              "|---|---:|---:|---:|"]
    for name, series in report["rss_bytes"].items():
        after = [rss for t, rss in series if t >= report["warmup_s"]]
        if after:
            lines.append(f"| {name} | {after[0] / mib:.0f} | {after[-1] / mib:.0f} | "
                         f"{report['rss_growth_pct'][name]} % |")
    if report["first_errors"]:
        lines += ["", "First errors:", ""] + [f"- {e['t_s']} s {e['surface']}: status {e['status']}, code "
                                              f"{e['code']}: {e['detail'][:160]}" for e in report["first_errors"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="http://127.0.0.1:8000", help="the frontend")
    p.add_argument("--triton", default="127.0.0.1:8001", help="Triton gRPC host:port ('' = no gRPC surface)")
    p.add_argument("--duration", default="30m", help="e.g. 30m, 3m, 90s")
    p.add_argument("--warmup", default=None, help="excluded from the RSS growth (default: a sixth of the duration, "
                   "at least 30 s)")
    p.add_argument("--concurrency", type=int, default=3)
    p.add_argument("--surfaces", default=",".join(SURFACES))
    p.add_argument("--clip-seconds", type=float, default=6.0)
    p.add_argument("--pace-s", type=float, default=0.02, help="pause between 100 ms WebSocket frames")
    p.add_argument("--sample-s", type=float, default=None, help="RSS sampling period (default: duration / 60)")
    p.add_argument("--timeout-s", type=float, default=120.0, help="per request/stream")
    p.add_argument("--token", default=None, help="API key, when the stack requires one")
    p.add_argument("--frontend-pid", type=int, default=None)
    p.add_argument("--triton-pid", type=int, default=None)
    p.add_argument("--max-growth-pct", type=float, default=5.0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    duration = parse_duration(args.duration)
    warmup = parse_duration(args.warmup) if args.warmup else max(30.0, duration / 6)
    surfaces = [s.strip() for s in args.surfaces.split(",") if s.strip()]
    unknown = set(surfaces) - set(SURFACES)
    if unknown:
        p.error(f"unknown surfaces {sorted(unknown)}; choose from {', '.join(SURFACES)}")
    if not args.triton:
        surfaces = [s for s in surfaces if s != "grpc"]
    port = int(args.host.rsplit(":", 1)[1].split("/")[0]) if args.host.count(":") == 2 else None
    frontend_pid = args.frontend_pid or (listening_pid(port) if port else None)
    triton_pid = args.triton_pid or (listening_pid(int(args.triton.rsplit(":", 1)[1])) if args.triton else None)
    clients = Clients(args.host, speech_clip(args.clip_seconds), triton=args.triton or None,
                      timeout_s=args.timeout_s, pace_s=args.pace_s, token=args.token)
    for surface in surfaces:  # the stack answers at all before the clock starts
        out = clients.call(surface)
        if not out.ok:
            log.error("%s does not work before the soak: status %s code %s %s", surface, out.status, out.code,
                      out.detail)
            return 2
    log.info("soak: %s for %.0f s (warm-up %.0f s), %d workers; frontend pid %s, triton pid %s", ",".join(surfaces),
             duration, warmup, args.concurrency, frontend_pid, triton_pid)
    soak = Soak(clients, surfaces, duration, args.concurrency, warmup, args.sample_s or max(2.0, duration / 60),
                frontend_pid, triton_pid)
    report = soak.run()
    report["failures"] = judge(report, args.max_growth_pct)
    report["passed"] = not report["failures"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (args.out / "soak.md").write_text(markdown(report))
    sys.stdout.write(markdown(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
