"""Triton BLS entry point: whole file -> VAD -> per-segment ASR (ensemble `asr`) -> punctuation.

Every segment of every request in the batch is sent to `asr` concurrently, so the dynamic
batchers of feature_extractor/paraformer/asr_decode see them together. A failing request is
answered with its own error; the others in the batch are unaffected.
"""
import asyncio
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from diarize import speech_windows, window_samples, word_speakers
from diarize_cluster import cluster_speakers, validate_speaker_options
from sentences import assemble, join_texts, word_stamps
from stage import (BlsError, StageInputError, bls_error_response, call, check_tensors, error_response, input_array,
                   int_param, param, strings)

INPUTS = {"WAV": "TYPE_FP32", "HOTWORDS": "TYPE_STRING", "ENABLE_PUNC": "TYPE_BOOL",
          "ENABLE_TIMESTAMPS": "TYPE_BOOL", "ENABLE_DIARIZATION": "TYPE_BOOL", "NUM_SPEAKERS": "TYPE_INT32",
          "MIN_SPEAKERS": "TYPE_INT32", "MAX_SPEAKERS": "TYPE_INT32"}
OUTPUTS = {"TEXT": "TYPE_STRING", "RESULT": "TYPE_STRING"}
SAMPLES_PER_MS = 16


def split_long(segments: list[list[int]], max_ms: int) -> list[list[int]]:
    out = []
    for beg, end in segments:
        parts = max(1, -(-(end - beg) // max_ms))
        bounds = [beg + (end - beg) * i // parts for i in range(parts + 1)]
        out.extend([bounds[i], bounds[i + 1]] for i in range(parts))
    return out


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        check_tensors(config, INPUTS, OUTPUTS)
        self.max_samples = int_param(config, "max_audio_seconds", 14400, minimum=1) * 16000
        self.max_segment_ms = int_param(config, "max_segment_ms", 60100, minimum=1000)
        self.min_segment_ms = int_param(config, "min_segment_ms", 30, minimum=1)
        self.default_max_speakers = int_param(config, "default_max_speakers", 8, minimum=1)
        raw = param(config, "speaker_merge_threshold", "0.78")
        try:
            self.merge_threshold = float(raw)
        except ValueError:
            self.merge_threshold = float("nan")
        if not 0.0 < self.merge_threshold <= 1.0:
            raise pb_utils.TritonModelException(
                f"pipeline: parameter speaker_merge_threshold={raw!r} must be a number in (0, 1]")

    @staticmethod
    def _flag(request, name: str, default: bool) -> bool:
        value = input_array(request, name, required=False)
        if value is None:
            return default
        if value.dtype != np.bool_ or value.size != 1:
            raise StageInputError(f"{name} must be one BOOL")
        return bool(value.reshape(-1)[0])

    @staticmethod
    def _count(request, name: str):
        value = input_array(request, name, required=False)
        if value is None:
            return None
        if value.dtype != np.int32 or value.size != 1:
            raise StageInputError(f"{name} must be one INT32")
        n = int(value.reshape(-1)[0])
        return None if n <= 0 else n

    @staticmethod
    async def _embeddings(wav: np.ndarray, windows: list[tuple[int, int]]) -> np.ndarray:
        outs = await asyncio.gather(*[
            call("speaker_embedding", [pb_utils.Tensor("WAV", window_samples(wav, b, e)[None])], ["EMBEDDING"])
            for b, e in windows])
        return np.stack([o["EMBEDDING"].reshape(-1) for o in outs]) if outs else np.zeros((0, 1), np.float32)

    async def _segment(self, wav: np.ndarray, hotwords: np.ndarray) -> dict:
        return await call("asr", [pb_utils.Tensor("WAV", wav[None]), pb_utils.Tensor("HOTWORDS", hotwords[None])],
                          ["TEXT", "WORDS", "TIMESTAMPS"])

    async def _one(self, request) -> dict:
        wav = input_array(request, "WAV", np.float32, ndim=2)[0]
        if wav.shape[0] == 0:
            raise StageInputError("WAV is empty")
        if wav.shape[0] > self.max_samples:
            raise StageInputError(f"WAV is {wav.shape[0] / 16000:.0f} s; at most {self.max_samples // 16000} s accepted")
        if not np.isfinite(wav).all():
            raise StageInputError("WAV contains NaN or infinite samples")
        hot = input_array(request, "HOTWORDS", required=False)
        hot_words = [w for w in (strings(hot) if hot is not None else []) if w.strip()]
        hotwords = np.array([w.encode("utf-8") for w in hot_words] or [b""], dtype=object)
        enable_punc = self._flag(request, "ENABLE_PUNC", True)
        enable_ts = self._flag(request, "ENABLE_TIMESTAMPS", True)
        diarize = self._flag(request, "ENABLE_DIARIZATION", False)
        num = self._count(request, "NUM_SPEAKERS")
        lo = self._count(request, "MIN_SPEAKERS") or 1
        hi = self._count(request, "MAX_SPEAKERS") or max(self.default_max_speakers, lo)
        if diarize:
            try:
                validate_speaker_options(num, lo, hi)
            except ValueError as e:
                raise StageInputError(str(e)) from e

        vad = await call("vad", [pb_utils.Tensor("WAV", wav)], ["SEGMENTS"])
        segments = [[int(b), int(e)] for b, e in vad["SEGMENTS"].reshape(-1, 2)]
        segments = [s for s in split_long(segments, self.max_segment_ms) if s[1] - s[0] >= self.min_segment_ms]
        windows = speech_windows(segments) if diarize else []
        # speaker embeddings need only the VAD segments: they run while the segments are recognised
        embedding_task = asyncio.ensure_future(self._embeddings(wav, windows)) if windows else None
        try:
            results = await asyncio.gather(*[
                self._segment(wav[b * SAMPLES_PER_MS: e * SAMPLES_PER_MS], hotwords) for b, e in segments])
        except BaseException:
            if embedding_task is not None:
                embedding_task.cancel()
            raise
        asr = []
        for (beg, end), r in zip(segments, results):
            asr.append({
                "start_ms": beg, "end_ms": end,
                "text": strings(r["TEXT"])[0],
                "words": strings(r["WORDS"]),
                "timestamps": [[int(s) + beg, int(e) + beg] for s, e in r["TIMESTAMPS"].reshape(-1, 2)],
            })
        punc = None
        raw_text = " ".join(a["text"] for a in asr if a["text"])
        if enable_punc and any(a["words"] for a in asr):
            joined = join_texts([a["text"] for a in asr])
            out = await call("punc", [pb_utils.Tensor("TEXT", np.array([joined.encode("utf-8")], dtype=object))],
                             ["PUNC_TEXT", "WORDS", "PUNC_MARKS"])
            punc = {"text": strings(out["PUNC_TEXT"])[0], "words": strings(out["WORDS"]),
                    "marks": strings(out["PUNC_MARKS"])}
        speakers = None
        if diarize:
            stamps = [t for a in asr for t in word_stamps(a)]
            if embedding_task is None:
                speakers = [0] * len(stamps)
            else:
                embeddings = await embedding_task
                # clustering is CPU work: off the event loop the other requests of this batch share
                labels = await asyncio.to_thread(cluster_speakers, embeddings, num_speakers=num,
                                                 min_speakers=lo, max_speakers=hi,
                                                 merge_threshold=self.merge_threshold)
                speakers = word_speakers(stamps, windows, labels)
        result = assemble(asr, punc, duration_ms=wav.shape[0] // SAMPLES_PER_MS, with_timestamps=enable_ts,
                          speakers=speakers)
        result["raw_text"] = raw_text
        result["hotwords"] = hot_words
        return result

    async def execute(self, requests):
        outcomes = await asyncio.gather(*[self._one(r) for r in requests], return_exceptions=True)
        responses = []
        for outcome in outcomes:
            if isinstance(outcome, BlsError):
                responses.append(bls_error_response(outcome))
            elif isinstance(outcome, BaseException):
                responses.append(error_response("pipeline", outcome))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("TEXT", np.array([[outcome["text"].encode("utf-8")]], dtype=object)),
                    pb_utils.Tensor("RESULT", np.array(
                        [[json.dumps(outcome, ensure_ascii=False).encode("utf-8")]], dtype=object)),
                ]))
        return responses
