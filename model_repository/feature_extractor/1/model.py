"""Triton stage: WAV (+ HOTWORDS) -> Paraformer inputs.

The logic lives in funasr_triton_models: features.AsrFrontend, hotwords.HotwordTokenizer."""

import numpy as np
import triton_python_backend_utils as pb_utils

from funasr_triton_models.features import AsrFrontend
from funasr_triton_models.hotwords import MAX_HOTWORDS, HotwordTokenizer
from funasr_triton_models.stage import StageInputError, answer_each, input_array, int_param, model_config, strings

INPUTS = {"WAV": "TYPE_FP32", "HOTWORDS": "TYPE_STRING"}
OUTPUTS = {"speech": "TYPE_FP32", "speech_lengths": "TYPE_INT32",
           "hotword_ids": "TYPE_INT32", "hotword_lengths": "TYPE_INT32"}


class TritonPythonModel:
    def initialize(self, args):
        config, model_dir = model_config(args, INPUTS, OUTPUTS)
        for name in ("asr.json", "tokens.json"):
            if not (model_dir / name).exists():
                raise pb_utils.TritonModelException(f"{model_dir / name} missing: run `funasr-triton export`")
        self.min_samples = int_param(config, "min_samples", 400, minimum=1)
        self.max_samples = int_param(config, "max_samples", 961600, minimum=self.min_samples)
        # > 0: pad features to a multiple of this many frames (speech_lengths keeps the real length)
        # and hotword ids to max_hotword_tokens, so equal-shape batchers (the onnxruntime backend of
        # the GPU profiles) merge segments of different lengths; the exported graph is
        # padding-invariant. 0 (cpu): paraformer pads ragged inputs itself.
        self.bucket_frames = int_param(config, "pad_frames_to_multiple", 0, minimum=0)
        self.frontend = AsrFrontend.from_dir(model_dir)
        self.hotwords = HotwordTokenizer.from_dir(
            model_dir, max_hotwords=int_param(config, "max_hotwords", MAX_HOTWORDS, minimum=0),
            max_hotword_tokens=int_param(config, "max_hotword_tokens", 32, minimum=1))

    def _one(self, request):
        wav = input_array(request, "WAV", np.float32, ndim=2)[0]
        if not self.min_samples <= wav.shape[0] <= self.max_samples:
            raise StageInputError(
                f"WAV has {wav.shape[0]} samples; {self.min_samples}..{self.max_samples} are accepted")
        if not np.isfinite(wav).all():
            raise StageInputError("WAV contains NaN or infinite samples")
        hot = input_array(request, "HOTWORDS", required=False)
        try:
            ids, lengths = self.hotwords(strings(hot) if hot is not None else [])
        except ValueError as e:
            raise StageInputError(str(e)) from e
        feats = self.frontend(wav)
        frames = feats.shape[0]
        if self.bucket_frames:
            feats = np.pad(feats, ((0, -(-frames // self.bucket_frames) * self.bucket_frames - frames), (0, 0)))
            ids = np.pad(ids, ((0, 0), (0, self.hotwords.max_hotword_tokens - ids.shape[1])))
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("speech", feats[None]),
            pb_utils.Tensor("speech_lengths", np.array([[frames]], dtype=np.int32)),
            pb_utils.Tensor("hotword_ids", ids[None]),
            pb_utils.Tensor("hotword_lengths", lengths[None]),
        ])

    def execute(self, requests):
        return answer_each("feature_extractor", requests, self._one)
