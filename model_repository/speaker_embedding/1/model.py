"""Triton stage (CPU profile): WAV window -> speaker embedding (ONNX under onnxruntime).

The exported model is either CAM++ (FunASR, the default) or pyannote.audio 3.x's WeSpeaker ResNet34
(`funasr-triton export --speaker-model pyannote`); `embedding.json` names it and carries its fbank
options, which funasr_triton_models.speaker_features applies. Neither model has a length input (statistics pooling
covers every frame), so requests are grouped by frame count and only equal-length windows share an
ORT batch; diarization windows are all 1.5 s, so they batch fully. A request may carry several
windows of the same length ([k, samples] -> [k, D]). Each request gets its own embedding or error.
"""
import json

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from funasr_triton_models.speaker_features import embed_by_length, speaker_features
from funasr_triton_models.stage import (StageInputError, answer_each, input_array, int_param, model_config, param,
                                        require_files, session_options)

STAGE = "speaker_embedding"
INPUTS = {"WAV": "TYPE_FP32"}
OUTPUTS = {"EMBEDDING": "TYPE_FP32"}
# Shortest window each model can embed; embedding.json may name its own ("min_samples"). fbank needs
# 400 samples per frame; CAM++'s stride-2 TDNN then needs >= 3 frames (720 samples) to leave 2 frames
# for the unbiased std of its statistics pooling (1 frame would give NaN).
MIN_SAMPLES_FLOOR = 720
META_FILE = "embedding.json"


class TritonPythonModel:
    def initialize(self, args):
        config, model_dir = model_config(args, INPUTS, OUTPUTS)
        model_path = model_dir / param(config, "model_file", "model.onnx")
        require_files((model_path, model_dir / META_FILE), "run `funasr-triton export`")
        self.conf = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
        try:
            self.embedding_size = int(self.conf["embedding_size"])
            floor = max(MIN_SAMPLES_FLOOR, int(self.conf.get("min_samples", 0)))
            speaker_features(np.zeros(floor, np.float32), self.conf)  # rejects unknown fbank options
        except (KeyError, TypeError, ValueError) as exc:
            raise pb_utils.TritonModelException(f"{model_dir / META_FILE}: {exc}") from exc
        self.min_samples = int_param(config, "min_samples", 4000, minimum=floor)
        self.max_samples = int_param(config, "max_samples", 480000, minimum=self.min_samples)
        self.session = ort.InferenceSession(str(model_path), session_options(config),
                                            providers=["CPUExecutionProvider"])
        graph_inputs = [i.name for i in self.session.get_inputs()]
        graph_outputs = [o.name for o in self.session.get_outputs()]
        if graph_inputs != ["feats"] or graph_outputs != ["embedding"]:
            raise pb_utils.TritonModelException(
                f"{model_path} has {graph_inputs} -> {graph_outputs}, expected ['feats'] -> ['embedding']")

    def _features(self, request) -> np.ndarray:
        """[k, samples] WAV -> [k, frames, num_mel_bins] features."""
        wav = input_array(request, "WAV", np.float32, ndim=2)
        n = wav.shape[1]
        if not self.min_samples <= n <= self.max_samples:
            raise StageInputError(f"WAV has {n} samples; {self.min_samples}..{self.max_samples} are accepted")
        if wav.shape[0] < 1:
            raise StageInputError("WAV has no rows")
        if not np.isfinite(wav).all():
            raise StageInputError("WAV contains NaN or infinite samples")
        return np.stack([speaker_features(row, self.conf) for row in wav])

    def execute(self, requests):
        outcome, feats = {}, {}
        for request in requests:
            try:
                feats[id(request)] = self._features(request)
            except Exception as exc:  # noqa: BLE001 - answered as this request's error below
                outcome[id(request)] = exc
        outcome.update(embed_by_length(self.session, feats, self.embedding_size))

        def answer(request):
            result = outcome[id(request)]
            if isinstance(result, BaseException):
                raise result
            return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("EMBEDDING", result)])

        return answer_each(STAGE, requests, answer)
