"""The `funasr-triton` command composed of each package's commands (funasr_triton_tools.cli), and the bench's
option checks, which answer before anything is exported or started."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from funasr_triton import cli as runtime_cli
from funasr_triton_tools import bench_workers, cli
from funasr_triton_tools.bench import Plan, plan

BIN = Path(sys.executable).parent
RUNTIME = ["triton", "frontend", "serve", "transcribe", "listen"]
ALL = RUNTIME + ["export", "verify", "bench", "eval-diarization"]


def subcommands(parser) -> list[str]:
    return list(parser._subparsers._group_actions[0].choices)


def test_the_command_has_every_package_s_commands():
    parser = runtime_cli.build_parser((runtime_cli.register, cli.export_cli.register, cli.register), cli.__doc__)
    assert subcommands(parser) == ALL
    assert subcommands(runtime_cli.build_parser()) == RUNTIME  # `python -m funasr_triton.cli`: the runtime alone


def test_installed_script_is_the_composed_command():
    out = subprocess.run([str(BIN / "funasr-triton"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "{" + ",".join(ALL) + "}" in out.stdout


@pytest.mark.parametrize("argv, message", [
    (["--requests", "0"], "--requests and every --concurrency must be >= 1"),
    (["--concurrency", "1,0"], "--requests and every --concurrency must be >= 1"),
    (["--streams", "four"], "--streams a list of counts >= 0"),
    (["--streams", "-2"], "--streams a list of counts >= 0"),
    (["--skip-offline", "--streams", "0"], "--skip-offline with --streams 0 leaves nothing to measure"),
])
def test_bench_refuses_options_that_measure_nothing(argv, message, capsys):
    assert cli.main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_bench_plan_from_options():
    args = runtime_cli.build_parser((cli.register,)).parse_args(
        ["bench", "--profiles", "cpu, cpu-int8", "--concurrency", "1,4", "--requests", "3", "--streams", "0,20,0,4"])
    assert plan(args) == Plan(["cpu", "cpu-int8"], [1, 4], 3, [20, 4], False)


def test_every_worker_the_bench_starts_is_registered():
    assert set(bench_workers.WORKERS) == {"prepare", "automodel", "funasr-onnx", "streaming-automodel",
                                          "streaming-funasr-onnx", "long-baseline"}
