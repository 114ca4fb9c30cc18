"""setuptools hook (metadata lives in pyproject.toml): wheels carry the model repository skeleton.

build_py copies every template of model_repository/ (configs and each model's model.py, no exported
weights) into funasr_triton_export/model_repository/, where
funasr_triton_export.templates finds it in a non-editable install. Editable installs read the
checkout's model_repository/ directly, so nothing is copied for them.
"""
import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _templates():
    spec = importlib.util.spec_from_file_location("_templates", HERE / "export" / "funasr_triton_export" / "templates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithTemplates(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        source = HERE / "model_repository"
        if not source.is_dir():  # a build context without it (the frontend image): runtime only, no export
            return
        target = Path(self.build_lib) / "funasr_triton_export" / "model_repository"
        _templates().write_repository(target, source)


setup(cmdclass={"build_py": BuildPyWithTemplates})
