"""The models' code (funasr_triton_models) is found where the embedded Triton's python stubs run, or Triton is not
started: the stubs run this interpreter's environment (not PYTHONPATH), so an install that lacks the package fails
once, clearly, instead of every model failing to load."""
from __future__ import annotations

import os

import pytest

from funasr_triton.server import MODEL_CODE, ModelCodeMissing, check_model_code


def test_the_stubs_environment_has_the_model_code():
    check_model_code(dict(os.environ))
    assert MODEL_CODE == "funasr_triton_models"


def test_pythonpath_alone_is_not_enough(tmp_path):
    """The stubs do not honour PYTHONPATH: a package found only through it does not count."""
    (tmp_path / "only_on_pythonpath").mkdir()
    (tmp_path / "only_on_pythonpath" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    with pytest.raises(ModelCodeMissing):
        check_model_code(env, package="only_on_pythonpath")


def test_a_missing_package_stops_the_start():
    with pytest.raises(ModelCodeMissing, match=r"pip install -e \.") as e:
        check_model_code(dict(os.environ), package="funasr_triton_models_not_there")
    assert "funasr_triton_models_not_there" in str(e.value)
