"""With CI=true a missing dependency fails the suite instead of skipping modules (conftest's report hooks);
without CI it still skips, and deliberate skips stay skips."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, ci: bool) -> str:
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_module_level.py").write_text(
        "import pytest\nmissing = pytest.importorskip('no_such_module_for_ci_check')\ndef test_a():\n    pass\n")
    (tmp_path / "test_in_test.py").write_text(
        "import pytest\ndef test_b():\n    pytest.importorskip('no_such_module_for_ci_check')\n"
        "def test_c():\n    pytest.skip('deliberate')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
                          "-rfsE", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    return out.stdout + out.stderr


def test_import_skips_fail_in_ci(tmp_path):
    out = _run(tmp_path, ci=True)
    assert "1 failed" in out and "1 skipped" in out and "1 error" in out, out
    assert "CI=true: a dependency is missing" in out


def test_import_skips_skip_outside_ci(tmp_path):
    out = _run(tmp_path, ci=False)
    assert "3 skipped" in out and "failed" not in out and "error" not in out, out
