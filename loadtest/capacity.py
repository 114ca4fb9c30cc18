"""Capacity search: step users 1, 2, 4, 8, ... with short headless runs until p95 latency exceeds the SLO.

    python -m loadtest.capacity --slo-s 5 --step-time 60s --max-users 64 --host http://127.0.0.1:8000 \
        --triton 127.0.0.1:8001 --out loadtest/results/capacity-$(date +%Y%m%d-%H%M%S)

A step is sustainable when it had no failures and its p95 (over all requests, or per user class with
--per-class) is within --slo-s. The search stops at the first unsustainable step (or --max-users) and reports
the last sustainable step's users and audio-seconds per second: that is what one deployment (one Triton +
its frontends, e.g. one GPU) sustains for this audio mix. Writes capacity.json and capacity.md into OUT, and
each step's own run (CSV + summary) into OUT/users-<N>/.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .run import HERE, run_locust


def step_p95(summary: dict, per_class: bool) -> float | None:
    if per_class:
        values = [k["p95_s"] for k in summary["classes"].values() if k["p95_s"] is not None]
        return max(values) if values else None
    return summary["p95_s"]


def search(*, slo_s: float, step_time: str, max_users: int, host: str, triton: str | None, out: Path,
           classes: str, per_class: bool = False, spawn_rate: float | None = None, env: dict | None = None) -> dict:
    steps, best, users = [], None, 1
    while users <= max_users:
        s = run_locust(users=users, spawn_rate=spawn_rate or users, run_time=step_time, host=host, triton=triton,
                       out=out / f"users-{users}", classes=classes, env=env, quiet=True)
        p95 = step_p95(s, per_class)
        ok = s["failures"] == 0 and s["requests"] > 0 and p95 is not None and p95 <= slo_s
        steps.append({"users": users, "requests": s["requests"], "failures": s["failures"], "p50_s": s["p50_s"],
                      "p95_s": p95, "p99_s": s["p99_s"], "audio_s_per_s": s["audio_s_per_s"], "rtf": s["rtf"],
                      "requests_per_s": s["requests_per_s"], "sustainable": ok})
        print(f"users={users:4d} requests={s['requests']:6d} failures={s['failures']:4d} p95={p95} s "
              f"audio-s/s={s['audio_s_per_s']} -> {'ok' if ok else 'over SLO'}", flush=True)
        if not ok:
            break
        best = steps[-1]
        users *= 2
    result = {"slo_s": slo_s, "per_class": per_class, "step_time": step_time, "host": host, "triton": triton,
              "classes": classes, "steps": steps,
              "sustainable_users": best["users"] if best else 0,
              "sustainable_audio_s_per_s": best["audio_s_per_s"] if best else 0.0,
              "limit_reached": bool(steps) and steps[-1]["sustainable"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity.json").write_text(json.dumps(result, indent=2))
    (out / "capacity.md").write_text(to_markdown(result))
    return result


def to_markdown(r: dict) -> str:
    lines = [f"# Capacity (p95 ≤ {r['slo_s']} s{' per user class' if r['per_class'] else ''}, "
             f"{r['step_time']} per step)", "",
             f"**Sustainable: {r['sustainable_users']} users, {r['sustainable_audio_s_per_s']} audio-seconds per "
             f"second**" + (" (the largest step tried still met the SLO: raise --max-users)" if r["limit_reached"]
                            else ""), "",
             "| users | requests | failures | p50 s | p95 s | p99 s | audio s/s | RTF | within SLO |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in r["steps"]:
        lines.append(f"| {s['users']} | {s['requests']} | {s['failures']} | {s['p50_s']} | {s['p95_s']} | {s['p99_s']} "
                     f"| {s['audio_s_per_s']} | {s['rtf']} | {'yes' if s['sustainable'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.capacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slo-s", type=float, required=True, help="p95 latency objective in seconds")
    p.add_argument("--step-time", default="60s", help="run time of each step")
    p.add_argument("--max-users", type=int, default=64)
    p.add_argument("--per-class", action="store_true", help="require every user class's p95 within the SLO")
    p.add_argument("--host", default="http://127.0.0.1:8000")
    p.add_argument("--triton", default="127.0.0.1:8001", help="Triton gRPC host:port ('' to skip the gRPC user)")
    p.add_argument("--classes", default="openai,aliyun,triton")
    p.add_argument("--clips", default=None, help='clip lengths and weights "SECONDS:WEIGHT,..."')
    p.add_argument("--audio-dir", default=None)
    p.add_argument("--out", default=None, help="output directory (default loadtest/results/capacity-<timestamp>)")
    a = p.parse_args(argv)
    env = {k: v for k, v in (("LOADTEST_CLIPS", a.clips), ("LOADTEST_AUDIO_DIR", a.audio_dir)) if v}
    out = Path(a.out or HERE / "results" / f"capacity-{time.strftime('%Y%m%d-%H%M%S')}")
    r = search(slo_s=a.slo_s, step_time=a.step_time, max_users=a.max_users, host=a.host, triton=a.triton or None,
               out=out, classes=a.classes, per_class=a.per_class, env=env)
    print(to_markdown(r))
    print(f"wrote {out / 'capacity.json'} and {out / 'capacity.md'}")
    return 0 if r["sustainable_users"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
