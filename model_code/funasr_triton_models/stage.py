"""Helpers every python-backend stage uses (each `model.py` imports them from `funasr_triton_models.stage`).

A stage validates its config once in `initialize` and answers every request with its own
response or its own error, so one bad request never fails the others in a batch.
"""
from __future__ import annotations

import json
import math
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import triton_python_backend_utils as pb_utils


class StageInputError(ValueError):
    """The request is malformed: reported to the client as INVALID_ARG."""


def check_tensors(config: dict, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """Fail model loading unless the config declares these tensors with these data types."""
    declared = {
        "input": {t["name"]: t["data_type"] for t in config.get("input", [])},
        "output": {t["name"]: t["data_type"] for t in config.get("output", [])},
    }
    for kind, want in (("input", inputs), ("output", outputs)):
        for name, dtype in want.items():
            got = declared[kind].get(name)
            if got != dtype:
                raise pb_utils.TritonModelException(
                    f"{config.get('name')}: config must declare {kind} '{name}' as {dtype}, found {got}")


def check_tensor_specs(config: dict, section: str, expected: dict[str, tuple[str, list[int]]]) -> None:
    """Stricter twin of check_tensors for fixed contracts: exactly these tensors, data types and dims."""
    got = {t["name"]: (t.get("data_type"), [int(d) for d in t.get("dims", [])]) for t in config.get(section, [])}
    if got != expected:
        raise pb_utils.TritonModelException(
            f"{config.get('name')}: config.pbtxt {section} must be {expected} (max_batch_size 0), got {got}")


def model_config(args: dict, inputs: dict[str, str] | None = None,
                 outputs: dict[str, str] | None = None) -> tuple[dict, Path]:
    """What `initialize(args)` gets: the model's config (config.pbtxt as JSON; with `inputs`/`outputs`, checked
    by check_tensors) and its version directory."""
    config = json.loads(args["model_config"])
    if inputs is not None or outputs is not None:
        check_tensors(config, inputs or {}, outputs or {})
    return config, Path(args["model_repository"]) / args["model_version"]


def check_fixed_contract(stage: str, config: dict, inputs: dict, outputs: dict) -> None:
    """An unbatched stage (max_batch_size 0) with exactly these input and output tensors (check_tensor_specs)."""
    if int(config.get("max_batch_size", 0)) != 0:
        raise pb_utils.TritonModelException(f"{stage}: config.pbtxt needs max_batch_size: 0")
    check_tensor_specs(config, "input", inputs)
    check_tensor_specs(config, "output", outputs)


def require_files(paths: Iterable[Path], hint: str) -> None:
    """Fail model loading at the first of `paths` that does not exist: "<path> missing: <hint>"."""
    for path in paths:
        if not path.exists():
            raise pb_utils.TritonModelException(f"{path} missing: {hint}")


def require_exported(stage: str, version_dir: Path, names: Iterable[str], exporter: str) -> None:
    """Fail model loading, naming every one of `names` that is not a file in `version_dir` and the exporter."""
    missing = [n for n in names if not (version_dir / n).is_file()]
    if missing:
        raise pb_utils.TritonModelException(
            f"{stage}: missing {', '.join(missing)} in {version_dir} (run the exporter: {exporter})")


@contextmanager
def loading(stage: str, what) -> Iterator[None]:
    """Any exception inside becomes the model's load failure: "<stage>: cannot load <what>: <error>"."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - surface any load failure as a model error
        raise pb_utils.TritonModelException(f"{stage}: cannot load {what}: {e}") from e


def session_options(config: dict, default_threads: int = 1):
    """onnxruntime SessionOptions: `intra_op_threads` from the config (>= 0), one inter-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int_param(config, "intra_op_threads", default_threads, minimum=0)
    opts.inter_op_num_threads = 1
    return opts


def param(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def int_param(config: dict, key: str, default: int, minimum: int = 0) -> int:
    raw = param(config, key, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise pb_utils.TritonModelException(f"{config.get('name')}: parameter {key}={raw!r} is not an integer")
    if value < minimum:
        raise pb_utils.TritonModelException(f"{config.get('name')}: parameter {key}={value} must be >= {minimum}")
    return value


def pad_fraction_param(config: dict, key: str = "max_pad_fraction", default: str = "inf") -> float:
    """A batch's padding limit as a fraction of its frames (batching.length_batches): a number >= 0, or inf."""
    raw = param(config, key, default)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0.0:
        raise pb_utils.TritonModelException(f"{config.get('name')}: parameter {key}={raw!r} must be a number >= 0")
    return value


def error_response(stage: str, exc: BaseException) -> "pb_utils.InferenceResponse":
    if isinstance(exc, (StageInputError, UnicodeDecodeError)):
        err = pb_utils.TritonError(f"{stage}: {exc}", pb_utils.TritonError.INVALID_ARG)
    else:
        pb_utils.Logger.log_error(f"{stage}: {traceback.format_exc()}")
        err = pb_utils.TritonError(f"{stage}: internal error: {exc!r}")
    return pb_utils.InferenceResponse(error=err)


def answer_each(stage: str, requests: list, handle: Callable) -> list:
    """One response per request, in order; exceptions become that request's error."""
    responses = []
    for request in requests:
        try:
            responses.append(handle(request))
        except Exception as exc:  # noqa: BLE001
            responses.append(error_response(stage, exc))
    return responses


def input_array(request, name: str, dtype=None, ndim: int | None = None, required: bool = True):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        if required:
            raise StageInputError(f"input {name} is missing")
        return None
    array = tensor.as_numpy()
    if dtype is not None and array.dtype != dtype:
        raise StageInputError(f"input {name} must be {dtype}, got {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise StageInputError(f"input {name} must have rank {ndim}, got shape {list(array.shape)}")
    return array


def scalar_input(request, name: str, dtype, default):
    """An optional one-element input (BOOL flags, INT32 counts); `default` when absent."""
    value = input_array(request, name, required=False)
    if value is None:
        return default
    if value.dtype != dtype or value.size != 1:
        raise StageInputError(f"{name} must be one {np.dtype(dtype).name.upper()}")
    return value.reshape(-1)[0].item()


class BlsError(Exception):
    """A BLS call failed; `invalid_arg` keeps whether the callee blamed the input."""

    def __init__(self, message: str, invalid_arg: bool):
        super().__init__(message)
        self.invalid_arg = invalid_arg


async def call(model: str, inputs: list, outputs: list[str]) -> dict:
    """One BLS request (needs `async def execute`); the named outputs as numpy arrays, or BlsError."""
    request = pb_utils.InferenceRequest(model_name=model, requested_output_names=outputs, inputs=inputs)
    response = await request.async_exec()
    if response.has_error():
        err = response.error()
        invalid = err.code() == pb_utils.TritonError.INVALID_ARG
        raise BlsError(f"{model}: {err.message()}", invalid)
    return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}


def bls_error_response(exc: BlsError) -> "pb_utils.InferenceResponse":
    code = pb_utils.TritonError.INVALID_ARG if exc.invalid_arg else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))


def outcome_response(stage: str, outcome, tensors: Callable[[object], list]) -> "pb_utils.InferenceResponse":
    """One request's response from what its handler returned (`tensors(outcome)`) or raised."""
    if isinstance(outcome, BlsError):
        return bls_error_response(outcome)
    if isinstance(outcome, BaseException):
        return error_response(stage, outcome)
    return pb_utils.InferenceResponse(output_tensors=tensors(outcome))


def json_tensor(name: str, value) -> "pb_utils.Tensor":
    """A [1, 1] BYTES tensor holding `value` as UTF-8 JSON."""
    return pb_utils.Tensor(name, np.array([[json.dumps(value, ensure_ascii=False).encode("utf-8")]], dtype=object))


def strings(array) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
