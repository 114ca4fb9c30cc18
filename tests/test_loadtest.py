"""A short headless locust run (loadtest/) against the embedded stack with the test models: zero failures."""
from __future__ import annotations

import json

from loadtest.run import main


def test_headless_loadtest_all_user_classes(frontend, triton, tmp_path):
    out = tmp_path / "run"
    rc = main(["--users", "3", "--spawn-rate", "3", "--run-time", "30s", "--host", frontend.base_url,
               "--triton", triton.grpc_url, "--clips", "2:2,4:1", "--stop-timeout", "30", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0, (out / "summary.md").read_text()
    assert summary["failures"] == 0 and summary["failure_kinds"] == []
    assert set(summary["classes"]) == {"OpenAIUser", "AliyunUser", "TritonGrpcUser"}
    for name, k in summary["classes"].items():
        assert k["requests"] > 0 and k["failures"] == 0, (name, k)
        assert k["p95_s"] is not None and k["rtf"] > 0
    assert summary["audio_s_per_s"] > 0
    # locust's own CSV (written when --run-time ends, before the last in-flight requests finish) roughly agrees
    assert 0.9 * summary["requests"] <= summary["locust_totals"]["requests"] <= summary["requests"]
    assert summary["locust_totals"]["failures"] == 0
    assert (out / "locust_stats.csv").exists() and (out / "summary.md").read_text().startswith("# Load test")


def test_capacity_steps_users_and_reports_sustainable_rate(frontend, triton, tmp_path):
    from loadtest.capacity import main as capacity

    out = tmp_path / "capacity"
    rc = capacity(["--slo-s", "60", "--step-time", "8s", "--max-users", "2", "--host", frontend.base_url,
                   "--triton", triton.grpc_url, "--classes", "openai,triton", "--clips", "2:1", "--out", str(out)])
    r = json.loads((out / "capacity.json").read_text())
    assert rc == 0, (out / "capacity.md").read_text()
    assert [s["users"] for s in r["steps"]] == [1, 2] and all(s["sustainable"] for s in r["steps"])
    assert r["sustainable_users"] == 2 and r["sustainable_audio_s_per_s"] > 0 and r["limit_reached"]
    assert (out / "users-2" / "summary.json").exists()
    assert "Sustainable: 2 users" in (out / "capacity.md").read_text()


def test_runner_stops_a_locust_that_lingers_after_writing_results(tmp_path, monkeypatch):
    import subprocess
    import sys

    import loadtest.run as run

    monkeypatch.setattr(run, "EXIT_GRACE_S", 0.5)
    stats = tmp_path / "audio_stats.json"
    proc = subprocess.Popen([sys.executable, "-c", f"open({str(stats)!r}, 'w').write('{{}}'); import time; time.sleep(60)"])
    assert run._supervise(proc, stats, budget_s=30) is True and proc.returncode is not None
    assert run.parse_duration("1m30s") == 90 and run.parse_duration("0") == 0
