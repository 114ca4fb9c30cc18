"""Headless locust run + summary.

    python -m loadtest.run --users 4 --spawn-rate 2 --run-time 60s --host http://127.0.0.1:8000 \
        --triton 127.0.0.1:8001 --out loadtest/results/$(date +%Y%m%d-%H%M%S)

Runs locust headless with --csv into OUT, then writes OUT/summary.json and OUT/summary.md: requests, failures,
p50/p95/p99 per user class, audio-seconds per second (audio successfully transcribed per wall-clock second) and
RTF (processing seconds per audio second as seen by the client, i.e. mean latency / mean clip length).
Exit status: 0 when every request succeeded, 1 when some failed, 2 when locust itself failed to run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
CLASSES = {"openai": "OpenAIUser", "aliyun": "AliyunUser", "triton": "TritonGrpcUser"}


def parse_duration(text: str) -> float:
    total, matched = 0.0, False
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([hms]?)", text):
        matched = True
        total += float(value) * {"h": 3600, "m": 60, "s": 1, "": 1}[unit]
    if not matched:
        raise ValueError(f"bad duration {text!r} (e.g. 30s, 2m, 1h30m)")
    return total


def class_names(selected: str, triton: str | None) -> list[str]:
    keys = [k.strip() for k in selected.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CLASSES]
    if unknown:
        raise SystemExit(f"unknown user class(es) {unknown}; choose from {', '.join(CLASSES)}")
    if not triton:
        keys = [k for k in keys if k != "triton"]
    return [CLASSES[k] for k in keys]


STARTUP_S = 180.0      # locust start + generating the audio clips once
EXIT_GRACE_S = 20.0    # after the statistics are written, locust should be gone within this


def _supervise(proc: subprocess.Popen, stats_file: Path, budget_s: float) -> bool:
    """Wait for locust; kill it if it overruns its budget or lingers after writing its statistics.

    A greenlet killed inside a gRPC call (--stop-timeout 0) can leave the gevent-patched gRPC core hanging at
    interpreter exit after everything was written; the results are complete by then. Returns True if killed.
    """
    deadline, written_at = time.monotonic() + budget_s, None
    while proc.poll() is None:
        now = time.monotonic()
        if written_at is None and stats_file.exists():
            written_at = now
        if now > deadline or (written_at is not None and now - written_at > EXIT_GRACE_S):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return True
        time.sleep(0.2)
    return False


def run_locust(*, users: int, spawn_rate: float, run_time: str, host: str, triton: str | None, out: Path,
               classes: str = "openai,aliyun,triton", stop_timeout: str = "60s", env: dict | None = None,
               quiet: bool = False) -> dict:
    """One headless locust run into `out`; returns the summary (also written as summary.json / summary.md)."""
    out.mkdir(parents=True, exist_ok=True)
    names = class_names(classes, triton)
    if not names:
        raise SystemExit("no user classes to run")
    prefix = out / "locust"
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--users", str(users),
           "--spawn-rate", str(spawn_rate), "--run-time", run_time, "--host", host, "--csv", str(prefix),
           "--stop-timeout", stop_timeout, "--loglevel", "WARNING", "--only-summary", *names]
    run_env = dict(os.environ, **(env or {}))
    run_env["LOADTEST_AUDIO_STATS"] = str(out / "audio_stats.json")
    if triton:
        run_env["LOADTEST_TRITON_URL"] = triton
    stats_file = out / "audio_stats.json"
    stats_file.unlink(missing_ok=True)
    t0 = time.time()
    with open(out / "locust.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=run_env, stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parent)
        killed = _supervise(proc, stats_file, parse_duration(run_time) + parse_duration(stop_timeout) + STARTUP_S)
    wall = time.time() - t0
    if not stats_file.exists():
        tail = (out / "locust.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"locust exited with {proc.returncode} and wrote no statistics:\n{tail}")
    summary = summarize(json.loads(stats_file.read_text()), prefix, wall_s=wall)
    summary["config"] = {"users": users, "spawn_rate": spawn_rate, "run_time": run_time, "host": host,
                         "triton": triton, "classes": names, "locust_exit_code": proc.returncode,
                         "locust_killed": killed,
                         "command": " ".join(cmd)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    (out / "summary.md").write_text(to_markdown(summary))
    if not quiet:
        print(to_markdown(summary))
    return summary


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50_s": None, "p95_s": None, "p99_s": None, "mean_s": None, "max_s": None}
    a = np.asarray(values, dtype=float) / 1000.0
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50_s": round(float(p50), 3), "p95_s": round(float(p95), 3), "p99_s": round(float(p99), 3),
            "mean_s": round(float(a.mean()), 3), "max_s": round(float(a.max()), 3)}


def _read_failures(prefix: Path) -> list[dict]:
    path = Path(f"{prefix}_failures.csv")
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{"method": r.get("Method"), "name": r.get("Name"), "error": r.get("Error"),
                 "occurrences": int(r.get("Occurrences") or 0)} for r in csv.DictReader(f)]


def _read_locust_totals(prefix: Path) -> dict | None:
    path = Path(f"{prefix}_stats.csv")
    if not path.exists():
        return None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("Name") == "Aggregated":
                return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                        "requests_per_s": round(float(row["Requests/s"]), 3)}
    return None


def summarize(stats: dict, prefix: Path, wall_s: float) -> dict:
    started, stopped = stats.get("started"), stats.get("stopped")
    duration = (stopped - started) if started and stopped and stopped > started else wall_s
    classes, all_ms = {}, []
    total_req = total_fail = 0
    total_audio = 0.0
    for name, s in sorted(stats["classes"].items()):
        ms = s["response_ms"]
        all_ms += ms
        ok = s["requests"] - s["failures"]
        proc_s = sum(ms) / 1000.0
        classes[name] = {"requests": s["requests"], "failures": s["failures"], **_percentiles(ms),
                         "requests_per_s": round(s["requests"] / duration, 3) if duration else None,
                         "audio_s": round(s["audio_s"], 2),
                         "audio_s_per_s": round(s["audio_s"] / duration, 3) if duration else None,
                         "rtf": round(proc_s / s["audio_s"], 4) if ok and s["audio_s"] else None}
        total_req += s["requests"]
        total_fail += s["failures"]
        total_audio += s["audio_s"]
    total_proc = sum(all_ms) / 1000.0
    return {
        "duration_s": round(duration, 2),
        "requests": total_req, "failures": total_fail,
        "requests_per_s": round(total_req / duration, 3) if duration else None,
        "audio_s": round(total_audio, 2),
        "audio_s_per_s": round(total_audio / duration, 3) if duration else 0.0,
        "rtf": round(total_proc / total_audio, 4) if total_audio else None,
        **_percentiles(all_ms),
        "classes": classes,
        "clips": stats.get("clips", []),
        "locust_totals": _read_locust_totals(prefix),
        "failure_kinds": _read_failures(prefix),
    }


def _fmt(v) -> str:
    return "–" if v is None else str(v)


def to_markdown(s: dict) -> str:
    c = s.get("config", {})
    lines = [f"# Load test: {c.get('users', '?')} users, {c.get('run_time', '?')}", "",
             f"- host `{c.get('host')}`, Triton `{c.get('triton')}`; classes {', '.join(c.get('classes', []))}",
             "- clips: " + ", ".join(f"{x['name']} ({x['seconds']:.1f} s, weight {x['weight']:g})"
                                      for x in s.get("clips", [])),
             f"- duration {s['duration_s']} s; **{s['requests']} requests, {s['failures']} failures**; "
             f"**{s['audio_s_per_s']} audio-seconds per second**; RTF {_fmt(s['rtf'])}; "
             f"p50/p95/p99 {_fmt(s['p50_s'])}/{_fmt(s['p95_s'])}/{_fmt(s['p99_s'])} s", "",
             "| user class | requests | failures | req/s | p50 s | p95 s | p99 s | audio s/s | RTF |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, k in s["classes"].items():
        lines.append(f"| {name} | {k['requests']} | {k['failures']} | {_fmt(k['requests_per_s'])} | {_fmt(k['p50_s'])} "
                     f"| {_fmt(k['p95_s'])} | {_fmt(k['p99_s'])} | {_fmt(k['audio_s_per_s'])} | {_fmt(k['rtf'])} |")
    if s.get("failure_kinds"):
        lines += ["", "Failures:", ""] + [f"- {f['occurrences']}× {f['method']} {f['name']}: {f['error']}"
                                          for f in s["failure_kinds"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--spawn-rate", type=float, default=2.0)
    p.add_argument("--run-time", default="60s")
    p.add_argument("--host", default="http://127.0.0.1:8000", help="the HTTP frontend")
    p.add_argument("--triton", default="127.0.0.1:8001", help="Triton gRPC host:port ('' to skip the gRPC user)")
    p.add_argument("--classes", default="openai,aliyun,triton", help="comma-separated subset of openai,aliyun,triton")
    p.add_argument("--clips", default=None, help='clip lengths and weights "SECONDS:WEIGHT,..." (default 3:5,10:3,30:1)')
    p.add_argument("--audio-dir", default=None, help="use these audio files instead of generated clips")
    p.add_argument("--stop-timeout", default="60s",
                   help="let in-flight requests finish up to this long after --run-time (0: cut them off)")
    p.add_argument("--out", default=None, help="output directory (default loadtest/results/<timestamp>)")
    a = p.parse_args(argv)
    env = {}
    if a.clips:
        env["LOADTEST_CLIPS"] = a.clips
    if a.audio_dir:
        env["LOADTEST_AUDIO_DIR"] = a.audio_dir
    out = Path(a.out or HERE / "results" / time.strftime("%Y%m%d-%H%M%S"))
    try:
        s = run_locust(users=a.users, spawn_rate=a.spawn_rate, run_time=a.run_time, host=a.host,
                       triton=a.triton or None, out=out, classes=a.classes, stop_timeout=a.stop_timeout, env=env)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"wrote {out / 'summary.json'} and {out / 'summary.md'}")
    return 0 if s["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
