"""Helpers shared by the per-model exporters."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def legacy_onnx_export() -> Iterator[None]:
    """Force torch's TorchScript-based exporter.

    torch >= 2.9 defaults to the dynamo exporter, which cannot trace FunASR's data-dependent
    CIF loops; the legacy exporter (still in torch 2.13) can. Every export goes through here.
    """
    import torch

    original = torch.onnx.export

    @functools.wraps(original)
    def export(*args, **kwargs):
        kwargs.setdefault("dynamo", False)
        return original(*args, **kwargs)

    torch.onnx.export = export
    try:
        yield
    finally:
        torch.onnx.export = original


def quantize_int8(src: Path, dst: Path, exclude_substrings: tuple[str, ...] = ("output",)) -> Path:
    """Dynamic int8 (MatMul, per-channel, QUInt8) as FunASR quantizes, for the CPU profile."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node]
    exclude = [n for n in nodes if any(s in n for s in exclude_substrings)]
    quantize_dynamic(
        model_input=str(src),
        model_output=str(dst),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QUInt8,
        nodes_to_exclude=exclude,
    )
    return dst


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
