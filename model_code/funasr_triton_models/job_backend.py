"""What `pipeline` and `transcribe` share around LongFileJob: the BLS backend (asr, punc, speaker_embedding, itn), the VAD, the limits and the threads.

The VAD runs inside the job's model (its state follows the recording); its weights are the `vad`
model's own files (`<repository>/vad/1`), read once at load time, so the repository holds them once.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import math
import re
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from .bls import itn
from .fsmn_vad import FsmnVad
from .longfile import Backend, JobInputError, JobLimits
from .stage import BlsError, call, int_param, param, strings

_TAG = re.compile(r"<\|[^|]*\|>")  # SenseVoice's rich-transcription tags


def load_vad(args: dict, config: dict) -> FsmnVad:
    """FsmnVad from the `vad_model_dir` parameter (relative to the repository root; default vad/1)."""
    repository = Path(args["model_repository"]).resolve().parent
    model_dir = repository / param(config, "vad_model_dir", "vad/1")
    try:
        return FsmnVad(model_dir, intra_op_threads=int_param(config, "vad_intra_op_threads", 1),
                       cpu_mem_arena=param(config, "vad_cpu_mem_arena", "1") != "0")
    except Exception as e:  # noqa: BLE001 - any load failure names the directory
        raise pb_utils.TritonModelException(
            f"{config.get('name')}: cannot load the FSMN-VAD from {model_dir} (export the `vad` stage): {e}") from e


def job_limits(config: dict) -> JobLimits:
    raw = param(config, "speaker_merge_threshold", "0.78")
    try:
        merge = float(raw)
    except ValueError:
        merge = math.nan
    if not 0.0 < merge <= 1.0:
        raise pb_utils.TritonModelException(
            f"{config.get('name')}: parameter speaker_merge_threshold={raw!r} must be a number in (0, 1]")
    return JobLimits(
        max_segment_ms=int_param(config, "max_segment_ms", 60100, minimum=1000),
        min_segment_ms=int_param(config, "min_segment_ms", 30, minimum=1),
        max_inflight=int_param(config, "max_inflight_segments", 16, minimum=1),
        initial_inflight=int_param(config, "initial_inflight_segments", 16, minimum=1),
        max_pending_ms=int_param(config, "max_pending_ms", 180000, minimum=1000),
        merge_threshold=merge)


class JobThreads:
    """The threads of a job model's stub.

    The python backend runs every BLS `async_exec` on a thread of the event loop's default executor for the
    whole call, and that executor has min(32, cores + 4) threads: on a 2-core machine at most 6 segments
    were in `asr` at once (whatever max_inflight_segments said), and a VAD stride queued behind them. So
    the default executor gets `bls_threads` threads (set on the stub's loop at its first request), and the
    CPU work of the jobs (VAD strides, clustering) gets its own `cpu_threads`.
    """

    def __init__(self, config: dict):
        self.bls_threads = int_param(config, "bls_threads", 64, minimum=1)
        self.cpu = concurrent.futures.ThreadPoolExecutor(
            max_workers=int_param(config, "cpu_threads", 1, minimum=1), thread_name_prefix="job-cpu")
        self._loop = None

    def on_loop(self) -> None:
        """Call from `execute`: gives the running loop its BLS threads (once per loop)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
                max_workers=self.bls_threads, thread_name_prefix="bls"))
            self._loop = loop

    def close(self) -> None:
        self.cpu.shutdown(wait=False, cancel_futures=True)


async def _recognize(wav: np.ndarray, hotwords: tuple[str, ...]) -> dict:
    hot = np.array([w.encode("utf-8") for w in hotwords] or [b""], dtype=object)
    out = await call("asr", [pb_utils.Tensor("WAV", wav[None]), pb_utils.Tensor("HOTWORDS", hot[None])],
                     ["TEXT", "WORDS", "TIMESTAMPS", "WORD_LOGPROBS"])
    return {"text": strings(out["TEXT"])[0], "words": strings(out["WORDS"]),
            "timestamps": out["TIMESTAMPS"].reshape(-1, 2).tolist(),
            "logprobs": out["WORD_LOGPROBS"].reshape(-1).tolist()}


async def _punctuate(piece: str, state: str, final: bool) -> dict:
    out = await call("punc", [pb_utils.Tensor("TEXT", np.array([piece.encode("utf-8")], dtype=object)),
                              pb_utils.Tensor("STATE", np.array([state.encode("utf-8")], dtype=object)),
                              pb_utils.Tensor("FINAL", np.array([final], dtype=bool))],
                     ["PUNC_TEXT", "WORDS", "PUNC_MARKS", "STATE"])
    return {"text": strings(out["PUNC_TEXT"])[0], "words": strings(out["WORDS"]),
            "marks": strings(out["PUNC_MARKS"]), "state": strings(out["STATE"])[0]}


async def _embed(window: np.ndarray) -> np.ndarray:
    out = await call("speaker_embedding", [pb_utils.Tensor("WAV", window[None])], ["EMBEDDING"])
    return out["EMBEDDING"].reshape(-1)


async def _sensevoice(wav: np.ndarray, language: str, use_itn: bool, timestamps: bool = False) -> dict:
    """One segment on the `sensevoice` model: its text is one segment-level word, with the detected
    language, emotion and events. With `timestamps`, `token_words`/`token_timestamps` are SenseVoice's
    own words with their CTC-alignment times (the model's WORDS/TIMESTAMPS, FunASR's output_timestamp)
    without what the text has not got (tags) or what is no word (a lone mark). A repository without
    the sensevoice export is the caller's error (INVALID_ARG naming it), not an internal one."""
    outputs = ["TEXT", "DETECTED_LANGUAGE", "EMOTION", "EVENTS", *(["WORDS", "TIMESTAMPS"] if timestamps else [])]
    try:
        out = await call("sensevoice", [pb_utils.Tensor("WAV", wav[None]),
                                        pb_utils.Tensor("LANGUAGE", np.array([[language.encode("utf-8")]], dtype=object)),
                                        pb_utils.Tensor("USE_ITN", np.array([[use_itn]], dtype=bool))], outputs)
    except BlsError as e:
        if "not exported" in str(e):
            raise JobInputError(str(e)) from e
        raise
    text = strings(out["TEXT"])[0]
    result = {"text": text, "words": [text] if text else [],
              "timestamps": [[0, len(wav) * 1000 // 16000]] if text else [],
              "language": strings(out["DETECTED_LANGUAGE"])[0], "emotion": strings(out["EMOTION"])[0],
              "events": strings(out["EVENTS"])}
    if timestamps and text:
        pairs = [(w.removeprefix("▁"), t) for w, t in zip(strings(out["WORDS"]), out["TIMESTAMPS"].reshape(-1, 2).tolist())]
        pairs = [(w, t) for w, t in pairs if not _TAG.search(w) and any(ch.isalnum() for ch in w)]
        result["token_words"] = [w for w, _ in pairs]
        result["token_timestamps"] = [t for _, t in pairs]
    return result


BLS = Backend(recognize=_recognize, punctuate=_punctuate, embed=_embed, itn=itn, sensevoice=_sensevoice)
