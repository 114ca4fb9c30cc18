"""BLS calls to the other stages that more than one model makes (Triton only: triton_python_backend_utils).

`itn`: the `itn` model, batched (transcribe, pipeline and streaming_asr); `StreamingBls`: streaming_asr's
2-pass finals (the offline `asr` ensemble, `punc`, `itn`).
"""
from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from .stage import call, strings

ITN_BATCH = 64  # the itn model's max_batch_size


async def itn(texts: list[str]) -> list[str]:
    """Inverse text normalization of each text (the `itn` model, one batched request per 64 texts)."""
    out: list[str] = []
    for i in range(0, len(texts), ITN_BATCH):
        array = np.array([[t.encode("utf-8")] for t in texts[i:i + ITN_BATCH]], dtype=object)
        res = await call("itn", [pb_utils.Tensor("TEXT", array)], ["TEXT"])
        out.extend(strings(res["TEXT"]))
    return out


class StreamingBls:
    """2-pass: the offline `asr` ensemble re-decodes a sentence, `punc` punctuates it, `itn` normalizes it."""

    async def recognize(self, wav: np.ndarray, hotwords: list[str]):
        hot = np.array([[w.encode("utf-8") for w in hotwords] or [b""]], dtype=object)
        out = await call("asr", [pb_utils.Tensor("WAV", wav.astype(np.float32)[None]), pb_utils.Tensor("HOTWORDS", hot)],
                         ["TEXT", "WORDS", "TIMESTAMPS"])
        return (strings(out["TEXT"])[0], strings(out["WORDS"]),
                [[int(b), int(e)] for b, e in out["TIMESTAMPS"].reshape(-1, 2)])

    async def punctuate(self, text: str) -> str:
        out = await call("punc", [pb_utils.Tensor("TEXT", np.array([text.encode("utf-8")], dtype=object))],
                         ["PUNC_TEXT"])
        return strings(out["PUNC_TEXT"])[0]

    async def normalize(self, texts: list[str]) -> list[str]:
        return await itn(texts)
