"""`make setup`'s system step on a fresh Debian: a debootstrap'ed root filesystem (minbase + python3 + make),
chroot, then `make check-system`: as a user it names the exact apt-get command; as root it installs the list
in .ci/apt-packages (the one .ci/run installs) and the doctor passes.

Needs root, debootstrap and chroot; the root filesystem tarball and the downloaded .debs are cached under
.cache/debootstrap ($FUNASR_TRITON_DEBOOTSTRAP_CACHE overrides), so only the first run downloads the base system.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # a debootstrap chroot: minutes

CACHE = Path(os.environ.get("FUNASR_TRITON_DEBOOTSTRAP_CACHE", ROOT / ".cache" / "debootstrap"))
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
              "LANG": "C.UTF-8"}


def mirror_and_suite() -> tuple[str, str]:
    """This machine's Debian mirror and suite (deb822 sources), else deb.debian.org and os-release's codename."""
    mirror, suite = "http://deb.debian.org/debian", None
    if SOURCES.exists():
        for block in SOURCES.read_text().split("\n\n"):
            fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line and not line.startswith("#"))
            uri, suites = fields.get("URIs", "").split(), fields.get("Suites", "").split()
            if uri and suites and "security" not in uri[0]:
                mirror, suite = uri[0], suites[0]
                break
    if suite is None:
        codename = re.search(r"^VERSION_CODENAME=(\w+)", Path("/etc/os-release").read_text(), re.M)
        suite = codename.group(1) if codename else "bookworm"
    return mirror, suite


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15):
            return True
    except OSError:
        return False


def base_tarball(tmp: Path) -> Path:
    mirror, suite = mirror_and_suite()
    tar = CACHE / f"{suite}-minbase-python3-make.tar"
    if tar.exists():
        return tar
    if not reachable(f"{mirror}/dists/{suite}/Release"):
        pytest.skip(f"no cached {tar.name} and the mirror {mirror} is unreachable")
    build = tmp / "build"
    out = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,make", suite, str(build), mirror],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tar.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(build), "-cf", str(partial), "."], check=True)
    partial.rename(tar)
    shutil.rmtree(build)
    return tar


@contextlib.contextmanager
def mounted(*args: str):
    subprocess.run(["mount", *args], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", args[-1]], check=False)


def chroot(root: Path, *cmd: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), *cmd], env=CHROOT_ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def fresh_debian(tmp_path) -> Path:
    if os.geteuid() != 0 or not shutil.which("debootstrap") or not shutil.which("chroot"):
        pytest.skip("needs root, debootstrap (apt-get install debootstrap) and chroot")
    tar = base_tarball(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "-xpf", str(tar)], check=True)
    src = root / "src"
    for rel in ("Makefile", ".ci/apt-packages", "frontend/funasr_triton/__init__.py", "frontend/funasr_triton/doctor.py"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
    return root


def test_make_check_system_installs_the_list_on_fresh_debian(fresh_debian):
    root = fresh_debian
    py = chroot(root, "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()
    lines = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "apt-packages").read_text().splitlines()]
    packages = [p.replace("{python}", py) for p in lines if p]

    # a user: the doctor names what is missing and the exact command (nothing installed)
    user = chroot(root, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "make", "-C", "/src", "check-system")
    assert user.returncode != 0
    assert "`ffmpeg` not found" in user.stderr
    hint = re.search(r"install them with: sudo apt-get update && sudo (apt-get install -y --no-install-recommends .*)",
                     user.stderr)
    assert hint, user.stderr
    assert hint.group(1).split()[4:] == packages

    # root: installs the list, then the doctor passes
    archives = CACHE / "apt-archives"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    with mounted("-t", "proc", "proc", str(root / "proc")), \
            mounted("--bind", str(archives), str(root / "var" / "cache" / "apt" / "archives")):
        out = chroot(root, "make", "-C", "/src", "check-system")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "make setup: installing system packages" in out.stdout
    assert "system check: ffmpeg, espeak-ng, sox, promtool, chromium, libpython present" in out.stdout
    for tool in ("ffmpeg", "espeak-ng", "sox", "promtool", "chromium"):
        assert chroot(root, "sh", "-c", f"command -v {tool}").returncode == 0, tool
    again = chroot(root, "make", "-C", "/src", "check-system")  # idempotent: nothing left to install
    assert again.returncode == 0 and "installing" not in again.stdout
