"""What `pipeline` and `transcribe` share around LongFileJob: the BLS backend (asr, punc, speaker_embedding, itn), the VAD and the limits.

The VAD runs inside the job's model (its state follows the recording); its weights are the `vad`
model's own files (`<repository>/vad/1`), read once at load time, so the repository holds them once.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from fsmn_vad import FsmnVad
from longfile import Backend, JobLimits
from stage import call, int_param, param, strings


def load_vad(args: dict, config: dict) -> FsmnVad:
    """FsmnVad from the `vad_model_dir` parameter (relative to the repository root; default vad/1)."""
    repository = Path(args["model_repository"]).resolve().parent
    model_dir = repository / param(config, "vad_model_dir", "vad/1")
    try:
        return FsmnVad(model_dir, intra_op_threads=int_param(config, "vad_intra_op_threads", 1))
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
        max_pending_ms=int_param(config, "max_pending_ms", 180000, minimum=1000),
        merge_threshold=merge)


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


ITN_BATCH = 64  # the itn model's max_batch_size


async def _itn(texts: list[str]) -> list[str]:
    """Inverse text normalization of each text (the `itn` model, one batched request per 64 texts)."""
    out: list[str] = []
    for i in range(0, len(texts), ITN_BATCH):
        part = texts[i:i + ITN_BATCH]
        array = np.array([[t.encode("utf-8")] for t in part], dtype=object)
        res = await call("itn", [pb_utils.Tensor("TEXT", array)], ["TEXT"])
        out.extend(strings(res["TEXT"]))
    return out


BLS = Backend(recognize=_recognize, punctuate=_punctuate, embed=_embed, itn=_itn)
