"""The model repository skeleton (configs, each model's model.py) and writing it into any directory.

The single source of truth for "what a model repository holds besides the exported weights":
`funasr-triton export` writes it before exporting (so an empty directory becomes a repository Triton
loads), and the tests, the bench and the Helm chart's init container all get their repositories that way.
The code the model.py files import is not in the repository: it is the installed `funasr_triton_models`
package (model_code/), in the environment Triton's python backend runs in (the dev venv, the Triton images).

Where the skeleton comes from: a wheel carries it as package data (`funasr_triton_export/model_repository/`,
copied by setup.py's build_py); an editable install or a checkout on PYTHONPATH reads the checkout's
`model_repository/` directly.

What is a template: every file of every model directory (a directory with a config.pbtxt) except what
sits in a version directory (`<model>/<digits>/`) and is not Python code or `.keep`; those are exported
weights and assets. The checkout's repository is plain files; a link (an older checkout's, or one put
there by hand) is followed, so the written repository has real files only and can be copied, mounted or
uploaded to a bucket anywhere.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "model_repository"
CHECKOUT = Path(__file__).resolve().parents[2] / "model_repository"
SKIP_NAMES = {"__pycache__", "MANIFEST.json"}


class TemplatesNotFound(RuntimeError):
    pass


def template_root() -> Path:
    """The skeleton of the installed package (wheel), else the checkout's model_repository/."""
    for root in (PACKAGED, CHECKOUT):
        if root.is_dir() and any(root.glob("*/config.pbtxt")):
            return root
    raise TemplatesNotFound(f"no model repository templates in {PACKAGED} (wheel) or {CHECKOUT} (checkout); "
                            "reinstall funasr-triton")


def is_template(rel: Path) -> bool:
    """Whether `rel` (model dir / ... / file, relative to the repository root) belongs to the skeleton."""
    parts = rel.parts
    if any(p in SKIP_NAMES or p.endswith(".pyc") for p in parts):
        return False
    if len(parts) >= 3 and parts[1].isdigit():  # <model>/<version>/...: code is a template, the rest is exported
        return rel.suffix == ".py" or rel.name == ".keep"
    return len(parts) >= 2


def template_files(root: Path | None = None) -> dict[Path, Path]:
    """relative path -> source file (links followed) of every template file of every model directory."""
    root = Path(root) if root is not None else template_root()
    out: dict[Path, Path] = {}
    for config in sorted(root.glob("*/config.pbtxt")):
        model_dir = config.parent
        for dirpath, dirnames, filenames in os.walk(model_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_NAMES)
            for name in sorted(filenames):
                src = Path(dirpath) / name
                rel = src.relative_to(root)
                if is_template(rel) and src.exists():  # a dangling link is no template
                    out[rel] = src
    return out


def write_repository(dst: Path, root: Path | None = None) -> dict[str, list[str]]:
    """Write (or refresh) the skeleton into `dst` as real files; exported weights already there stay.

    A file whose content is unchanged is left alone (mtime kept), so is a link to an identical file inside
    `dst` (the committed repository's own layout); a changed file, or a link pointing outside `dst` (an
    older copy's) or to other content, is replaced by a real file. Returns {"written": [...], "unchanged": [...]} (relative paths).
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    root = Path(root) if root is not None else template_root()
    files = template_files(root)
    if dst.resolve() == root.resolve():  # exporting into the checkout's own model_repository
        return {"written": [], "unchanged": [rel.as_posix() for rel in files]}
    inside = dst.resolve()
    written, unchanged = [], []
    for rel, src in files.items():
        target = dst / rel
        data = src.read_bytes()
        if target.is_symlink():
            resolved = target.resolve()
            if inside in resolved.parents and resolved.is_file() and resolved.read_bytes() == data:
                unchanged.append(rel.as_posix())  # a link within the repository (a checkout's layout) is kept
                continue
            target.unlink()
        elif target.is_file() and target.read_bytes() == data:
            unchanged.append(rel.as_posix())
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        shutil.copymode(src, tmp)
        os.replace(tmp, target)
        written.append(rel.as_posix())
    return {"written": written, "unchanged": unchanged}


def outside_links(repo: Path) -> list[Path]:
    """Links under `repo` that point outside it (or nowhere): a self-contained repository has none."""
    repo = Path(repo).resolve()
    bad = []
    for path in Path(repo).rglob("*"):
        if path.is_symlink():
            target = path.resolve()
            if not target.exists() or repo not in target.parents:
                bad.append(path)
    return bad
