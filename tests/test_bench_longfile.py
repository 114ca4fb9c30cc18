"""The long-file bench's bookkeeping (no timing): statistics deltas, ratios and goals, the markdown section."""
from __future__ import annotations

from funasr_triton_tools.bench_longfile import (MARK_BEGIN, MARK_END, _label, _stats_delta, parse_minutes,
                                                 render_section, replace_section, summarize_long)


def _model(requests, executions, infer_s, queue_s=0.0):
    return {"requests": requests, "inferences": requests, "executions": executions, "queue_s": queue_s,
            "compute_input_s": 0.01, "compute_infer_s": infer_s, "compute_output_s": 0.01,
            "mean_batch": round(requests / executions, 2)}


def _served(audio_s, wall_s, rss_mb, uploads=1):
    compute = 0.8 * wall_s
    return {"uploads": uploads, "audio_s": audio_s * uploads, "wall_s": wall_s, "throughput_x": audio_s * uploads / wall_s,
            "first_delta_s": 3.0, "first_delta_after_upload_s": 2.5, "upload_s": 0.5, "deltas": 40, "units": 2700,
            "rss": {"idle_mb": 900.0, "peak_mb": 900.0 + rss_mb, "above_idle_mb": rss_mb, "frontend_above_idle_mb": 20.0,
                    "triton_above_idle_mb": rss_mb - 20.0},
            "models": {"paraformer": _model(120, 40, compute * 0.9, 2.0), "punc": _model(121, 121, compute * 0.1)},
            "frontend": {"decode_wait_s": 1.0, "triton_wait_s": wall_s - 1.0},
            "cpu": {"frontend_cpu_s": 5.0, "triton_cpu_s": 95.0, "frontend_share": 0.05,
                    "machine": {"machine_busy_cores": 2.0, "bench_cores": 1.0, "other_cores": 1.0, "steal_cores": 0.0}},
            "overhead": {"model_compute_s": compute, "overhead_s": wall_s - compute, "share": 0.2} if uploads == 1 else None,
            "sample_text": "今天"}


def _baseline(audio_s, wall_s):
    return {"audio_s": audio_s, "wall_s": wall_s, "throughput_x": audio_s / wall_s, "first_result_s": wall_s,
            "units": 2650, "segments": 300, "peak_rss_mb": 1500.0, "rss_above_idle_mb": 600.0}


def recorded() -> dict:
    long = {
        "files": {"10 min": {"path": ".cache/bench/audio/long-10min.mp3", "audio_s": 600.0, "mp3_mb": 3.4},
                  "1 h": {"path": ".cache/bench/audio/long-60min.mp3", "audio_s": 3600.0, "mp3_mb": 20.6},
                  "4 h": {"path": ".cache/bench/audio/long-240min.mp3", "audio_s": 14400.0, "mp3_mb": 82.4}},
        "memory_source": "test",
        "served": {"files": {"10 min": _served(600, 60.0, 250.0), "1 h": _served(3600, 300.0, 310.0)}},
        "funasr_onnx": {"files": {"10 min": _baseline(600, 80.0), "1 h": {"error": "MemoryError: boom"}}},
        "automodel": {"error": "worker automodel exited with code 1 and wrote no result"},
        "memory": {"files": {"1 h": _served(3600, 20.0, 320.0), "4 h": _served(14400, 80.0, 330.0),
                             "4x 1 h": _served(3600, 70.0, 1000.0, uploads=4)}, "parallel": 4},
        "total_s": 1800.0,
    }
    long["summary"] = summarize_long(long)
    return long


def test_minutes_and_labels():
    assert parse_minutes("10, 60,240") == [10.0, 60.0, 240.0]
    assert parse_minutes("") == []
    assert [_label(m) for m in (2, 10, 60, 240, 0.5)] == ["2 min", "10 min", "1 h", "4 h", "0.5 min"]


def test_stats_delta_keeps_models_that_ran_with_their_mean_batch():
    before = {"paraformer": _model(10, 5, 1.0), "punc": _model(3, 3, 0.1)}
    after = {"paraformer": _model(40, 15, 4.0), "punc": _model(3, 3, 0.1), "asr": _model(30, 30, 9.0)}
    delta = _stats_delta(before, after)
    assert set(delta) == {"paraformer", "asr"}
    assert delta["paraformer"]["requests"] == 30 and delta["paraformer"]["executions"] == 10
    assert delta["paraformer"]["mean_batch"] == 3.0
    assert delta["paraformer"]["compute_infer_s"] == 3.0


def test_summary_ratios_and_goals():
    s = recorded()["summary"]
    assert s["ratios"]["10 min"] == {"vs_funasr_onnx": round(10.0 / 7.5, 2)}
    assert s["ratios"]["1 h"] == {}  # funasr-onnx failed on it, AutoModel never ran
    goals = s["goals"]
    assert goals["served_vs_funasr_onnx_at_1h"]["value"] is None
    assert goals["overhead_share"]["value"] == {"10 min": 0.2, "1 h": 0.2}
    assert goals["rss_above_idle_mb_one_request"]["value"] == {"1 h": 320.0, "4 h": 330.0}
    assert goals["rss_above_idle_mb_per_request_concurrent"]["value"] == {"4x 1 h": 250.0}


def test_section_renders_every_table_and_failure():
    text = "\n".join(render_section(recorded(), ["Machine: test"], cores=2))
    assert text.startswith(MARK_BEGIN) and text.endswith(MARK_END)
    assert "| 10 min | served (HTTP, `cpu`) | 60.0 | 10.0× | 3.0 (2.5 after the upload) | 1.33× / — | 250 (1150) | 2700 |" in text
    assert "| 10 min | funasr-onnx | 80.0 | 7.5× | 80.0 (no streaming) | | 600 (1500) | 2650 |" in text
    assert "| 1 h | funasr-onnx | failed: `MemoryError: boom`" in text
    assert "| 1 h | AutoModel | failed: `worker automodel exited" in text
    assert "### Where the time goes (1 h, served)" in text
    assert "| `paraformer` | 120 | 40 | 3.00 | 2.0 |" in text
    assert "| 4x 1 h | 900 | 1000 | 20 | 980 | 250 |" in text
    assert "| frontend + Triton overhead share of end-to-end time | ≤ 5 % | 10 min: 20.0 %, 1 h: 20.0 % |" in text
    assert "Machine: test" in text
    assert "kept on average 1.00 and at worst 1.00 of the 2 cores busy" in text


def test_full_bench_markdown_carries_the_section():
    import json
    from pathlib import Path

    from funasr_triton_tools.bench_report import render_markdown

    result = json.loads((Path(__file__).resolve().parents[1] / "bench/results/20261121T083918Z.json").read_text())
    assert MARK_BEGIN not in render_markdown(result, "bench/results/x.json")
    result["long"] = recorded()
    text = render_markdown(result, "bench/results/x.json")
    assert text.count(MARK_BEGIN) == 1 and "## Long files" in text and text.index(MARK_END) < text.index("## Machine")


def test_full_bench_without_long_runs_keeps_the_long_section():
    """`make bench` after `make bench-long`: the regenerated document keeps the long-file section, once, before
    the machine section; a document with its own long runs keeps its own."""
    from funasr_triton_tools.bench_longfile import carry_section

    section = "\n".join([MARK_BEGIN, "## Long files", "old numbers", MARK_END])
    old = "# Benchmark\n\n## Results\nold\n\n" + section + "\n\n## Machine\nold machine\n"
    new = "# Benchmark\n\n## Results\nnew\n\n## Machine\nnew machine\n"
    out = carry_section(new, old)
    assert out.count(MARK_BEGIN) == 1 and "old numbers" in out and "new machine" in out and "old machine" not in out
    assert out.index("## Results") < out.index(MARK_BEGIN) < out.index(MARK_END) < out.index("## Machine")
    own = new.replace("## Machine", section.replace("old", "own") + "\n\n## Machine")
    assert carry_section(own, old) == own
    assert carry_section(new, "# no section\n") == new


def test_section_replaced_in_place_or_appended():
    doc = "# Benchmark\n\nshort clips\n"
    first = replace_section(doc, "\n".join(render_section(recorded())))
    assert first.startswith(doc.rstrip("\n")) and first.count(MARK_BEGIN) == 1
    again = replace_section(first + "\n## Machine\n", f"{MARK_BEGIN}\nnew\n{MARK_END}")
    assert again.count(MARK_BEGIN) == 1 and "\nnew\n" in again and again.endswith("## Machine\n")
    assert "short clips" in again and "Where the time goes" not in again


def test_pss_counts_shared_memory_once():
    """Summed RSS counts pages that two processes share twice (the python backend's shared-memory pool
    between tritonserver and its stubs); the PSS figure counts them once."""
    import os
    import subprocess
    import sys
    import time
    from multiprocessing import shared_memory

    import numpy as np

    from funasr_triton_tools.bench_longfile import TreesRss

    size = 64 * 2**20
    shm = shared_memory.SharedMemory(create=True, size=size)
    child = None
    try:
        code = ("import sys, numpy as np; from multiprocessing import shared_memory as s; "
                f"m = s.SharedMemory(name={shm.name!r}); a = np.ndarray(({size},), np.uint8, m.buf); "
                "from multiprocessing import resource_tracker as t; t.unregister(m._name, 'shared_memory'); "
                "a[::4096] = 1; print('ok', flush=True); sys.stdin.read()")
        with TreesRss({"me": os.getpid()}, interval_s=0.05) as meter:
            np.ndarray((size,), np.uint8, shm.buf)[::4096] = 1  # this process touches every page
            child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert child.stdout.readline().strip() == b"ok"  # ... and so does its child
            time.sleep(0.5)
        r = meter.summary()
    finally:
        if child is not None:
            child.stdin.close()
            child.wait(timeout=30)
        shm.close()
        shm.unlink()
    mb = size / 2**20
    assert r["above_idle_mb"] > 1.7 * mb  # counted in both processes
    assert 0.8 * mb < r["pss_above_idle_mb"] < 1.4 * mb + (r["above_idle_mb"] - 2 * mb)


def test_machine_info_marks_a_run_whose_tree_changed_dirty():
    """A bench records the tree it started on: dirty if it was dirty then or at the end, or if a commit since
    touched more than the bench's own outputs."""
    from funasr_triton_tools.bench_common import _git, machine_info

    now = machine_info()
    assert machine_info(start=now)["git_dirty"] == now["git_dirty"]
    assert machine_info(start={**now, "git_dirty": True})["git_dirty"] is True
    older = _git("rev-list", "--max-count=1", "HEAD~20", "--", "model_code")  # a commit before code changed
    out = machine_info(start={**now, "git_commit": older, "git_dirty": False})
    assert out["git_commit"] == older and out["git_dirty"] is not False
