"""Alibaba NLS real-time WebSocket (`/ws/v1`, `/ws/v1/asr`) against the real frontend and Triton `streaming_asr`:
the official Python SDK (alibabacloud-nls-python-sdk) for the happy paths, a raw `websockets` client for
protocol violations, and /metrics for the stream's cleanup."""
from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
import urllib.request
import wave

import nls
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import start_frontend
from tests.synth import SENTENCES, espeak, silence

HEX32 = re.compile(r"[0-9a-f]{32}")
FRAME = 3200  # 100 ms of 16 kHz s16le, as Alibaba's samples send
PACE_S = 0.012  # ~8x real time
KEY = "k-nls"


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()


class Speech:
    """Synthetic speech with known spoken regions (ms)."""

    def __init__(self, *parts: str | float):
        chunks, self.regions, t = [], [], 0
        for p in parts:
            x = silence(p) if isinstance(p, float) else espeak(p)
            if isinstance(p, str):
                self.regions.append((t * 1000 // 16000, (t + x.size) * 1000 // 16000))
            chunks.append(x)
            t += x.size
        self.samples = np.concatenate(chunks).astype(np.float32)
        self.pcm = pcm16(self.samples)
        self.duration_ms = self.samples.size * 1000 // 16000

    def at_8k(self) -> bytes:
        return pcm16(self.samples[::2])  # espeak has no energy above 4 kHz worth aliasing


@pytest.fixture(scope="module")
def two_sentences() -> Speech:
    return Speech(0.5, SENTENCES[0], 1.6, SENTENCES[8], 1.2)


@pytest.fixture(scope="module")
def one_sentence() -> Speech:
    return Speech(0.3, SENTENCES[9], 1.0)


@pytest.fixture(scope="module")
def strict(triton, tmp_path_factory):
    """API key required, one stream at most, short start/idle timeouts."""
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("nls-ws-strict"),
                        FUNASR_TRITON_AUTH__API_KEYS=f'["{KEY}"]', FUNASR_TRITON_STREAMING__MAX_STREAMS="1",
                        FUNASR_TRITON_STREAMING__START_TIMEOUT_S="1.5", FUNASR_TRITON_STREAMING__IDLE_TIMEOUT_S="1.5")
    yield fe
    fe.stop()


def ws_url(frontend, path: str = "/ws/v1") -> str:
    return frontend.base_url.replace("http://", "ws://") + path


class Recorder:
    """Every SDK callback in arrival order: (name, parsed message)."""

    def __init__(self):
        self.events: list[tuple[str, dict]] = []
        self.closed = threading.Event()
        self.completed = threading.Event()

    def callback(self, name: str):
        def record(message, *args):
            self.events.append((name, json.loads(message)))
            if name in ("completed", "error"):
                self.completed.set()
        return record

    def on_close(self, *args):
        self.closed.set()

    def names(self) -> list[str]:
        return [m["header"]["name"] for _, m in self.events]

    def of(self, name: str) -> list[dict]:
        return [m for _, m in self.events if m["header"]["name"] == name]


def send_paced(client, pcm: bytes, stop_when: threading.Event | None = None) -> None:
    for i in range(0, len(pcm), FRAME):
        if stop_when is not None and stop_when.is_set():
            return
        try:
            client.send_audio(pcm[i:i + FRAME])
        except Exception:
            if stop_when is not None and stop_when.is_set():  # the server completed and closed meanwhile
                return
            raise
        time.sleep(PACE_S)


def run_transcriber(url: str, pcm: bytes, token: str = "any-token", **start) -> Recorder:
    rec = Recorder()
    t = nls.NlsSpeechTranscriber(url=url, token=token, appkey="any-appkey", on_start=rec.callback("start"),
                                 on_sentence_begin=rec.callback("sentence_begin"),
                                 on_sentence_end=rec.callback("sentence_end"),
                                 on_result_changed=rec.callback("result_changed"),
                                 on_completed=rec.callback("completed"), on_error=rec.callback("error"),
                                 on_close=rec.on_close)
    t.start(**start)
    send_paced(t, pcm)
    t.stop(timeout=60)
    assert rec.closed.wait(10), "the connection did not close after the task"
    rec.task_id = t._NlsSpeechTranscriber__task_id
    return rec


def run_recognizer(url: str, pcm: bytes, **start) -> Recorder:
    rec = Recorder()
    r = nls.NlsSpeechRecognizer(url=url, token="any-token", appkey="any-appkey", on_start=rec.callback("start"),
                                on_result_changed=rec.callback("result_changed"),
                                on_completed=rec.callback("completed"), on_error=rec.callback("error"),
                                on_close=rec.on_close)
    r.start(**start)
    send_paced(r, pcm, stop_when=rec.completed)
    r.stop(timeout=60)
    assert rec.closed.wait(10), "the connection did not close after the task"
    return rec


def assert_headers(rec: Recorder, namespace: str, task_id: str) -> None:
    ids = set()
    for _, m in rec.events:
        h = m["header"]
        assert list(h) == ["namespace", "name", "status", "message_id", "task_id", "status_text"], h
        assert h["namespace"] == namespace and h["task_id"] == task_id, h
        assert h["status"] == 20000000 and h["status_text"] == "Gateway:SUCCESS:Success.", h
        assert HEX32.fullmatch(h["message_id"]) and h["message_id"] not in ids
        ids.add(h["message_id"])


def assert_ints(payload: dict, *keys: str) -> None:
    for k in keys:
        assert type(payload[k]) is int, (k, payload)


def metric(frontend, name: str, **labels) -> float:
    with urllib.request.urlopen(frontend.base_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def start_message(namespace: str = "SpeechTranscriber", name: str = "StartTranscription", **payload) -> str:
    return json.dumps({"header": {"namespace": namespace, "name": name, "task_id": "a" * 32, "message_id": "b" * 32,
                                  "appkey": "any"},
                       "payload": {"format": "pcm", "sample_rate": 16000, **payload}})


def expect_task_failed(ws, status: int, timeout: float = 30) -> dict:
    """The next message is TaskFailed with `status`, and the server closes after it."""
    message = json.loads(ws.recv(timeout=timeout))
    h = message["header"]
    assert h["name"] == "TaskFailed" and h["namespace"] == "Default" and h["status"] == status, message
    assert h["status_text"].startswith("Gateway:") and HEX32.fullmatch(h["message_id"])
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=10)
    return message


# ---- SpeechTranscriber with the official SDK -------------------------------------------------------------------

def test_transcriber_event_sequence(frontend, two_sentences):
    rec = run_transcriber(ws_url(frontend), two_sentences.pcm, aformat="pcm", sample_rate=16000,
                          enable_intermediate_result=True, enable_punctuation_prediction=True,
                          ex={"enable_words": True, "an_unknown_key": 1})
    names = rec.names()
    assert not rec.of("TaskFailed"), rec.events
    assert names[0] == "TranscriptionStarted" and names[-1] == "TranscriptionCompleted" and names.count(
        "TranscriptionCompleted") == 1, names
    assert_headers(rec, "SpeechTranscriber", rec.task_id)
    # per sentence: SentenceBegin, TranscriptionResultChanged*, SentenceEnd with index 1, 2, ...
    body = [m for _, m in rec.events][1:-1]
    sentences = []
    for m in body:
        name, p = m["header"]["name"], m["payload"]
        if name == "SentenceBegin":
            assert not sentences or sentences[-1]["end"] is not None, names
            assert p["index"] == len(sentences) + 1
            assert_ints(p, "index", "time")
            sentences.append({"begin": p, "changed": [], "end": None})
        else:
            assert sentences and sentences[-1]["end"] is None and p["index"] == len(sentences), names
            if name == "TranscriptionResultChanged":
                assert_ints(p, "index", "time", "status")
                sentences[-1]["changed"].append(p)
            else:
                assert name == "SentenceEnd", names
                assert_ints(p, "index", "time", "begin_time", "status")
                sentences[-1]["end"] = p
    assert len(sentences) == len(two_sentences.regions) == 2, names
    for s, (spoken_begin, spoken_end) in zip(sentences, two_sentences.regions):
        end = s["end"]
        assert end is not None
        assert end["result"], "an empty final result for a spoken sentence"
        assert end["begin_time"] == s["begin"]["time"] and end["begin_time"] < end["time"]
        # the sentence covers its spoken region (VAD margins, then max_sentence_silence of trailing silence)
        assert spoken_begin - 400 <= end["begin_time"] <= spoken_begin + 300, (end, spoken_begin)
        assert spoken_end - 300 <= end["time"] <= spoken_end + 1200, (end, spoken_end)
        assert 0 <= end["confidence"] <= 1
        # enable_words: word timings inside the sentence
        assert end["words"] and all(set(w) == {"text", "startTime", "endTime"} for w in end["words"])
        for w in end["words"]:  # the 2-pass timestamps may run a frame or two past the VAD's end
            assert type(w["startTime"]) is int and type(w["endTime"]) is int
            assert end["begin_time"] <= w["startTime"] <= w["endTime"] <= end["time"] + 100
        # intermediate results: the whole sentence so far, growing, at increasing times
        assert s["changed"], "enable_intermediate_result: no TranscriptionResultChanged"
        for a, b in zip(s["changed"], s["changed"][1:]):
            assert b["result"].startswith(a["result"]) and b["time"] >= a["time"]


def test_transcriber_asr_path_without_intermediate_results(frontend, one_sentence):
    """funasr-api's path, the SDK's defaults (flags off): no TranscriptionResultChanged, no words."""
    rec = run_transcriber(ws_url(frontend, "/ws/v1/asr"), one_sentence.pcm)
    assert rec.names() == ["TranscriptionStarted", "SentenceBegin", "SentenceEnd", "TranscriptionCompleted"], \
        rec.names()
    end = rec.of("SentenceEnd")[0]["payload"]
    assert end["index"] == 1 and end["result"] and end["words"] == []


def test_transcriber_wav_at_8k(frontend, one_sentence):
    """format wav (its RIFF header skipped) at 8 kHz: the same sentence as 16 kHz pcm."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(one_sentence.at_8k())
    rec = run_transcriber(ws_url(frontend), buf.getvalue(), aformat="wav", sample_rate=8000)
    assert rec.names() == ["TranscriptionStarted", "SentenceBegin", "SentenceEnd", "TranscriptionCompleted"], \
        rec.names()
    end = rec.of("SentenceEnd")[0]["payload"]
    (spoken_begin, spoken_end), = one_sentence.regions
    assert end["result"] and spoken_begin - 400 <= end["begin_time"] <= spoken_begin + 300
    assert end["time"] <= one_sentence.duration_ms


# ---- SpeechRecognizer with the official SDK --------------------------------------------------------------------

def test_recognizer(frontend, two_sentences):
    rec = run_recognizer(ws_url(frontend, "/ws/v1/asr"), two_sentences.pcm, enable_intermediate_result=True,
                         enable_punctuation_prediction=True)
    names = rec.names()
    assert names[0] == "RecognitionStarted" and names[-1] == "RecognitionCompleted", names
    assert set(names[1:-1]) == {"RecognitionResultChanged"}, names
    assert_headers(rec, "SpeechRecognizer", rec.events[0][1]["header"]["task_id"])
    completed = rec.of("RecognitionCompleted")[0]["payload"]
    assert completed["result"] and type(completed["duration"]) is int
    assert abs(completed["duration"] - two_sentences.duration_ms) <= 100
    # the utterance so far: the last intermediate result is a prefix-compatible draft of the final one
    changed = [m["payload"]["result"] for m in rec.of("RecognitionResultChanged")]
    assert all(isinstance(c, str) and c for c in changed)


def test_recognizer_voice_detection_completes_at_the_first_sentence(frontend, two_sentences):
    rec = run_recognizer(ws_url(frontend), two_sentences.pcm, ex={"enable_voice_detection": True})
    assert rec.names() == ["RecognitionStarted", "RecognitionCompleted"], rec.names()
    completed = rec.of("RecognitionCompleted")[0]["payload"]
    assert completed["result"]
    # completed after the first sentence: well before the audio's end
    assert completed["duration"] < two_sentences.regions[1][0] + 1000, completed


# ---- failures ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("first, status", [
    ("this is not json", 40000002),
    (json.dumps({"header": {"namespace": "SpeechTranscriber", "name": "StopTranscription"}}), 40000002),
    (json.dumps({"hello": "world"}), 40000002),
    (b"\x00\x01" * 1600, 40000002),  # audio before StartTranscription
    (start_message(sample_rate=44100), 41010101),
    (start_message(format="mp3"), 40000003),
    (start_message(max_sentence_silence=100), 40000003),
    (start_message(max_sentence_silence=2500), 40000003),
], ids=["garbage", "stop-first", "no-header", "binary-first", "sample-rate", "format", "silence-low", "silence-high"])
def test_bad_first_message(frontend, first, status):
    with connect(ws_url(frontend)) as ws:
        ws.send(first)
        message = expect_task_failed(ws, status)
    if isinstance(first, str) and '"task_id"' in first and "header" in first and "StartTranscription" in first:
        assert message["header"]["task_id"] == "a" * 32  # echoed even in a failure


def test_bad_messages_after_start(frontend):
    for bad, status in ((b"\x00\x01\x02", 40000002), ("not json", 40000002),
                        (start_message(), 40000002)):  # odd PCM, garbage, a second Start
        with connect(ws_url(frontend)) as ws:
            ws.send(start_message())
            assert json.loads(ws.recv(timeout=10))["header"]["name"] == "TranscriptionStarted"
            ws.send(bad)
            expect_task_failed(ws, status)


def test_token_idle_and_too_many_streams(strict, one_sentence):
    url = ws_url(strict)
    # a bad token: the SDK's on_error gets TaskFailed 40000001, then the connection closes
    rec = run_transcriber(url, b"", token="wrong")
    assert rec.names() == ["TaskFailed"]
    failed = rec.of("TaskFailed")[0]["header"]
    assert failed["status"] == 40000001 and "ACCESS_DENIED" in failed["status_text"]
    assert failed["task_id"] == rec.task_id
    # the right token as the SDK's X-NLS-Token header
    rec = run_transcriber(url, one_sentence.pcm, token=KEY)
    assert rec.names()[0] == "TranscriptionStarted" and rec.names()[-1] == "TranscriptionCompleted", rec.names()
    # ... or as ?token=, while it holds the only stream: a second one is refused with 40000005
    with connect(url + f"?token={KEY}") as first:
        first.send(start_message())
        assert json.loads(first.recv(timeout=10))["header"]["name"] == "TranscriptionStarted"
        rec = run_transcriber(url, b"", token=KEY)
        assert rec.names() == ["TaskFailed"] and rec.of("TaskFailed")[0]["header"]["status"] == 40000005
        # no audio for idle_timeout_s: IDLE_TIMEOUT, closed, the stream freed
        message = expect_task_failed(first, 40000004, timeout=10)
        assert "IDLE_TIMEOUT" in message["header"]["status_text"]
    # no StartTranscription within start_timeout_s: IDLE_TIMEOUT too
    with connect(url + f"?token={KEY}") as ws:
        t0 = time.monotonic()
        expect_task_failed(ws, 40000004, timeout=10)
        assert 1.0 < time.monotonic() - t0 < 8
    rec = run_transcriber(url, one_sentence.pcm, token=KEY)  # the slot is free again
    assert rec.names()[-1] == "TranscriptionCompleted", rec.names()


def test_client_vanishing_mid_stream_frees_the_stream(frontend, two_sentences, one_sentence):
    dropped = metric(frontend, "funasr_streams_total", protocol="nls", outcome="dropped")
    with connect(ws_url(frontend), close_timeout=0.5) as ws:
        ws.send(start_message(enable_intermediate_result=True))
        assert json.loads(ws.recv(timeout=10))["header"]["name"] == "TranscriptionStarted"
        for i in range(0, 30 * FRAME, FRAME):  # 3 s: into the first sentence
            ws.send(two_sentences.pcm[i:i + FRAME])
        time.sleep(0.5)
        assert metric(frontend, "funasr_streams_active", protocol="nls") == 1
        ws.socket.shutdown(socket.SHUT_RDWR)  # no close handshake: the client is just gone

    def counts() -> tuple[float, float]:  # the gauge drops before the Triton abort, the outcome after it
        return (metric(frontend, "funasr_streams_active", protocol="nls"),
                metric(frontend, "funasr_streams_total", protocol="nls", outcome="dropped"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and counts() != (0, dropped + 1):
        time.sleep(0.1)
    assert counts() == (0, dropped + 1)
    # and the service goes on
    rec = run_transcriber(ws_url(frontend), one_sentence.pcm)
    assert rec.names()[-1] == "TranscriptionCompleted" and rec.of("SentenceEnd"), rec.names()


# ---- pure parts --------------------------------------------------------------------------------------------------

def test_wav_header_is_skipped_across_frames():
    from funasr_triton.errors import AsrError
    from funasr_triton.nls_ws.session import WavHeader, join_sentences

    audio = bytes(range(200)) * 4
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(audio)
    data = buf.getvalue()
    # a LIST chunk before `data`, and the header cut into small frames
    data = data[:36] + b"LIST" + (6).to_bytes(4, "little") + b"INFOab" + data[36:]
    strip = WavHeader(8000)
    out = b"".join(strip(data[i:i + 7]) for i in range(0, len(data), 7))
    assert out == audio
    assert WavHeader(16000)(b"\x01\x02" * 10) == b"\x01\x02" * 10  # raw PCM passes through
    with pytest.raises(AsrError) as err:
        WavHeader(16000)(data)
    assert err.value.param == "sample_rate"
    assert join_sentences(["今天。", "hello world.", "ok", "", "明天。"]) == "今天。hello world. ok明天。"
