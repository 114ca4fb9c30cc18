

def test_the_model_code_imports_none_of_ours(tmp_path):
    """funasr_triton_models is the leaf: an import from it into any other package of ours is wrong-way, and so
    is one from the frontend into it; the export tools may use it."""
    assert {i.target.split(".")[0] for i in ours().imports if i.importer.startswith("funasr_triton_models")} \
        <= {"funasr_triton_models"}
    files = {
        "fm/__init__.py": "",
        "fm/port.py": "from funasr_triton.audio import decode\n",       # models -> frontend
        "fm/stage.py": "from . import port\n",                          # within the package: fine
        "ft/__init__.py": "",
        "ft/audio.py": "from funasr_triton_models import port\n",       # frontend -> models
        "fx/__init__.py": "",
        "fx/verify.py": "from funasr_triton_models.port import x\n",    # tools -> models: fine
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = Graph({"funasr_triton": tmp_path / "ft", "funasr_triton_export": tmp_path / "fx",
                   "loadtest": tmp_path / "lt", "funasr_triton_models": tmp_path / "fm"})
    packages, _ = wrong_way(graph)
    assert packages == {("funasr_triton_models.port", "funasr_triton.audio"),
                        ("funasr_triton.audio", "funasr_triton_models.port")}

