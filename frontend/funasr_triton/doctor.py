"""System check run by `make setup` (stdlib only): tells exactly what is missing and how to get it."""
from __future__ import annotations

import ctypes.util
import shutil
import sys
from pathlib import Path


def problems() -> list[str]:
    out = []
    if sys.version_info < (3, 10):
        out.append(f"Python >= 3.10 needed, this is {sys.version.split()[0]}")
    for tool, pkg in (("ffmpeg", "ffmpeg"), ("espeak-ng", "espeak-ng"), ("sox", "sox"),
                      ("promtool", "prometheus"),  # promtool checks helm/funasr-triton/files/prometheus in the tests
                      ("chromium", "chromium")):  # the browser demo test drives it through Playwright
        if shutil.which(tool) is None:
            out.append(f"`{tool}` not found: apt-get install {pkg}")
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    # the Triton python-backend stub links against the shared libpython of this minor version
    lib_dirs = [Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib/aarch64-linux-gnu"), Path("/usr/lib"),
                Path("/usr/local/lib")]
    name = f"libpython{ver}.so.1.0"
    if not any((d / name).exists() for d in lib_dirs) and ctypes.util.find_library(f"python{ver}") is None:
        out.append(f"{name} not found (the Triton python-backend stub loads it): apt-get install libpython{ver}")
    return out


def main() -> int:
    found = problems()
    if found:
        print("make setup: missing system packages:", file=sys.stderr)
        for p in found:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("system check: ffmpeg, espeak-ng, sox, promtool, chromium, libpython present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
