"""Triton python backend for the `punc` stage: CT-Transformer punctuation on CPU (onnxruntime).

TEXT (UTF-8 string [1]) → PUNC_TEXT (string [1]), WORDS (string [-1]), PUNC_IDS (int32 [-1]),
PUNC_MARKS (string [-1]), STATE (string [1]).

Whole-text mode (neither STATE nor FINAL sent): PUNC_TEXT equals funasr's
AutoModel(ct-punc).generate(input=TEXT)[0]["text"] and PUNC_IDS its punc_array (one class id per
entry of WORDS); STATE is "".

Incremental mode (STATE and/or FINAL sent): TEXT is the next piece of a longer text, STATE the
JSON state from the previous response ("" to start), FINAL true on the last piece. The outputs
cover only the part committed by this piece; concatenated over all pieces they equal the
whole-text outputs (CtPunctuator.punctuate_step). STATE out is what to send next ("" after FINAL).

The logic is in funasr_triton_models.ct_punc (punctuate_request).
"""
from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from funasr_triton_models.ct_punc import CtPunctuator, punc_marks, punctuate_request
from funasr_triton_models.stage import check_fixed_contract, loading, model_config, require_exported

EXPECTED_INPUTS = {
    "TEXT": ("TYPE_STRING", [1]),
    "STATE": ("TYPE_STRING", [1]),
    "FINAL": ("TYPE_BOOL", [1]),
}
OPTIONAL_INPUTS = ("STATE", "FINAL")
EXPECTED_OUTPUTS = {
    "PUNC_TEXT": ("TYPE_STRING", [1]),
    "WORDS": ("TYPE_STRING", [-1]),
    "PUNC_IDS": ("TYPE_INT32", [-1]),
    "PUNC_MARKS": ("TYPE_STRING", [-1]),
    "STATE": ("TYPE_STRING", [1]),
}


def _param(config: dict, key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value != "" else default


class TritonPythonModel:
    def initialize(self, args):
        config, version_dir = model_config(args)
        check_fixed_contract("punc", config, EXPECTED_INPUTS, EXPECTED_OUTPUTS)
        required = [t["name"] for t in config.get("input", [])
                    if t["name"] in OPTIONAL_INPUTS and not t.get("optional")]
        if required:
            raise pb_utils.TritonModelException(f"punc: config.pbtxt must declare inputs {required} optional: true")
        try:
            threads = int(_param(config, "intra_op_threads", "1"))
            self.max_text_chars = int(_param(config, "max_text_chars", "100000"))
        except ValueError as e:
            raise pb_utils.TritonModelException(f"punc: bad integer parameter in config.pbtxt: {e}") from e
        if threads < 0 or self.max_text_chars <= 0:
            raise pb_utils.TritonModelException(
                "punc: intra_op_threads must be >= 0 and max_text_chars > 0 in config.pbtxt"
            )
        model_file = _param(config, "model_file", "model.onnx")
        require_exported("punc", version_dir, (model_file, "tokens.json", "punc.json"),
                         "funasr_triton_export.exporters.punc.export_punc")
        with loading("punc", version_dir / model_file):
            self.punc = CtPunctuator(version_dir, intra_op_threads=threads, model_file=model_file)

    @staticmethod
    def _read_string(request, name: str):
        """The one UTF-8 string of input `name`, or None when the request does not send it."""
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            return None
        data = tensor.as_numpy()
        if data.size != 1 or data.ndim != 1:
            raise ValueError(f"{name} must hold exactly one string (shape [1]), got shape {list(data.shape)}")
        value = data.reshape(-1)[0]
        if isinstance(value, (bytes, bytearray, np.bytes_)):
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{name} is not valid UTF-8: {e}") from None
        if isinstance(value, str):
            return value
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")

    @staticmethod
    def _read_final(request):
        tensor = pb_utils.get_input_tensor_by_name(request, "FINAL")
        if tensor is None:
            return None
        data = tensor.as_numpy()
        if data.dtype != np.bool_ or data.size != 1 or data.ndim != 1:
            raise ValueError(f"FINAL must hold exactly one BOOL (shape [1]), got {data.dtype} {list(data.shape)}")
        return bool(data.reshape(-1)[0])

    def _punctuate(self, request):
        """(PuncResult, STATE out) for one request, in whole-text or incremental mode."""
        text = self._read_string(request, "TEXT")
        if text is None:
            raise ValueError("missing input TEXT")
        raw_state = self._read_string(request, "STATE")
        final = self._read_final(request)
        return punctuate_request(self.punc, text, raw_state, final, self.max_text_chars)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                result, state_out = self._punctuate(request)
                outputs = [
                    pb_utils.Tensor("PUNC_TEXT", np.array([result.text.encode("utf-8")], dtype=np.object_)),
                    pb_utils.Tensor(
                        "WORDS", np.array([w.encode("utf-8") for w in result.words], dtype=np.object_)
                    ),
                    pb_utils.Tensor("PUNC_IDS", np.asarray(result.punc_ids, dtype=np.int32)),
                    pb_utils.Tensor("PUNC_MARKS", np.array(
                        [m.encode("utf-8") for m in punc_marks(result.words, result.punc_ids, self.punc.punc_list)],
                        dtype=np.object_)),
                    pb_utils.Tensor("STATE", np.array([state_out.encode("utf-8")], dtype=np.object_)),
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except ValueError as e:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"punc: {e}", pb_utils.TritonError.INVALID_ARG)))
            except Exception as e:  # noqa: BLE001 - never raise out of execute
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"punc: internal error: {type(e).__name__}: {e}")
                    )
                )
        return responses

    def finalize(self):
        self.punc = None
