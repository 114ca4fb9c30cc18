"""Triton python backend for the `vad` stage: FunASR FSMN-VAD on CPU (onnxruntime).

WAV (fp32 [-1], 16 kHz mono in [-1, 1]) → SEGMENTS (int32 [N, 2], [[beg_ms, end_ms], ...]).
SEGMENTS equals funasr's AutoModel(fsmn-vad).generate(input=WAV)[0]["value"]; N may be 0.
The logic is in funasr_triton_models.fsmn_vad.
"""
from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from funasr_triton_models.fsmn_vad import FsmnVad, InvalidAudioError, check_waveform
from funasr_triton_models.stage import check_fixed_contract, loading, model_config, require_exported

EXPECTED_INPUTS = {"WAV": ("TYPE_FP32", [-1])}
EXPECTED_OUTPUTS = {"SEGMENTS": ("TYPE_INT32", [-1, 2])}
REQUIRED_FILES = ("model.onnx", "am.mvn", "vad.json")
# config.pbtxt parameters passed to FsmnVad as options (AutoModel(model=..., **options) semantics)
OPTION_PARAMETERS = (
    "max_single_segment_time",
    "max_end_silence_time",
    "max_start_silence_time",
    "speech_noise_thres",
)


def _param(config: dict, key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value.strip() if value.strip() != "" else default


def _error(message: str, invalid_arg: bool = True):
    code = getattr(pb_utils.TritonError, "INVALID_ARG" if invalid_arg else "INTERNAL", None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)


class TritonPythonModel:
    def initialize(self, args):
        config, version_dir = model_config(args)
        check_fixed_contract("vad", config, EXPECTED_INPUTS, EXPECTED_OUTPUTS)
        try:
            threads = int(_param(config, "intra_op_threads", "1"))
            self.max_audio_seconds = float(_param(config, "max_audio_seconds", "14400"))
        except ValueError as e:
            raise pb_utils.TritonModelException(f"vad: bad number parameter in config.pbtxt: {e}") from e
        if threads < 0 or not self.max_audio_seconds > 0:
            raise pb_utils.TritonModelException(
                "vad: intra_op_threads must be >= 0 and max_audio_seconds > 0 in config.pbtxt"
            )
        options = {k: _param(config, k, "") for k in OPTION_PARAMETERS}
        options = {k: v for k, v in options.items() if v != ""}
        require_exported("vad", version_dir, REQUIRED_FILES, "funasr_triton_export.exporters.vad.export_vad")
        with loading("vad", version_dir):
            self.vad = FsmnVad(version_dir, options=options, intra_op_threads=threads)

    def _read_wav(self, request) -> np.ndarray:
        tensor = pb_utils.get_input_tensor_by_name(request, "WAV")
        if tensor is None:
            raise InvalidAudioError("missing input WAV")
        return check_waveform(
            tensor.as_numpy(), max_seconds=self.max_audio_seconds,
            sample_rate=self.vad.sample_rate, allow_empty=False,
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                segments = self.vad.segments(self._read_wav(request))
                array = np.asarray(segments, dtype=np.int32).reshape(-1, 2)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("SEGMENTS", array)]))
            except InvalidAudioError as e:
                responses.append(_error(f"vad: {e}"))
            except Exception as e:  # noqa: BLE001 - never raise out of execute
                responses.append(_error(f"vad: internal error: {type(e).__name__}: {e}", invalid_arg=False))
        return responses

    def finalize(self):
        self.vad = None
