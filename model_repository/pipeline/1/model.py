"""Triton BLS entry point: a whole file in one request, the whole result out (internal gRPC callers).

Runs the same LongFileJob as `transcribe` (see longfile.py): the file is fed through FunASR's 60 s VAD
strides, each segment goes to `asr` as soon as it closes (at most max_inflight_segments per request at
once, so the dynamic batchers of feature_extractor/paraformer/asr_decode see segments of this and
other requests together), punctuation runs incrementally, diarization clusters at the end. A failing
request is answered with its own error; the others in the batch are unaffected.
"""
import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils

from funasr_triton_models.diarize_cluster import DEFAULT_MAX_SPEAKERS
from funasr_triton_models.hotwords import MAX_HOTWORDS
from funasr_triton_models.job_backend import BLS, JobThreads, job_limits, load_vad
from funasr_triton_models.longfile import JobInputError, JobOptions, LongFileJob
from funasr_triton_models.stage import (StageInputError, input_array, int_param, json_tensor, model_config,
                                        outcome_response, scalar_input, strings)

INPUTS = {"WAV": "TYPE_FP32", "HOTWORDS": "TYPE_STRING", "ENABLE_PUNC": "TYPE_BOOL",
          "ENABLE_TIMESTAMPS": "TYPE_BOOL", "ENABLE_DIARIZATION": "TYPE_BOOL", "NUM_SPEAKERS": "TYPE_INT32",
          "MIN_SPEAKERS": "TYPE_INT32", "MAX_SPEAKERS": "TYPE_INT32", "ENABLE_ITN": "TYPE_BOOL",
          "MODEL": "TYPE_STRING", "LANGUAGE": "TYPE_STRING", "ENABLE_LOGPROBS": "TYPE_BOOL"}
OUTPUTS = {"TEXT": "TYPE_STRING", "RESULT": "TYPE_STRING"}
SAMPLE_RATE = 16000


class TritonPythonModel:
    def initialize(self, args):
        config, _ = model_config(args, INPUTS, OUTPUTS)
        self.max_samples = int_param(config, "max_audio_seconds", 14400, minimum=1) * SAMPLE_RATE
        self.default_max_speakers = int_param(config, "default_max_speakers", DEFAULT_MAX_SPEAKERS, minimum=1)
        self.max_hotwords = int_param(config, "max_hotwords", MAX_HOTWORDS, minimum=0)
        self.limits = job_limits(config)
        self.vad = load_vad(args, config)
        self.threads = JobThreads(config)
        self.stride = int(self.vad.chunk_size) * SAMPLE_RATE // 1000

    @staticmethod
    def _flag(request, name: str, default: bool) -> bool:
        return bool(scalar_input(request, name, np.bool_, default))

    @staticmethod
    def _count(request, name: str):
        return scalar_input(request, name, np.int32, None)

    def _options(self, request) -> JobOptions:
        hot = input_array(request, "HOTWORDS", required=False)
        raw = {"hotwords": strings(hot) if hot is not None else [],
               "punctuation": self._flag(request, "ENABLE_PUNC", True),
               "timestamps": self._flag(request, "ENABLE_TIMESTAMPS", True),
               "diarize": self._flag(request, "ENABLE_DIARIZATION", False),
               "num_speakers": self._count(request, "NUM_SPEAKERS"),
               "min_speakers": self._count(request, "MIN_SPEAKERS"),
               "max_speakers": self._count(request, "MAX_SPEAKERS"),
               "itn": self._flag(request, "ENABLE_ITN", False),
               "logprobs": self._flag(request, "ENABLE_LOGPROBS", False)}
        for name, key in (("MODEL", "model"), ("LANGUAGE", "language")):  # the second model (sensevoice)
            value = input_array(request, name, required=False)
            if value is not None and value.size:
                raw[key] = strings(value)[0]
        try:
            return JobOptions.parse(raw, self.default_max_speakers, self.max_hotwords)
        except JobInputError as e:
            raise StageInputError(str(e)) from e

    async def _one(self, request) -> dict:
        wav = input_array(request, "WAV", np.float32, ndim=2)[0]
        if wav.shape[0] == 0:
            raise StageInputError("WAV is empty")
        if wav.shape[0] > self.max_samples:
            raise StageInputError(f"WAV is {wav.shape[0] / SAMPLE_RATE:.0f} s; at most {self.max_samples // SAMPLE_RATE} s accepted")
        if not np.isfinite(wav).all():
            raise StageInputError("WAV contains NaN or infinite samples")
        job = LongFileJob(self.vad, self._options(request), BLS, self.limits, self.threads.cpu)
        try:
            return await job.run_whole(wav, self.stride)
        except JobInputError as e:
            raise StageInputError(str(e)) from e
        finally:
            job.cancel()

    async def execute(self, requests):
        self.threads.on_loop()
        outcomes = await asyncio.gather(*[self._one(r) for r in requests], return_exceptions=True)
        return [outcome_response("pipeline", o, lambda r: [
            pb_utils.Tensor("TEXT", np.array([[r["text"].encode("utf-8")]], dtype=object)), json_tensor("RESULT", r)])
            for o in outcomes]

    def finalize(self):
        self.threads.close()
