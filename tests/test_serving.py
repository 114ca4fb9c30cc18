"""The served pipeline through the real embedded Triton: formats, result shape, batching, isolation."""
from __future__ import annotations

import concurrent.futures as cf
import json
import subprocess

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from funasr_triton.triton_client import TranscribeOptions, build_inputs
from tests.synth import SENTENCES, compose, convert, write_wav


@pytest.fixture(scope="module")
def speech():
    return compose(SENTENCES[0], 1.2, SENTENCES[1], 0.5, SENTENCES[2])


def _check_result(result: dict, duration_ms: int) -> None:
    assert result["text"]
    assert result["vad_segments"], "VAD found no speech in spoken audio"
    assert result["duration_ms"] == duration_ms
    prev_end = 0
    for s in result["sentences"]:
        assert 0 <= s["start_ms"] <= s["end_ms"] <= duration_ms + 100
        assert s["text"]
        assert len(s["words"]) == len(s["timestamps"]) > 0
        for b, e in s["timestamps"]:
            assert b <= e and b >= prev_end - 1, "word timestamps must not go backwards"
            prev_end = e


def test_pipeline_result(client, speech):
    result = client.transcribe(speech)
    _check_result(result, len(speech) // 16)
    # punctuated text ends with sentence-final punctuation; raw text keeps the ASR words
    assert result["text"][-1] in "。？.?"
    no_punc = client.transcribe(speech, TranscribeOptions(punctuation=False))
    assert not any(ch in no_punc["text"] for ch in "，。？")
    assert no_punc["vad_segments"] == result["vad_segments"]


def test_hotwords_reach_the_model(client, speech):
    plain = client.transcribe(speech, TranscribeOptions(punctuation=False))
    biased = client.transcribe(speech, TranscribeOptions(hotwords=["今天", "阿里巴巴"], punctuation=False))
    assert biased["hotwords"] == ["今天", "阿里巴巴"]
    # random-weight SeACo: the bias branch replaces tokens, so the text changes
    assert biased["text"] != plain["text"]


@pytest.mark.parametrize("fmt,args", [
    ("wav", ()), ("flac", ("-ar", "8000")), ("mp3", ("-ac", "2")), ("m4a", ("-c:a", "aac")), ("ogg", ("-c:a", "libopus")),
])
def test_transcribe_cli_formats(triton, cli_env, tmp_path, speech, fmt, args):
    src = write_wav(tmp_path / "src.wav", speech)
    path = src if fmt == "wav" and not args else convert(src, tmp_path / f"clip.{fmt}", *args)
    out = subprocess.run(["funasr-triton", "transcribe", "--json", "--url", triton.grpc_url, str(path)],
                         capture_output=True, text=True, env=cli_env, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    _check_result(result, result["duration_ms"])
    assert abs(result["duration_ms"] - len(speech) // 16) < 100


def test_transcribe_cli_reports_bad_file(triton, cli_env, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not audio")
    out = subprocess.run(["funasr-triton", "transcribe", "--url", triton.grpc_url, str(bad)],
                         capture_output=True, text=True, env=cli_env, timeout=60)
    assert out.returncode == 1 and "could not decode" in out.stderr


def _stats(client, model):
    s = client.statistics(model)["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))  # JSON omits zeros


def test_segments_are_batched_across_requests(client):
    clips = [compose(SENTENCES[i % len(SENTENCES)], 0.3 + 0.1 * i, SENTENCES[(i + 3) % len(SENTENCES)])
             for i in range(16)]
    inf0, exe0 = _stats(client, "paraformer")
    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda w: client.transcribe(w, TranscribeOptions(punctuation=False)), clips))
    assert all(r["text"] for r in results)
    inf1, exe1 = _stats(client, "paraformer")
    inferences, executions = inf1 - inf0, exe1 - exe0
    assert inferences >= 16
    assert executions < inferences, f"paraformer ran {executions} batches for {inferences} segments"
    # the export is padding-invariant: a segment padded next to longer ones decodes exactly as alone
    alone = [client.transcribe(w, TranscribeOptions(punctuation=False)) for w in clips]
    assert [r["sentences"] for r in results] == [r["sentences"] for r in alone]


def _raw_infer(url, model, arrays):
    c = grpcclient.InferenceServerClient(url)
    try:
        inputs = []
        for name, (array, dtype) in arrays.items():
            inputs.append(grpcclient.InferInput(name, list(array.shape), dtype))
            inputs[-1].set_data_from_numpy(array)
        return c.infer(model, inputs, client_timeout=120)
    finally:
        c.close()


BAD_REQUESTS = {
    "empty": ("pipeline", {"WAV": (np.zeros((1, 0), np.float32), "FP32")}, "empty"),
    "nan": ("pipeline", {"WAV": (np.full((1, 16000), np.nan, np.float32), "FP32")}, "NaN"),
    "wrong_dtype": ("pipeline", {"WAV": (np.zeros((1, 16000), np.int32), "INT32")}, "data-type"),
    "too_many_hotwords": ("pipeline", {
        "WAV": (np.zeros((1, 16000), np.float32), "FP32"),
        "HOTWORDS": (np.array([[f"词{i}".encode() for i in range(60)]], dtype=object), "BYTES")}, None),
    "segment_too_long": ("asr", {
        "WAV": (np.zeros((1, 16000 * 61), np.float32), "FP32"),
        "HOTWORDS": (np.array([[b""]], dtype=object), "BYTES")}, "samples"),
    "vad_nan": ("vad", {"WAV": (np.full(16000, np.nan, np.float32), "FP32")}, "NaN"),
    "speaker_too_short": ("speaker_embedding", {"WAV": (np.zeros((1, 800), np.float32), "FP32")}, "samples"),
    "punc_bad_utf8": ("punc", {"TEXT": (np.array([b"\xff\xfe"], dtype=object), "BYTES")}, "UTF-8"),
    "segment_too_short": ("asr", {
        "WAV": (np.zeros((1, 100), np.float32), "FP32"),
        "HOTWORDS": (np.array([[b""]], dtype=object), "BYTES")}, "samples"),
}


def test_bad_requests_fail_alone(triton, client, speech):
    """Bad requests get a clear error each while concurrent good requests all succeed."""
    good_ref = client.transcribe(speech, TranscribeOptions(punctuation=False))["text"]
    hot_speech = compose(SENTENCES[3])

    def good(_):
        return client.transcribe(speech, TranscribeOptions(punctuation=False))["text"]

    def bad(name):
        model, arrays, _ = BAD_REQUESTS[name]
        if name == "too_many_hotwords":
            arrays = dict(arrays, WAV=(hot_speech[None], "FP32"))
        try:
            _raw_infer(triton.grpc_url, model, arrays)
        except InferenceServerException as e:
            return e
        return None

    with cf.ThreadPoolExecutor(12) as pool:
        goods = [pool.submit(good, i) for i in range(6)]
        bads = {name: pool.submit(bad, name) for name in BAD_REQUESTS}
        assert [g.result() for g in goods] == [good_ref] * 6
        for name, fut in bads.items():
            err = fut.result()
            assert err is not None, f"{name} was accepted"
            want = BAD_REQUESTS[name][2] or "hotwords"
            assert want.lower() in err.message().lower(), f"{name}: {err.message()}"
    assert triton.server.is_ready()


def test_build_inputs_shapes():
    inputs = build_inputs(np.zeros(1600, np.float32), TranscribeOptions(hotwords=["阿里", " "]))
    names = {i.name(): i.shape() for i in inputs}
    assert names == {"WAV": [1, 1600], "HOTWORDS": [1, 1], "ENABLE_PUNC": [1, 1], "ENABLE_TIMESTAMPS": [1, 1]}


def test_profile_selects_configs(repository, tmp_path, speech):
    """--model-config-name: cpu-int8 loads configs/cpu-int8.pbtxt where it exists, config.pbtxt elsewhere."""
    from funasr_triton.triton_client import TritonAsrClient
    from tests.conftest import start_triton

    handle = start_triton(repository, tmp_path, profile="cpu-int8")
    try:
        raw = grpcclient.InferenceServerClient(handle.grpc_url)
        para = raw.get_model_config("paraformer", as_json=True)["config"]
        punc = raw.get_model_config("punc", as_json=True)["config"]
        vad = raw.get_model_config("vad", as_json=True)["config"]
        raw.close()
        assert para["parameters"]["model_file"]["string_value"] == "model_quant.onnx"
        assert punc["parameters"]["model_file"]["string_value"] == "model_quant.onnx"
        assert "model_file" not in vad.get("parameters", {})
        client = TritonAsrClient(handle.grpc_url)
        assert client.transcribe(speech)["text"]
        client.close()
    finally:
        handle.server.stop()
