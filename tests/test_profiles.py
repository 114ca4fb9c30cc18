"""Profiles from one source: the committed configs/<profile>.pbtxt equal the rendering of the per-model templates
with the profile table (frontend/funasr_triton/profiles.py), the rendering is strict, and `--profile auto`
picks from the memory nvidia-smi reports (a fake nvidia-smi on PATH), or `cpu` without one."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from funasr_triton import profiles
from funasr_triton.profiles import ProfileError, choose, render, resolve, stale

ROOT = Path(__file__).resolve().parents[1]
REPO = ROOT / "model_repository"


def test_committed_configs_equal_the_rendering():
    assert stale(REPO) == [], "run `make configs` after editing a template or the table"


def test_every_profile_config_comes_from_a_template():
    rendered = render(REPO)
    committed = {p.relative_to(REPO) for p in REPO.glob("*/configs/*.pbtxt")}
    assert committed == set(rendered)
    # the gpu-* files of a model differ only where the table's slots go
    assert {p.name for p in rendered if p.parts[0] == "paraformer"} == {"cpu-int8.pbtxt", "gpu-6gb.pbtxt", "gpu-8gb.pbtxt",
                                                                        "gpu-12gb.pbtxt", "gpu-16gb.pbtxt"}
    assert "max_batch_size: 8\n" in rendered[Path("paraformer/configs/gpu-6gb.pbtxt")]
    assert 'value: "3221225472"' in rendered[Path("paraformer/configs/gpu-16gb.pbtxt")]


def test_make_configs_check_passes():
    r = subprocess.run(["make", "-s", "configs-check", f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": f"{ROOT / 'frontend'}"})
    assert r.returncode == 0, r.stderr


def tiny_repo(tmp_path: Path, text: str, name: str = "gpu.pbtxt.in") -> Path:
    configs = tmp_path / "m" / "configs"
    configs.mkdir(parents=True)
    (configs / name).write_text(text)
    return tmp_path


TABLE = {"cpu": {"template": "cpu", "vram_gib": None, "slots": {}},
         "gpu-8gb": {"template": "gpu", "vram_gib": 8, "slots": {"batch": 16}}}


def test_rendering_fills_slots_and_the_profile_name(tmp_path):
    repo = tiny_repo(tmp_path, "# ${profile}\nmax_batch_size: ${batch}\n")
    assert render(repo, TABLE) == {Path("m/configs/gpu-8gb.pbtxt"): "# gpu-8gb\nmax_batch_size: 16\n"}


def test_a_slot_missing_from_the_table_is_an_error(tmp_path):
    repo = tiny_repo(tmp_path, "max_batch_size: ${batch}\ncount: ${instances}\n")
    with pytest.raises(ProfileError, match=r"\$\{instances\} has no value"):
        render(repo, TABLE)


def test_an_empty_value_is_an_error(tmp_path):
    repo = tiny_repo(tmp_path, "max_batch_size: ${batch}\n")
    table = {**TABLE, "gpu-8gb": {**TABLE["gpu-8gb"], "slots": {"batch": ""}}}
    with pytest.raises(ProfileError, match="empty"):
        render(repo, table)


def test_a_table_value_no_template_reads_is_an_error(tmp_path):
    repo = tiny_repo(tmp_path, "max_batch_size: 4\n")
    with pytest.raises(ProfileError, match="no template reads slot"):
        render(repo, TABLE)


def test_a_template_without_a_profile_is_an_error(tmp_path):
    repo = tiny_repo(tmp_path, "x\n", name="tpu.pbtxt.in")
    with pytest.raises(ProfileError, match="no profile"):
        render(repo, TABLE)


def test_a_hand_edited_config_is_reported(tmp_path):
    repo = tiny_repo(tmp_path, "max_batch_size: ${batch}\n")
    (repo / "m/configs/gpu-8gb.pbtxt").write_text("max_batch_size: 17\n")
    (repo / "m/configs/gpu-4gb.pbtxt").write_text("stray\n")
    assert stale(repo, TABLE) == ["m/configs/gpu-8gb.pbtxt: differs from its template's rendering",
                                  "m/configs/gpu-4gb.pbtxt: no template renders it"]


# --- auto ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("memory, expected", [
    (None, "cpu"), ([], "cpu"), ([4096], "cpu"), ([5600], "cpu"),
    ([6144], "gpu-6gb"), ([8192], "gpu-8gb"), ([7980], "gpu-8gb"), ([11264], "gpu-8gb"), ([12288], "gpu-12gb"),
    ([15360], "gpu-16gb"), ([81920], "gpu-16gb"), ([24576, 6144], "gpu-6gb"),
])
def test_choose(memory, expected):
    assert choose(memory) == expected


def fake_nvidia_smi(bin_dir: Path, body: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return bin_dir


def path_without_nvidia_smi(extra: Path | None = None) -> str:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "nvidia-smi").exists()]
    return os.pathsep.join(([str(extra)] if extra else []) + dirs)


@pytest.mark.parametrize("output, expected", [
    ("8192", "gpu-8gb"), ("15360", "gpu-16gb"), ("12288\n6144", "gpu-6gb"), ("4096", "cpu"), ("garbage", "cpu"),
])
def test_auto_with_a_fake_nvidia_smi(tmp_path, monkeypatch, caplog, output, expected):
    bin_dir = fake_nvidia_smi(tmp_path / "bin", f"printf '{output}\\n'")
    monkeypatch.setenv("PATH", path_without_nvidia_smi(bin_dir))
    with caplog.at_level(logging.INFO, logger="funasr_triton.profiles"):
        assert resolve("auto") == expected
    assert any("profile auto" in r.getMessage() or "nvidia-smi" in r.getMessage() for r in caplog.records)


def test_auto_when_nvidia_smi_fails(tmp_path, monkeypatch, caplog):
    bin_dir = fake_nvidia_smi(tmp_path / "bin", "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    monkeypatch.setenv("PATH", path_without_nvidia_smi(bin_dir))
    with caplog.at_level(logging.INFO, logger="funasr_triton.profiles"):
        assert resolve("auto") == "cpu"
    assert any(r.getMessage() == "nvidia-smi failed" for r in caplog.records)


def test_auto_without_nvidia_smi(monkeypatch, caplog):
    monkeypatch.setenv("PATH", path_without_nvidia_smi())
    with caplog.at_level(logging.INFO, logger="funasr_triton.profiles"):
        assert resolve("auto") == "cpu"
    chosen = [r for r in caplog.records if r.getMessage().startswith("profile auto")]
    assert chosen and chosen[0].fields["profile"] == "cpu"


def test_a_named_profile_is_kept(monkeypatch):
    monkeypatch.setenv("PATH", path_without_nvidia_smi())
    assert resolve("cpu-int8") == "cpu-int8"


@pytest.mark.parametrize("output, expected", [("16384", "gpu-16gb"), (None, "cpu")])
def test_auto_from_the_command_line(tmp_path, output, expected):
    """`python -m funasr_triton.profiles auto` (what `make serve PROFILE=auto` resolves through the CLI)."""
    bin_dir = fake_nvidia_smi(tmp_path / "bin", f"echo {output}") if output else None
    env = {**os.environ, "PATH": path_without_nvidia_smi(bin_dir), "PYTHONPATH": str(ROOT / "frontend")}
    r = subprocess.run([sys.executable, "-m", "funasr_triton.profiles", "auto"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected
    assert "profile auto" in r.stderr


def test_serve_resolves_auto_before_starting_triton(monkeypatch):
    """cmd_serve/cmd_triton hand Triton the resolved name: `auto` never reaches --model-config-name."""
    from funasr_triton import cli

    seen = {}
    monkeypatch.setattr(profiles, "gpu_memory_mib", lambda: [8192])

    def fake_serve_forever(opts):
        seen["profile"] = opts.profile
        return 0

    monkeypatch.setattr("funasr_triton.server.serve_forever", fake_serve_forever)
    assert cli.main(["triton", "--profile", "auto", "--model-repository", str(REPO)]) == 0
    assert seen["profile"] == "gpu-8gb"
