"""Serving profiles: one table, the configs rendered from it, and `--profile auto`.

A profile names the `--model-config-name` Triton loads: `<model>/configs/<profile>.pbtxt`, else the model's
config.pbtxt (the `cpu` profile is config.pbtxt everywhere). The per-profile files are not written by hand:
each model keeps its templates next to it, `<model>/configs/<template>.pbtxt.in`, and PROFILES below says which
template a profile uses and what fills its slots (`${name}`). `render()` is strict: a slot without a value in
the table, an empty value, a table value no template of that profile reads, or a template no profile uses is an
error, never a blank. `python -m funasr_triton.profiles render` (`make configs`) writes the files; `--check`
(and tests/test_profiles.py) fails when a committed file differs from its rendering.

To change a config: edit the template (a tensor added to a model goes into each of its templates and its
config.pbtxt) or the table, then `make configs`.

`auto` (`funasr-triton serve --profile auto`, `PROFILE=auto make serve`): the largest GPU profile whose
nominal size fits the memory nvidia-smi reports for the smallest GPU (a card reports a little less than its
nominal size, e.g. 15360 MiB for a 16 GB T4: FIT_FRACTION of the nominal size is enough), else `cpu` (no
nvidia-smi, an error from it, or less memory than the smallest GPU profile). The choice is logged.
"""
from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .logs import event

log = logging.getLogger(__name__)

# profile -> template (the `<template>.pbtxt.in` each model with such a template renders for it), the nominal GPU
# memory it is sized for (None: CPU) and its slots. Sizing: docs/vram-budget.md.
PROFILES: dict[str, dict] = {
    "cpu": {"template": "cpu", "vram_gib": None, "slots": {}},
    "cpu-int8": {"template": "cpu-int8", "vram_gib": None, "slots": {}},
    "gpu-6gb": {"template": "gpu", "vram_gib": 6, "slots": {
        # paraformer: native onnxruntime backend + TensorRT EP
        "asr_max_batch": 8, "asr_preferred_batch": "4, 8", "asr_queue_delay_us": 5000, "asr_instances": 1,
        "trt_workspace_bytes": 1 << 30, "trt_opt_batch": 4, "trt_max_frames": 512,
        # streaming_asr: streams per instance, instances
        "streams": 64, "stream_instances": 1,
        # sensevoice (when exported): where it runs, docs/vram-budget.md
        "sv_kind": "KIND_CPU", "sv_providers": "CPUExecutionProvider", "sv_device": "the CPU", "sv_max_batch_frames": 12000,
        "sv_max_pad_fraction": "0.1"}},
    "gpu-8gb": {"template": "gpu", "vram_gib": 8, "slots": {
        "asr_max_batch": 16, "asr_preferred_batch": "4, 8, 16", "asr_queue_delay_us": 5000, "asr_instances": 1,
        "trt_workspace_bytes": 1 << 30, "trt_opt_batch": 8, "trt_max_frames": 512,
        "streams": 96, "stream_instances": 1,
        # sensevoice (when exported): where it runs, docs/vram-budget.md
        "sv_kind": "KIND_GPU", "sv_providers": "CUDAExecutionProvider,CPUExecutionProvider", "sv_device": "the GPU", "sv_max_batch_frames": 3000,
        "sv_max_pad_fraction": "inf"}},
    "gpu-12gb": {"template": "gpu", "vram_gib": 12, "slots": {
        "asr_max_batch": 32, "asr_preferred_batch": "8, 16, 32", "asr_queue_delay_us": 4000, "asr_instances": 2,
        "trt_workspace_bytes": 2 << 30, "trt_opt_batch": 16, "trt_max_frames": 1000,
        "streams": 128, "stream_instances": 1,
        # sensevoice (when exported): where it runs, docs/vram-budget.md
        "sv_kind": "KIND_CPU", "sv_providers": "CPUExecutionProvider", "sv_device": "the CPU", "sv_max_batch_frames": 12000,
        "sv_max_pad_fraction": "0.1"}},
    "gpu-16gb": {"template": "gpu", "vram_gib": 16, "slots": {
        "asr_max_batch": 32, "asr_preferred_batch": "8, 16, 32", "asr_queue_delay_us": 4000, "asr_instances": 2,
        "trt_workspace_bytes": 3 << 30, "trt_opt_batch": 16, "trt_max_frames": 1000,
        "streams": 192, "stream_instances": 2,
        # sensevoice (when exported): where it runs, docs/vram-budget.md
        "sv_kind": "KIND_CPU", "sv_providers": "CPUExecutionProvider", "sv_device": "the CPU", "sv_max_batch_frames": 12000,
        "sv_max_pad_fraction": "0.1"}},
}
NAMES = tuple(PROFILES)
AUTO = "auto"
FIT_FRACTION = 0.92  # a 16 GB T4 reports 15360 MiB (0.94); an 11 GB card (11264 MiB, 0.917) is no 12 GB one
TEMPLATE_SUFFIX = ".pbtxt.in"
SLOT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


class ProfileError(ValueError):
    pass


def templates(root: Path) -> dict[Path, str]:
    """`<model>/configs/<template>.pbtxt.in` (relative to root) -> its text."""
    return {p.relative_to(root): p.read_text(encoding="utf-8") for p in sorted(Path(root).glob(f"*/configs/*{TEMPLATE_SUFFIX}"))}


def fill(text: str, slots: dict, where: str) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name not in slots:
            raise ProfileError(f"{where}: slot ${{{name}}} has no value in the profile table")
        value = slots[name]
        if value is None or str(value) == "":
            raise ProfileError(f"{where}: slot ${{{name}}} is empty in the profile table")
        return str(value)
    out = SLOT.sub(one, text)
    if "${" in out:
        raise ProfileError(f"{where}: malformed slot left after rendering")
    return out


def render(root: Path = REPOSITORY, profiles: dict[str, dict] = PROFILES) -> dict[Path, str]:
    """`<model>/configs/<profile>.pbtxt` (relative to root) -> rendered text, for every template and profile."""
    found = templates(root)
    out: dict[Path, str] = {}
    used: dict[str, set[str]] = {name: set() for name in profiles}
    for rel, text in found.items():
        family = rel.name[: -len(TEMPLATE_SUFFIX)]
        users = [name for name, row in profiles.items() if row["template"] == family]
        if not users:
            raise ProfileError(f"{rel}: no profile in the table uses template {family!r}")
        for name in users:
            slots = {"profile": name, **profiles[name]["slots"]}
            out[rel.parent / f"{name}.pbtxt"] = fill(text, slots, f"{rel} ({name})")
            used[name] |= set(SLOT.findall(text))
    for name, row in profiles.items():
        unused = set(row["slots"]) - used[name]
        if unused:
            raise ProfileError(f"profile {name}: no template reads slot(s) {', '.join(sorted(unused))}")
    return out


def stale(root: Path = REPOSITORY, profiles: dict[str, dict] = PROFILES) -> list[str]:
    """Generated files that differ from their rendering (or are missing), and configs/*.pbtxt no template makes."""
    rendered = render(root, profiles)
    problems = [f"{rel}: differs from its template's rendering" if (root / rel).exists() else f"{rel}: missing"
                for rel, text in rendered.items()
                if not (root / rel).exists() or (root / rel).read_text(encoding="utf-8") != text]
    problems += [f"{p.relative_to(root)}: no template renders it" for p in sorted(Path(root).glob("*/configs/*.pbtxt"))
                 if p.relative_to(root) not in rendered]
    return problems


def write(root: Path = REPOSITORY) -> list[Path]:
    """Write every rendering whose file differs; returns what was written (relative paths)."""
    written = []
    for rel, text in render(root).items():
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(rel)
    return written


# --- auto ---------------------------------------------------------------------------------------------------

def gpu_memory_mib(timeout_s: float = 15.0) -> list[int] | None:
    """Total memory (MiB) of each GPU nvidia-smi lists; None when there is no nvidia-smi or it fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        event(log, "nvidia-smi failed", level=logging.WARNING, error=str(e))
        return None
    if r.returncode != 0:
        event(log, "nvidia-smi failed", level=logging.WARNING, code=r.returncode, stderr=r.stderr.strip()[-300:])
        return None
    try:
        sizes = [int(float(line.strip().split()[0])) for line in r.stdout.splitlines() if line.strip()]
    except (ValueError, IndexError):
        event(log, "nvidia-smi output not understood", level=logging.WARNING, output=r.stdout.strip()[-300:])
        return None
    return sizes or None


def choose(memory_mib: list[int] | None, profiles: dict[str, dict] = PROFILES) -> str:
    """The largest GPU profile that fits the smallest GPU, else `cpu`."""
    if not memory_mib:
        return "cpu"
    smallest = min(memory_mib)
    fitting = [(row["vram_gib"], name) for name, row in profiles.items()
               if row["vram_gib"] and smallest >= row["vram_gib"] * 1024 * FIT_FRACTION]
    return max(fitting)[1] if fitting else "cpu"


def resolve(profile: str) -> str:
    """`profile` itself, or for `auto` the profile chosen from nvidia-smi (logged)."""
    if profile != AUTO:
        return profile
    memory = gpu_memory_mib()
    chosen = choose(memory)
    if memory is None:
        event(log, "profile auto: no GPU found (no working nvidia-smi)", profile=chosen)
    else:
        event(log, "profile auto: chosen from GPU memory", profile=chosen, gpu_memory_mib=",".join(map(str, memory)),
              fit_fraction=FIT_FRACTION)
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m funasr_triton.profiles", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="write <model>/configs/<profile>.pbtxt from the templates and the table")
    r.add_argument("--check", action="store_true", help="write nothing; exit 1 when a committed file is stale")
    r.add_argument("--repository", type=Path, default=REPOSITORY)
    sub.add_parser("auto", help="print the profile `auto` picks here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.cmd == "auto":
            sys.stdout.write(resolve(AUTO) + "\n")
            return 0
        if args.check:
            problems = stale(args.repository)
            for line in problems:
                sys.stderr.write(f"{line}\n")
            if problems:
                sys.stderr.write("edit the templates (<model>/configs/*.pbtxt.in) or the table in "
                                 "frontend/funasr_triton/profiles.py, then run `make configs`\n")
            return 1 if problems else 0
        for rel in write(args.repository):
            sys.stderr.write(f"wrote {rel}\n")
        return 0
    except ProfileError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
