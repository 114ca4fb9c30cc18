"""SeACo-Paraformer (offline) under onnxruntime for the `paraformer` stage of the cpu profiles: ragged requests in
padded batches.

Requests are grouped by hotword count (SeACo attends over the hotword list, so lists of different sizes cannot
share a batch), then batched by length (batching.length_batches: at most `max_batch_frames` padded frames, padding
at most `max_pad_fraction` of the real frames), run once per batch and split back so each request gets exactly
its own outputs. A batch that fails is run again request by request, so only the culprit fails.
"""
from __future__ import annotations

import numpy as np

from .batching import length_batches

OUTPUT_ORDER = ["token_ids", "token_num", "us_alphas", "us_cif_peak", "token_logprobs"]
FEATS_DIM = 560  # LFR 7 x 80 mel bins


class PaddedParaformer:
    def __init__(self, session, max_batch_frames: int, max_pad_fraction: float):
        self.session = session
        self.max_batch_frames = max_batch_frames
        self.max_pad_fraction = max_pad_fraction

    def run(self, items: list) -> dict:
        """items: [(index, speech, ids, lengths)] sharing one hotword count -> {index: outputs}."""
        b = len(items)
        t = max(x[1].shape[0] for x in items)
        k = max(x[2].shape[1] for x in items)
        n = items[0][2].shape[0]
        speech = np.zeros((b, t, FEATS_DIM), dtype=np.float32)
        speech_lengths = np.zeros(b, dtype=np.int32)
        hw_ids = np.zeros((b, n, k), dtype=np.int32)
        hw_lengths = np.zeros((b, n), dtype=np.int32)
        for row, (_, s, ids, lengths) in enumerate(items):
            speech[row, : s.shape[0]] = s
            speech_lengths[row] = s.shape[0]
            hw_ids[row, :, : ids.shape[1]] = ids
            hw_lengths[row] = lengths
        token_ids, token_num, us_alphas, us_peak, logprobs = self.session.run(OUTPUT_ORDER, {
            "speech": speech, "speech_lengths": speech_lengths,
            "hotword_ids": hw_ids, "hotword_lengths": hw_lengths})
        out = {}
        for row, (index, s, _, _) in enumerate(items):
            num = int(token_num[row])
            frames = 3 * s.shape[0]
            tokens = min(num, token_ids.shape[1])
            out[index] = (token_ids[row, :tokens], num, us_alphas[row, :frames], us_peak[row, :frames],
                          logprobs[row, :tokens])
        return out

    def batches(self, parsed: dict):
        groups = {}
        for index, (speech, ids, lengths) in parsed.items():
            groups.setdefault(ids.shape[0], []).append((index, speech, ids, lengths))
        for items in groups.values():
            yield from length_batches(items, lambda x: x[1].shape[0], self.max_batch_frames, self.max_pad_fraction)

    def decode(self, parsed: dict) -> dict:
        """{index: (speech, hotword ids, hotword lengths)} -> {index: outputs, or the exception of that request}."""
        results = {}
        for batch in self.batches(parsed):
            try:
                results.update(self.run(batch))
            except Exception as batch_exc:  # noqa: BLE001 - retry alone so only the culprit fails
                for item in batch:
                    error = batch_exc
                    if len(batch) > 1:
                        try:
                            results.update(self.run([item]))
                            continue
                        except Exception as item_exc:  # noqa: BLE001
                            error = item_exc
                    results[item[0]] = error
        return results
