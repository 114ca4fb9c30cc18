"""The soak's short version (`make soak` runs 30 min): `python -m loadtest.soak` for SOAK_TEST_DURATION (default
3m) of mixed traffic (OpenAI, Alibaba REST, `/api`, FunASR and NLS WebSocket streams, Triton gRPC) against a
private frontend and this session's Triton, with the same checks: 0 errors, RSS growth of the frontend and of the
Triton process tree after warm-up < 5 %, and the JSON + markdown report written."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from loadtest.run import parse_duration
from tests.conftest import ROOT, start_frontend


def test_short_soak_has_no_errors_and_flat_memory(triton, tmp_path, cli_env):
    duration = os.environ.get("SOAK_TEST_DURATION", "3m")
    seconds = parse_duration(duration)
    fe = start_frontend(triton.grpc_url, tmp_path / "frontend")
    out = tmp_path / "soak"
    try:
        run = subprocess.run([sys.executable, "-m", "loadtest.soak", "--host", fe.base_url, "--triton", triton.grpc_url,
                              "--duration", duration, "--warmup", f"{max(30.0, seconds / 3):.0f}s",
                              "--concurrency", "3", "--sample-s", "5", "--out", str(out)],
                             cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=seconds + 600)
    finally:
        fe.stop()
    report = json.loads((out / "soak.json").read_text())
    md = (out / "soak.md").read_text()
    print("\n" + md)
    assert report["errors"] == 0, report["first_errors"]
    assert set(report["per_surface"]) == {"openai", "aliyun", "api", "funasr_ws", "nls_ws", "grpc"}
    assert all(r["requests"] >= 3 for r in report["per_surface"].values()), report["per_surface"]
    assert report["pids"]["frontend"] == fe.proc.pid
    assert report["pids"]["triton"] == triton.server.proc.pid
    for name in ("frontend", "triton"):
        growth = report["rss_growth_pct"][name]
        assert growth is not None and growth < 5.0, (name, growth, report["rss_bytes"][name])
    assert report["passed"] and run.returncode == 0, run.stderr[-3000:]
    assert "# Soak: PASS" in md
