"""Triton stage: Paraformer outputs -> TEXT, WORDS, TIMESTAMPS, WORD_LOGPROBS. Logic: funasr_triton_models.asr_text."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from funasr_triton_models.asr_text import decode, word_logprobs
from funasr_triton_models.stage import StageInputError, answer_each, input_array, model_config

INPUTS = {"token_ids": "TYPE_INT32", "token_num": "TYPE_INT32", "us_alphas": "TYPE_FP32",
          "us_cif_peak": "TYPE_FP32", "speech_lengths": "TYPE_INT32", "token_logprobs": "TYPE_FP32"}
OUTPUTS = {"TEXT": "TYPE_STRING", "WORDS": "TYPE_STRING", "TIMESTAMPS": "TYPE_INT32", "WORD_LOGPROBS": "TYPE_FP32"}


class TritonPythonModel:
    def initialize(self, args):
        config, model_dir = model_config(args, INPUTS, OUTPUTS)
        try:
            self.tokens = json.loads((model_dir / "tokens.json").read_text(encoding="utf-8"))
            self.options = json.loads((model_dir / "asr.json").read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise pb_utils.TritonModelException(f"{e.filename} missing: run `funasr-triton export`")

    def _one(self, request):
        ids = input_array(request, "token_ids", np.int32, ndim=2)[0]
        num = int(input_array(request, "token_num", np.int32).reshape(-1)[0])
        alphas = input_array(request, "us_alphas", np.float32, ndim=2)[0]
        peaks = input_array(request, "us_cif_peak", np.float32, ndim=2)[0]
        frames = 3 * int(input_array(request, "speech_lengths", np.int32).reshape(-1)[0])
        logprobs = input_array(request, "token_logprobs", np.float32, ndim=2)[0]
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.tokens)):
            raise StageInputError("token_ids outside the vocabulary")
        if frames > alphas.shape[0] or alphas.shape != peaks.shape:
            raise StageInputError("us_alphas/us_cif_peak shorter than 3 x speech_lengths")
        if logprobs.shape[0] < min(max(num, 0), ids.shape[0]):
            raise StageInputError("token_logprobs shorter than the tokens")
        o = self.options
        text, words, stamps = decode(ids, num, self.tokens, alphas[:frames], peaks[:frames],
                                     upsample_rate=o.get("upsample_rate", 3), sos=o.get("sos", 1),
                                     eos=o.get("eos", 2), blank=o.get("blank_id", 0))
        stamps = np.array(stamps, dtype=np.int32).reshape(-1, 2)
        special = (o.get("sos", 1), o.get("eos", 2), o.get("blank_id", 0))
        kept = [(self.tokens[int(i)], float(lp)) for i, lp in zip(ids[:max(num, 0)], logprobs) if int(i) not in special]
        word_lp = word_logprobs(words, [t for t, _ in kept], [lp for _, lp in kept])
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("TEXT", np.array([[text.encode("utf-8")]], dtype=object)),
            pb_utils.Tensor("WORDS", np.array([[w.encode("utf-8") for w in words]], dtype=object).reshape(1, -1)),
            pb_utils.Tensor("TIMESTAMPS", stamps[None]),
            pb_utils.Tensor("WORD_LOGPROBS", np.array(word_lp, dtype=np.float32).reshape(1, -1)),
        ])

    def execute(self, requests):
        return answer_each("asr_decode", requests, self._one)
