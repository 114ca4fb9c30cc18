"""Triton stage (CPU profile): SeACo-Paraformer ONNX under onnxruntime, batching ragged requests.

Requests are grouped by hotword count, sorted by length, padded into batches of at most `max_batch_frames`
frames whose padding is at most `max_pad_fraction` of their frames (on a CPU, batching buys little and padding
costs a lot), run once per batch, and split back so each request gets exactly its own outputs
(funasr_triton_models.paraformer.PaddedParaformer).

onnxruntime options (parameters): `intra_op_threads`; `intra_op_spinning` (0: idle pool threads sleep
instead of spinning, leaving the CPU to the other stages between batches); `cpu_mem_arena` (0: tensors
are allocated per run and given back, instead of kept in a growing arena).
"""
import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from funasr_triton_models.paraformer import OUTPUT_ORDER, PaddedParaformer
from funasr_triton_models.stage import (StageInputError, error_response, input_array, int_param, model_config,
                                        pad_fraction_param, param, require_files, session_options)

INPUTS = {"speech": "TYPE_FP32", "speech_lengths": "TYPE_INT32",
          "hotword_ids": "TYPE_INT32", "hotword_lengths": "TYPE_INT32"}
OUTPUTS = {"token_ids": "TYPE_INT32", "token_num": "TYPE_INT32",
           "us_alphas": "TYPE_FP32", "us_cif_peak": "TYPE_FP32", "token_logprobs": "TYPE_FP32"}


class TritonPythonModel:
    def initialize(self, args):
        config, version_dir = model_config(args, INPUTS, OUTPUTS)
        model_path = version_dir / param(config, "model_file", "model.onnx")
        require_files((model_path,), "run `funasr-triton export`")
        self.max_batch_frames = int_param(config, "max_batch_frames", 12000, minimum=1)
        self.max_pad_fraction = pad_fraction_param(config, default="1.0")
        opts = session_options(config)
        for key, flag in (("intra_op_spinning", "1"), ("cpu_mem_arena", "1")):
            if param(config, key, flag) not in ("0", "1"):
                raise pb_utils.TritonModelException(f"paraformer: parameter {key} must be 0 or 1")
        opts.add_session_config_entry("session.intra_op.allow_spinning", param(config, "intra_op_spinning", "1"))
        opts.enable_cpu_mem_arena = param(config, "cpu_mem_arena", "1") == "1"
        self.session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        graph_inputs = {i.name for i in self.session.get_inputs()}
        if graph_inputs != set(INPUTS):
            raise pb_utils.TritonModelException(f"{model_path} has inputs {sorted(graph_inputs)}, expected {sorted(INPUTS)}")
        graph_outputs = {o.name for o in self.session.get_outputs()}
        if not set(OUTPUT_ORDER) <= graph_outputs:
            raise pb_utils.TritonModelException(
                f"{model_path} lacks outputs {sorted(set(OUTPUT_ORDER) - graph_outputs)}: export it again (`funasr-triton "
                "export --stages asr`)")
        self.asr = PaddedParaformer(self.session, self.max_batch_frames, self.max_pad_fraction)

    @staticmethod
    def _parse(request):
        speech = input_array(request, "speech", np.float32, ndim=3)[0]
        length = int(input_array(request, "speech_lengths", np.int32).reshape(-1)[0])
        ids = input_array(request, "hotword_ids", np.int32, ndim=3)[0]
        lengths = input_array(request, "hotword_lengths", np.int32, ndim=2)[0]
        if not 1 <= length <= speech.shape[0]:
            raise StageInputError(f"speech_lengths={length} outside 1..{speech.shape[0]}")
        if ids.shape[0] != lengths.shape[0] or ids.shape[0] < 1:
            raise StageInputError("hotword_ids and hotword_lengths disagree on the number of hotwords")
        if (lengths < 1).any() or (lengths > ids.shape[1]).any():
            raise StageInputError("hotword_lengths out of range")
        if not np.isfinite(speech[:length]).all():
            raise StageInputError("speech contains NaN or infinite values")
        return speech[:length], ids, lengths

    def execute(self, requests):
        responses = [None] * len(requests)
        parsed = {}
        for i, request in enumerate(requests):
            try:
                parsed[i] = self._parse(request)
            except Exception as exc:  # noqa: BLE001
                responses[i] = error_response("paraformer", exc)
        for index, outcome in self.asr.decode(parsed).items():
            if isinstance(outcome, Exception):
                responses[index] = error_response("paraformer", outcome)
                continue
            ids, num, alphas, peak, logprobs = outcome
            responses[index] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("token_ids", ids[None].astype(np.int32)),
                pb_utils.Tensor("token_num", np.array([num], dtype=np.int32)),
                pb_utils.Tensor("us_alphas", alphas[None]),
                pb_utils.Tensor("us_cif_peak", peak[None]),
                pb_utils.Tensor("token_logprobs", logprobs[None].astype(np.float32)),
            ])
        return responses
