"""`eval-diarization --compare-backends`: the served clustering and FunASR's cluster backend, side by side
on the same embeddings, on a one-minute synthetic meeting of two espeak-ng voices (README has the several-minute, 2-4 voice
numbers)."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.synth import write_wav


@pytest.fixture(scope="module")
def meeting(tmp_path_factory):
    from funasr_triton_tools.diarization_compare import synthetic_meeting

    root = tmp_path_factory.mktemp("meeting")
    (root / "audio").mkdir()
    (root / "rttm").mkdir()
    wav, turns = synthetic_meeting(2, 60, seed=2)
    write_wav(root / "audio" / "meeting.wav", wav)
    (root / "rttm" / "meeting.rttm").write_text(
        "".join(f"SPEAKER meeting 1 {a:.3f} {b - a:.3f} <NA> <NA> {s} <NA> <NA>\n" for a, b, s in turns))
    return root


def _compare(cli_env, meeting, *args):
    out = subprocess.run(["funasr-triton", "--log-level", "WARNING", "eval-diarization", "--compare-backends", "--json",
                          "--audio-dir", str(meeting / "audio"), "--rttm-dir", str(meeting / "rttm"), *args],
                         capture_output=True, text=True, env=cli_env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_compare_on_resemblyzer_embeddings(cli_env, meeting):
    """A trained speaker encoder separates the voices: our clustering finds them (low DER) and FunASR's
    backend ran on the same windows (it answers one speaker below 20 windows, so it must have more)."""
    pytest.importorskip("resemblyzer")
    report = _compare(cli_env, meeting, "--embeddings", "resemblyzer")
    f = report["files"][0]
    assert f["speakers"] == 2 and f["windows"] >= 20
    assert set(f["der"]) == {"ours+nearest", "ours+funasr", "funasr+nearest", "funasr+funasr"}
    ours, theirs = f["der"]["ours+nearest"], f["der"]["funasr+funasr"]
    assert ours["estimated"]["speakers"] == 2 and ours["estimated"]["der"] < 0.05
    assert theirs["estimated"]["speakers"] == 2 and theirs["estimated"]["der"] < 0.05


def test_compare_on_served_embeddings(triton, cli_env, meeting):
    """The same comparison on the served speaker model's embeddings (random-weight CAM++ here: the
    numbers mean nothing, the mechanics run)."""
    report = _compare(cli_env, meeting, "--embeddings", "served", "--url", triton.grpc_url)
    f = report["files"][0]
    assert f["windows"] >= 20
    for key, modes in f["der"].items():
        assert 0.0 <= modes["oracle"]["der"] <= 2.0 and modes["oracle"]["speakers"] == 2, key
