"""`funasr-triton export` writes a complete, self-contained model repository into any directory.

The session `repository` fixture is exactly that (export into an empty directory); here: it holds every
model directory of the skeleton as real files, Triton loads every model from it and transcribes; a
re-export refreshes code and configs and keeps the weights; a wheel carries the skeleton."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from funasr_triton_export.templates import outside_links, template_files, template_root
from tests.conftest import BIN, CACHE, ROOT


def export(repo: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "funasr-triton"), "--log-level", "WARNING", "export", "--source", "test",
                           "--quantize", "--repository", str(repo), "--cache-dir", str(CACHE), *extra],
                          capture_output=True, text=True, cwd=ROOT)


def test_every_model_directory_is_written_as_real_files(repository):
    root = template_root()
    models = sorted(p.parent.name for p in root.glob("*/config.pbtxt"))
    assert models and sorted(p.parent.name for p in repository.glob("*/config.pbtxt")) == models
    assert not [p for p in repository.rglob("*") if p.is_symlink()], "links dereferenced"
    assert outside_links(repository) == []
    templates = template_files()
    assert Path("streaming_asr/1/model.py") in templates and Path("feature_extractor/configs/gpu-8gb.pbtxt") in templates
    # a version directory holds model.py only: the code it imports is the installed funasr_triton_models
    assert {rel.name for rel in templates if len(rel.parts) > 2 and rel.parts[1].isdigit()} <= {"model.py", ".keep"}
    for rel, src in templates.items():
        assert (repository / rel).read_bytes() == src.read_bytes(), rel
    # no exported weight is taken for a template, and the manifest records what was asked
    assert not [rel for rel in templates if rel.suffix == ".onnx"]
    assert (repository / "paraformer" / "1" / "model.onnx").is_file()


def test_triton_loads_every_model_and_transcribes(triton, client, speech_wav):
    import tritonclient.grpc as grpcclient

    from funasr_triton.audio import decode

    models = sorted(p.parent.name for p in template_root().glob("*/config.pbtxt"))
    c = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        index = {m.name: m.state for m in c.get_model_repository_index().models}
        assert {m: index.get(m) for m in models} == {m: "READY" for m in models}
        assert all(c.is_model_ready(m) for m in models)
    finally:
        c.close()
    result = client.transcribe(decode(speech_wav.read_bytes()))
    assert result["text"]


def test_reexport_refreshes_configs_and_code_keeps_weights(repository, tmp_path):
    repo = tmp_path / "model_repository"
    shutil.copytree(repository, repo)
    weights = [repo / "paraformer" / "1" / "model.onnx", repo / "punc" / "1" / "model.onnx",
               repo / "streaming_asr" / "1" / "paraformer" / "encoder.onnx"]
    before = {w: (w.stat().st_ino, w.stat().st_mtime_ns) for w in weights}
    config = repo / "pipeline" / "config.pbtxt"
    original = config.read_text()
    config.write_text(original.replace("max_batch_size", "max_batch_size_changed", 1) + "\n# local edit\n")
    stage = repo / "vad" / "1" / "model.py"  # an older copy left a link out of the repository here
    stage.unlink()
    stage.symlink_to(template_root() / "vad" / "1" / "model.py")
    inner = repo / "feature_extractor" / "configs" / "gpu-8gb.pbtxt"  # a link within the repository to the same content stays
    inner.unlink()
    inner.symlink_to("gpu-6gb.pbtxt")
    out = export(repo)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "reusing the exported weights of vad, asr, punc, speaker, streaming" in out.stderr
    assert config.read_text() == original
    assert not stage.is_symlink() and stage.read_bytes() == (template_root() / "vad/1/model.py").read_bytes()
    assert inner.is_symlink() and outside_links(repo) == []
    assert {w: (w.stat().st_ino, w.stat().st_mtime_ns) for w in weights} == before
    # weights a newer test-model builder would build differently (its VERSION) are exported again
    manifest = json.loads((repo / "MANIFEST.json").read_text())
    assert manifest["stages"]["asr"]["request"]["test_version"] >= 2 and "test_version" not in manifest["stages"]["vad"]["request"]
    manifest["stages"]["punc"]["request"]["test_version"] -= 1
    (repo / "MANIFEST.json").write_text(json.dumps(manifest))
    out = export(repo, "--stages", "punc")
    assert out.returncode == 0 and "reusing" not in out.stderr, out.stderr[-3000:]
    punc = repo / "punc" / "1" / "model.onnx"
    assert (punc.stat().st_ino, punc.stat().st_mtime_ns) != before[punc]
    before[punc] = (punc.stat().st_ino, punc.stat().st_mtime_ns)
    # a manifest from before requests were recorded: the request is inferred from the origins
    manifest = json.loads((repo / "MANIFEST.json").read_text())
    for entry in manifest["stages"].values():
        entry.pop("request")
    (repo / "MANIFEST.json").write_text(json.dumps(manifest))
    out = export(repo)
    assert out.returncode == 0 and "reusing the exported weights of vad, asr, punc, speaker, streaming" in out.stderr
    assert {w: (w.stat().st_ino, w.stat().st_mtime_ns) for w in weights} == before
    # another request, or asked for: the weights are exported again
    out = export(repo, "--stages", "punc", "--force")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (punc.stat().st_ino, punc.stat().st_mtime_ns) != before[punc]
    assert (weights[0].stat().st_ino, weights[0].stat().st_mtime_ns) == before[weights[0]]


def test_export_into_the_checkout_writes_nothing():
    """`make models` exports into the committed model_repository/: its files are the source, not rewritten;
    it holds no link, so it copies anywhere as plain files."""
    from funasr_triton_export.templates import write_repository

    root = template_root()
    assert {p: os.readlink(p) for p in root.rglob("*") if p.is_symlink()} == {}
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    result = write_repository(root, root)
    assert result["written"] == []
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


def test_every_model_imports_the_package_not_its_neighbours():
    """A model.py imports the shared code from funasr_triton_models, never a file beside it or in another model's
    directory (no sys.path edits), so the repository needs nothing but itself and the installed package."""
    import ast

    for model in sorted(template_root().glob("*/1/model.py")):
        tree = ast.parse(model.read_text())
        ours = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "funasr_triton_models" in ours, model
        assert "sys.path" not in model.read_text(), model
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level], model


def test_wheel_carries_the_skeleton(tmp_path):
    """A non-editable install finds the skeleton as package data (no checkout on the path)."""
    from funasr_triton_export.templates import is_template

    wheel_dir, target, src = tmp_path / "wheel", tmp_path / "site", tmp_path / "src"

    def ignore(directory, names):  # the sources a build needs (pip builds in-tree), no exported weights
        d = Path(directory)
        skip = {".git", ".venv", ".cache", "build", "tests", "bench", "loadtest", "docs", "helm", "__pycache__"}
        out = [n for n in names if n in skip or n.endswith(".egg-info")]
        if "model_repository" in d.parts:
            rel = d.relative_to(ROOT / "model_repository")
            out += [n for n in names if (d / n).is_file() and rel.parts and not is_template(rel / n)]
        return out
    shutil.copytree(ROOT, src, ignore=ignore)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                          "-w", str(wheel_dir)], capture_output=True, text=True, cwd=tmp_path)
    if out.returncode != 0 and "No module named" in out.stderr:
        pytest.skip(f"cannot build here: {out.stderr[-300:]}")
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = wheel_dir.glob("funasr_triton-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"funasr_triton_export/model_repository/{rel.as_posix()}" for rel in template_files()}
    assert expected <= names
    assert not [n for n in names if "model_repository" in n and n.endswith((".onnx", "MANIFEST.json"))]
    with zipfile.ZipFile(wheel) as z:
        z.extractall(target)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = ("import funasr_triton_export.templates as t, sys; r = t.template_root(); "
             "sys.exit(0 if r == t.PACKAGED and str(r).startswith(sys.argv[1]) else 1)")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); " + probe,
                          str(target)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # the wheel carries the model code the written repository's model.py files import, importable from it alone
    code = ROOT / "model_code" / "funasr_triton_models"
    assert {f"funasr_triton_models/{p.name}" for p in code.glob("*.py")} <= names
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); "
                          "import funasr_triton_models as m; sys.exit(0 if m.__file__.startswith(sys.argv[1]) else 1)",
                          str(target)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    written = tmp_path / "repo"
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); "
                          "import funasr_triton_export.templates as t; t.write_repository(sys.argv[1])", str(written)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(p.relative_to(written) for p in written.rglob("*") if p.is_file()) == sorted(template_files())


def test_any_model_directory_with_a_config_is_copied(tmp_path):
    """A new model (e.g. `transcribe`) needs no change to the copying code: config.pbtxt makes it a model."""
    from funasr_triton_export.templates import write_repository

    root = tmp_path / "templates"
    (root / "shared" / "1").mkdir(parents=True)
    (root / "shared" / "config.pbtxt").write_text('name: "shared"\n')
    (root / "shared" / "1" / "util.py").write_text("X = 1\n")
    (root / "transcribe" / "1").mkdir(parents=True)
    (root / "transcribe" / "configs").mkdir()
    (root / "transcribe" / "config.pbtxt").write_text('name: "transcribe"\n')
    (root / "transcribe" / "configs" / "cpu-int8.pbtxt").write_text('name: "transcribe"\n')
    (root / "transcribe" / "1" / "model.py").write_text("import util\n")
    (root / "transcribe" / "1" / "util.py").symlink_to("../../shared/1/util.py")
    (root / "transcribe" / "1" / "model.onnx").write_bytes(b"weights")  # exported, not a template
    (root / "notes").mkdir()  # no config.pbtxt: not a model
    (root / "notes" / "README").write_text("x")
    (root / "Dockerfile").write_text("FROM scratch\n")

    dst = tmp_path / "repo"
    write_repository(dst, root)
    files = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file() or p.is_symlink())
    assert files == ["shared/1/util.py", "shared/config.pbtxt", "transcribe/1/model.py", "transcribe/1/util.py",
                     "transcribe/config.pbtxt", "transcribe/configs/cpu-int8.pbtxt"]
    assert not (dst / "transcribe" / "1" / "util.py").is_symlink()
    assert (dst / "transcribe" / "1" / "util.py").read_text() == "X = 1\n"
