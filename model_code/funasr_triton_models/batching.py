"""Grouping a stage's requests into padded onnxruntime batches (paraformer, sensevoice on the cpu profile)."""
from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def length_batches(items: Iterable[T], length: Callable[[T], int], max_batch_frames: int,
                   max_pad_fraction: float = math.inf) -> Iterator[list[T]]:
    """Consecutive items by length (shortest first) in batches padded to their longest item: a batch ends before
    the item that would make it more than `max_batch_frames` padded frames, or its padding more than
    `max_pad_fraction` of its real frames (a 2 s segment padded to a 30 s one costs as much as a 30 s one)."""
    batch: list[T] = []
    frames = 0
    for item in sorted(items, key=length):
        t = length(item)  # the longest so far: the batch is padded to it
        padded = (len(batch) + 1) * t
        if batch and (padded > max_batch_frames or padded > (1 + max_pad_fraction) * (frames + t)):
            yield batch
            batch, frames = [], 0
        batch.append(item)
        frames += t
    if batch:
        yield batch
