"""`funasr-triton listen` (seed 002's event stream) against the real Triton: a file, raw PCM on stdin, and
failures as `core.error_event` lines (never a traceback)."""
from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest

from tests.conftest import BIN, ROOT

KEYS = {"voice.asr_text.partial": {"type", "ts", "trace_id", "source", "text", "confidence"},
        "voice.asr_text.final": {"type", "ts", "trace_id", "source", "text", "confidence"},
        "core.error_event": {"type", "ts", "trace_id", "source", "error_code", "message"}}


def listen(cli_env, *args, stdin: bytes | None = None, timeout: float = 300) -> tuple[list[dict], str, int]:
    proc = subprocess.run([str(BIN / "funasr-triton"), "listen", *args], input=stdin, capture_output=True,
                          env=cli_env, cwd=ROOT, timeout=timeout)
    lines = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    for line in lines:
        assert set(line) == KEYS[line["type"]], line
        assert isinstance(line["ts"], int) and abs(line["ts"] - time.time() * 1000) < 600_000
    return lines, proc.stderr.decode("utf-8", "replace"), proc.returncode


def _check_utterances(lines: list[dict]) -> list[dict]:
    finals = [x for x in lines if x["type"] == "voice.asr_text.final"]
    assert finals, lines
    assert not [x for x in lines if x["type"] == "core.error_event"]
    # one trace_id per utterance: its partials carry the trace_id of the final that closes it
    open_trace = None
    for x in lines:
        if open_trace is not None:
            assert x["trace_id"] == open_trace
        open_trace = None if x["type"] == "voice.asr_text.final" else x["trace_id"]
    assert len({f["trace_id"] for f in finals}) == len(finals)
    assert all(f["source"] == "funasr.streaming.paraformer-zh" and f["text"] for f in finals)
    assert all(0.0 <= f["confidence"] <= 1.0 for f in finals)
    return finals


def test_listen_file(triton, cli_env, speech_wav):
    lines, stderr, rc = listen(cli_env, "--url", triton.grpc_url, str(speech_wav))
    assert rc == 0, stderr
    assert any(x["type"] == "voice.asr_text.partial" for x in lines)
    _check_utterances(lines)
    assert "Traceback" not in stderr


def test_listen_stdin_pcm_realtime_with_itn(triton, cli_env, speech_wav, client):
    from tests.synth import SENTENCES, compose

    pcm = (np.clip(compose(0.3, SENTENCES[0], 1.5, SENTENCES[1], 0.5), -1, 1) * 32767).astype("<i2").tobytes()
    t0 = time.monotonic()
    lines, stderr, rc = listen(cli_env, "--url", triton.grpc_url, "--realtime", "--itn", "--chunk-ms", "600",
                               "--endpoint-silence-ms", "800", "--hotwords", "北京 天气", "-", stdin=pcm)
    assert rc == 0, stderr
    assert time.monotonic() - t0 >= len(pcm) / 2 / 16000 * 0.9  # paced in real time
    finals = _check_utterances(lines)
    # streaming_asr applied the itn model to each sentence of the finals (its grammars leave the random test
    # model's text as it is or fix it)
    before = int(client.statistics("itn")["model_stats"][0].get("inference_count", 0))
    plain, _, _ = listen(cli_env, "--url", triton.grpc_url, "--hotwords", "北京 天气", "-", stdin=pcm)
    assert int(client.statistics("itn")["model_stats"][0].get("inference_count", 0)) == before  # no --itn: none
    assert [f["text"] for f in finals] == [_per_sentence(client, f["text"]) for f in _check_utterances(plain)]


def _per_sentence(client, text: str) -> str:
    from funasr_triton_models.sentences import split_sentences

    done, rest = split_sentences(text)
    return "".join(client.normalize(done + ([rest] if rest else [])))


@pytest.mark.parametrize("args, code", [
    (["--url", "127.0.0.1:9"], "backend_unavailable"),
    (["--endpoint-silence-ms", "5"], "infer_partial_failed"),  # streaming_asr refuses the CONFIG
    (["--chunk-ms", "100"], "invalid_argument"),
])
def test_listen_failures_are_error_events(triton, cli_env, speech_wav, args, code):
    url = [] if "--url" in args else ["--url", triton.grpc_url]
    lines, stderr, rc = listen(cli_env, *url, *args, str(speech_wav))
    assert rc != 0
    assert lines and lines[-1]["type"] == "core.error_event" and lines[-1]["error_code"] == code, lines
    assert lines[-1]["source"] == "voice.asr" and lines[-1]["message"]
    assert "Traceback" not in stderr


def test_listen_unreadable_file(triton, cli_env, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    lines, stderr, rc = listen(cli_env, "--url", triton.grpc_url, str(bad))
    assert rc == 1 and lines[-1]["type"] == "core.error_event" and lines[-1]["error_code"] == "audio_input_failed"
    assert "Traceback" not in stderr
