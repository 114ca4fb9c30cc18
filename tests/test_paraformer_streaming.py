"""The streaming Paraformer runtime (funasr_triton_models.paraformer_online) against
funasr 1.4.16 AutoModel streaming ``generate(cache=..., is_final=...)``, chunk by chunk.

The model is the tiny random-weight ParaformerStreaming test build (real module layout and
8404-token vocabulary), exported once per module with export_paraformer_streaming. Audio is
espeak-ng Mandarin made at test time. Tokens must be identical at every step.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "models" / "test"
sys.path.insert(0, str(ROOT / "export"))

from funasr_triton_tools.speech import SENTENCES, espeak  # noqa: E402
from funasr_triton_models import paraformer_online  # noqa: E402

ParaformerOnline = paraformer_online.ParaformerOnline


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_dir() -> Path:
    from funasr_triton_export.sources import build_test_model

    return build_test_model("streaming", CACHE).path


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    from funasr_triton_export.exporters.paraformer_streaming import export_paraformer_streaming

    before = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    out = tmp_path_factory.mktemp("streaming_asr") / "paraformer"
    result = export_paraformer_streaming(model_dir, out, quantize=True)
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == before, "export wrote into model_dir"
    return out, result


@pytest.fixture(scope="module")
def runtime(exported) -> ParaformerOnline:
    return ParaformerOnline(exported[0])


@pytest.fixture(scope="module")
def reference(model_dir):
    """AutoModel with generate_chunk wrapped so the exact token list of every chunk is recorded."""
    from funasr import AutoModel

    auto = AutoModel(model=str(model_dir), disable_update=True, disable_pbar=True, device="cpu")
    recorded: list[list[str]] = []
    original = auto.model.generate_chunk

    def generate_chunk(*args, **kwargs):
        tokens = original(*args, **kwargs)
        recorded.append(list(tokens))
        return tokens

    auto.model.generate_chunk = generate_chunk
    return auto, recorded


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    a, b, c = (espeak(SENTENCES[i]) for i in (0, 1, 2))
    return {
        "ragged": a,                          # 101387 samples: last chunk 5387 (not a multiple of 600 ms)
        "tail": b[: 8 * 9600 + 500],          # last chunk 500 samples < 960: funasr's tail_chunk path
        "exact": c[: 8 * 9600],               # last chunk exactly 9600: a normal chunk + an empty tail
        "long_final": b[: 7 * 9600 + 9000],   # final chunk of 9000 samples: CIF reads its look-ahead too
        "short": a[:1200],                    # the whole stream is one short final chunk
    }


def _chunks(wav: np.ndarray, size: int) -> list[np.ndarray]:
    return [wav[i:i + size] for i in range(0, len(wav), size)]


def _reference_steps(reference, wav, chunk_size, look_back=(0, 0)) -> list[tuple[list[str], str]]:
    """Per chunk: (tokens generate_chunk returned, summed over the chunk's sub-steps; result text)."""
    auto, recorded = reference
    cache: dict = {}
    chunks = _chunks(wav, ParaformerOnline.chunk_samples(chunk_size))
    steps = []
    for i, chunk in enumerate(chunks):
        recorded.clear()
        res = auto.generate(input=chunk, cache=cache, is_final=i == len(chunks) - 1,
                            chunk_size=list(chunk_size), encoder_chunk_look_back=look_back[0],
                            decoder_chunk_look_back=look_back[1])
        steps.append(([t for part in recorded for t in part], res[0]["text"]))
    return steps


def _runtime_steps(runtime, wav, chunk_size, look_back=(0, 0)) -> list[list[str]]:
    stream = runtime.new_stream(chunk_size, *look_back)
    chunks = _chunks(wav, ParaformerOnline.chunk_samples(chunk_size))
    out = [runtime.decode([(stream, chunk, i == len(chunks) - 1)])[0] for i, chunk in enumerate(chunks)]
    assert stream.finished
    return out


# ------------------------------------------------------------------------------------- export


def test_export_writes_everything(exported):
    out, result = exported
    expected = {"encoder.onnx", "decoder.onnx", "encoder_quant.onnx", "decoder_quant.onnx", "am.mvn",
                "tokens.json", "paraformer_streaming.json", "encoder_lookback.onnx", "encoder_lookback_quant.onnx"}
    assert set(result["files"]) == expected
    assert {p.name for p in out.iterdir()} == expected
    assert result["max_abs_diff"] < 1e-4
    cfg = json.loads((out / "paraformer_streaming.json").read_text())
    assert cfg["model_class"] == "ParaformerStreaming"
    assert cfg["frontend_conf"]["dither"] == 0.0 and cfg["frontend_conf"]["lfr_m"] == 7
    assert cfg["chunk_size"] == [0, 10, 5]
    assert cfg["predictor"] == {"threshold": 1.0, "tail_threshold": 0.45}
    assert (cfg["sos"], cfg["eos"], cfg["blank_id"]) == (1, 2, 0)
    assert cfg["decoder"]["in_cache_names"] == ["in_cache_0", "in_cache_1"]
    assert cfg["decoder"]["cache_shape"] == [cfg["encoder_output_size"], 10]
    assert len(json.loads((out / "tokens.json").read_text())) == cfg["vocab_size"] == 8404

    import onnxruntime as ort

    dec = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in dec.get_inputs()] == cfg["decoder"]["inputs"]
    assert [o.name for o in dec.get_outputs()] == cfg["decoder"]["outputs"]


def test_export_needs_config_yaml(tmp_path):
    from funasr_triton_export.exporters.paraformer_streaming import export_paraformer_streaming

    with pytest.raises(FileNotFoundError, match="config.yaml"):
        export_paraformer_streaming(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("clip,chunk_size", [
    ("ragged", (0, 10, 5)),
    ("tail", (0, 10, 5)),
    ("exact", (0, 10, 5)),
    ("long_final", (0, 10, 5)),
    ("short", (0, 10, 5)),
    ("ragged", (0, 8, 4)),
    ("tail", (0, 8, 4)),
])
def test_tokens_equal_automodel_chunk_by_chunk(runtime, reference, clips, clip, chunk_size):
    from funasr.utils.postprocess_utils import sentence_postprocess

    want = _reference_steps(reference, clips[clip], chunk_size)
    got = _runtime_steps(runtime, clips[clip], chunk_size)
    assert len(got) == len(want)
    for step, ((want_tokens, want_text), got_tokens) in enumerate(zip(want, got)):
        assert got_tokens == want_tokens, f"{clip} {chunk_size} chunk {step}"
        assert sentence_postprocess(got_tokens)[0] == want_text, f"{clip} {chunk_size} chunk {step}"
    assert sum(len(t) for t in got) >= 3 * len(got) // 2 or clip == "short", "random weights fired too rarely"


@pytest.mark.parametrize("clip,chunk_size,look_back", [
    ("ragged", (0, 10, 5), (4, 0)),     # what FunASR's own client sends
    ("tail", (0, 10, 5), (4, 0)),
    ("exact", (0, 10, 5), (4, 0)),
    ("long_final", (0, 10, 5), (2, 0)),
    ("ragged", (0, 8, 4), (4, 0)),
    ("ragged", (5, 10, 5), (4, 0)),     # left overlap frames are kept in the cache too
    ("ragged", (0, 10, 5), (0, 2)),
    ("tail", (0, 10, 5), (4, 1)),
    ("ragged", (0, 8, 4), (1, 3)),
])
def test_look_back_equals_automodel_chunk_by_chunk(runtime, reference, clips, clip, chunk_size, look_back):
    """encoder_chunk_look_back / decoder_chunk_look_back as AutoModel streaming generate() takes them."""
    from funasr.utils.postprocess_utils import sentence_postprocess

    want = _reference_steps(reference, clips[clip], chunk_size, look_back)
    got = _runtime_steps(runtime, clips[clip], chunk_size, look_back)
    assert len(got) == len(want)
    for step, ((want_tokens, want_text), got_tokens) in enumerate(zip(want, got)):
        assert got_tokens == want_tokens, f"{clip} {chunk_size} {look_back} chunk {step}"
        assert sentence_postprocess(got_tokens)[0] == want_text, f"{clip} {chunk_size} {look_back} chunk {step}"
    # the look-back must matter on this model, or the comparison proves nothing
    plain = [t for step in _runtime_steps(runtime, clips[clip], chunk_size) for t in step]
    if look_back[0]:
        assert [t for step in got for t in step] != plain, "encoder look-back changed nothing"


def test_look_back_streams_batch_with_others(runtime, clips):
    """Streams with and without look-back share decode() calls and decode as they would alone."""
    chunk_size = (0, 10, 5)
    size = ParaformerOnline.chunk_samples(chunk_size)
    setups = [(clips["ragged"], (4, 0)), (clips["ragged"], (0, 0)), (clips["tail"], (4, 0)), (clips["exact"], (2, 2))]
    single = [[t for step in _runtime_steps(runtime, w, chunk_size, lb) for t in step] for w, lb in setups]
    streams = [runtime.new_stream(chunk_size, *lb) for _, lb in setups]
    chunks = [_chunks(w, size) for w, _ in setups]
    batched: list[list[str]] = [[] for _ in setups]
    for step in range(max(len(c) for c in chunks)):
        owners = [k for k, c in enumerate(chunks) if step < len(c)]
        items = [(streams[k], chunks[k][step], step == len(chunks[k]) - 1) for k in owners]
        for k, tokens in zip(owners, runtime.decode(items)):
            batched[k].extend(tokens)
    assert batched == single


def test_look_back_validation(runtime):
    for bad in (-1, 65, 1.0, True, "4"):
        with pytest.raises(ValueError, match="look_back"):
            runtime.new_stream((0, 10, 5), bad, 0)
        with pytest.raises(ValueError, match="look_back"):
            runtime.new_stream((0, 10, 5), 0, bad)


# ------------------------------------------------------------------------------------- batching


def test_batched_streams_equal_single_streams(runtime, clips):
    chunk_size = (0, 10, 5)
    size = ParaformerOnline.chunk_samples(chunk_size)
    wavs = [clips["ragged"], clips["tail"], clips["exact"], clips["ragged"][: 3 * size + 4000]]
    single = [[t for step in _runtime_steps(runtime, w, chunk_size) for t in step] for w in wavs]

    chunks = [_chunks(w, size) for w in wavs]
    streams = [runtime.new_stream(chunk_size) for _ in wavs]
    starts = [0, 0, 1, 2]  # streams join late and end at different steps
    batched: list[list[str]] = [[] for _ in wavs]
    for step in range(max(s + len(c) for s, c in zip(starts, chunks))):
        items, owners = [], []
        for k, (start, parts) in enumerate(zip(starts, chunks)):
            i = step - start
            if 0 <= i < len(parts):
                items.append((streams[k], parts[i], i == len(parts) - 1))
                owners.append(k)
        for k, tokens in zip(owners, runtime.decode(items)):
            batched[k].extend(tokens)
    assert all(s.finished for s in streams)
    assert batched == single
    assert all(len(t) > 0 for t in batched)


# ------------------------------------------------------------------------------------- API


def test_api_validation(runtime):
    assert ParaformerOnline.chunk_samples((0, 10, 5)) == 9600
    assert ParaformerOnline.chunk_samples([0, 8, 4]) == 7680
    for bad in ((0, 0, 5), (0, 10, 0), (-1, 10, 5), (0, 10), (0, 10.0, 5), "0,10,5"):
        with pytest.raises(ValueError):
            runtime.new_stream(bad)
    stream = runtime.new_stream()
    with pytest.raises(ValueError, match="9600"):
        runtime.decode([(stream, np.zeros(9000, np.float32), False)])  # short but not final
    with pytest.raises(ValueError):
        runtime.decode([(stream, np.zeros(9601, np.float32), True)])  # longer than a chunk
    with pytest.raises(ValueError, match="twice"):
        runtime.decode([(stream, np.zeros(9600, np.float32), False)] * 2)
    assert len(runtime.decode([(stream, np.zeros(9600, np.float32), False)])) == 1
    runtime.decode([(stream, np.zeros(100, np.float32), True)])
    assert stream.finished
    with pytest.raises(paraformer_online.StreamFinishedError):
        runtime.decode([(stream, np.zeros(9600, np.float32), False)])
    assert runtime.decode([]) == []


def test_quantized_graphs_decode(exported, clips):
    q = ParaformerOnline(exported[0], quantized=True)
    tokens = [t for step in _runtime_steps(q, clips["ragged"], (0, 10, 5)) for t in step]
    assert len(tokens) > 10 and all(t in q.tokens for t in tokens)
