"""FunASR runtime WebSocket (`/ws/v1/funasr`) against the real frontend and Triton: a client written like
FunASR's `funasr_wss_client.py` (settings message, binary chunks of chunk_interval size, `{"is_speaking":
false}`) in the offline, online and 2pass modes; results checked against Triton itself and the REST route."""
from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import websockets

from tests.conftest import start_frontend
from tests.synth import SENTENCES, compose, write_wav

KEY = "k-funasr"
CHUNK_SIZE = [5, 10, 5]
CHUNK_INTERVAL = 10
PACE_S = 0.008


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def two_sentences() -> np.ndarray:
    return compose(0.5, SENTENCES[0], 1.6, SENTENCES[8], 1.2)


@pytest.fixture(scope="module")
def one_sentence() -> np.ndarray:
    return compose(0.3, SENTENCES[9], 1.0)


@pytest.fixture(scope="module")
def guarded(triton, tmp_path_factory):
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("funasr-ws-guarded"),
                        FUNASR_TRITON_AUTH__API_KEYS=f'["{KEY}"]', FUNASR_TRITON_STREAMING__MAX_STREAMS="1")
    yield fe
    fe.stop()


def ws_url(frontend, query: str = "") -> str:
    return frontend.base_url.replace("http://", "ws://") + "/ws/v1/funasr" + query


async def utterance(ws, settings: dict, audio: bytes, end: dict | None = None) -> list[dict]:
    """One file as funasr_wss_client.py sends it; the server's messages up to the one with is_final."""
    await ws.send(json.dumps({"chunk_size": CHUNK_SIZE, "chunk_interval": CHUNK_INTERVAL, "wav_name": "demo",
                              "wav_format": "pcm", "audio_fs": 16000, "is_speaking": True, "itn": True,
                              "encoder_chunk_look_back": 4, "decoder_chunk_look_back": 0, **settings},
                             ensure_ascii=False))
    fs = settings.get("audio_fs", 16000)
    stride = int(60 * CHUNK_SIZE[1] / CHUNK_INTERVAL / 1000 * fs * 2)
    messages: list[dict] = []

    async def receive():
        while True:
            message = json.loads(await ws.recv())
            messages.append(message)
            if message.get("is_final"):
                return

    receiver = asyncio.create_task(receive())
    for i in range(0, len(audio), stride):
        await ws.send(audio[i:i + stride])
        await asyncio.sleep(PACE_S if settings.get("mode") != "offline" else 0.001)
    await ws.send(json.dumps(end or {"is_speaking": False}))
    await asyncio.wait_for(receiver, 120)
    return messages


def session(url: str, *utterances: tuple[dict, bytes], **connect) -> list[list[dict]]:
    async def main():
        async with websockets.connect(url, subprotocols=["binary"], ping_interval=None, max_size=None,
                                      **connect) as ws:
            assert ws.subprotocol == "binary"
            return [await utterance(ws, settings, audio) for settings, audio in utterances]
    return asyncio.run(main())


def failure(url: str, first: str | bytes | None, **connect) -> tuple[dict, int]:
    """The error message and the close code the server answers `first` with."""
    async def main():
        async with websockets.connect(url, ping_interval=None, **connect) as ws:
            if first is not None:
                await ws.send(first)
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 30)
            return message, closed.value.rcvd.code
    return asyncio.run(main())


def triton_sentences(client, samples: np.ndarray, config: dict) -> list[dict]:
    """sentence_end events of streaming_asr itself for the same audio (the reference for the rendering)."""
    stream = client.open_stream(config)
    events = []
    piece = 60 * config["chunk_size"][1] * 16
    for i in range(0, samples.shape[0], piece):
        events += stream.send(samples[i:i + piece])
    events += stream.send(np.zeros(0, np.float32), end=True)
    return [e for e in events if e["event"] == "sentence_end"]


def assert_timestamps(message: dict) -> None:
    stamps = json.loads(message["timestamp"])
    assert stamps and all(len(t) == 2 and type(t[0]) is int and t[0] <= t[1] for t in stamps)
    sents = message["stamp_sents"]
    assert sents and all(set(s) == {"text_seg", "punc", "start", "end", "ts_list"} for s in sents)
    assert [t for s in sents for t in s["ts_list"]] == stamps
    assert all(s["start"] == s["ts_list"][0][0] and s["end"] == s["ts_list"][-1][1] for s in sents)


def test_online_deltas_add_up_and_a_second_utterance(frontend, client, two_sentences, one_sentence):
    first, second = session(ws_url(frontend), ({"mode": "online", "chunk_size": "5,10,5"}, pcm16(two_sentences)),
                            ({"mode": "online", "wav_name": "second"}, pcm16(one_sentence)))
    assert {m["mode"] for m in first} == {"online"} and all(m["wav_name"] == "demo" for m in first)
    assert [m["is_final"] for m in first] == [False] * (len(first) - 1) + [True]
    assert first[-1]["is_end"] is True
    # the client's look-backs reach the model (funasr_wss_client.py sends 4 and 0)
    reference = triton_sentences(client, two_sentences, {"chunk_size": CHUNK_SIZE, "two_pass": False,
                                                          "punctuation": False, "encoder_chunk_look_back": 4})
    assert len(reference) == 2
    assert "".join(m["text"] for m in first) == "".join(e["text"] for e in reference) != ""
    without = triton_sentences(client, two_sentences, {"chunk_size": CHUNK_SIZE, "two_pass": False,
                                                        "punctuation": False})
    assert [e["text"] for e in without] != [e["text"] for e in reference], "look-back changed nothing"
    assert not any("timestamp" in m for m in first)
    # the connection takes the next file, as FunASR's servers do
    assert second[-1]["is_final"] and all(m["wav_name"] == "second" for m in second)
    assert "".join(m["text"] for m in second)


def test_2pass_sentences_with_timestamps_and_hotwords(frontend, client, two_sentences):
    (messages,) = session(ws_url(frontend), ({"mode": "2pass", "hotwords": json.dumps({"阿里巴巴": 20},
                                                                                      ensure_ascii=False)},
                                             pcm16(two_sentences)))
    assert {m["mode"] for m in messages} == {"2pass-online", "2pass-offline"}
    offline = [m for m in messages if m["mode"] == "2pass-offline" and m["text"]]
    reference = triton_sentences(client, two_sentences, {"chunk_size": CHUNK_SIZE, "hotwords": ["阿里巴巴"],
                                                          "itn": True})  # utterance() sends itn true
    assert [m["text"] for m in offline] == [e["text"] for e in reference] and len(offline) == 2
    for m, e in zip(offline, reference):
        assert_timestamps(m)
        assert json.loads(m["timestamp"]) == [[w["begin_ms"], w["end_ms"]] for w in e["words"]]
        assert "".join(s["text_seg"].replace(" ", "") for s in m["stamp_sents"]) == \
            "".join(w["text"] for w in e["words"])
    # deltas before each corrected sentence; the last message is final: the last sentence, or an empty
    # 2pass-offline when the VAD had closed every sentence before the end of the audio
    last = messages[-1]
    assert last["mode"] == "2pass-offline" and last["is_final"] and last["is_end"]
    assert last is offline[-1] or (last["text"] == "" and messages[-2] is offline[-1])
    assert not any(m["is_final"] for m in messages[:-1])
    first_online = [m for m in messages[:messages.index(offline[0])] if m["mode"] == "2pass-online"]
    assert first_online and all(m["text"] for m in first_online)


def test_offline_pcm_and_wav_equal_the_rest_route(frontend, two_sentences, tmp_path):
    wav = write_wav(tmp_path / "two.wav", two_sentences)
    with httpx.Client(base_url=frontend.base_url, timeout=120) as c:
        rest = c.post("/stream/v1/asr", params={"format": "wav", "enable_punctuation_prediction": "true",
                                                "enable_words": "true",
                                                "enable_inverse_text_normalization": "true"},  # FunASR's itn: on
                      content=wav.read_bytes(), headers={"Content-Type": "application/octet-stream"}).json()
    assert rest["status"] == 20000000 and rest["result"]
    (pcm,), = [session(ws_url(frontend), ({"mode": "offline"}, pcm16(two_sentences)))]
    (as_file,), = [session(ws_url(frontend), ({"mode": "offline", "wav_format": "wav"}, wav.read_bytes()))]
    for messages in (pcm, as_file):
        assert len(messages) == 1, messages
        m = messages[0]
        assert m["mode"] == "offline" and m["is_final"] is True and m["wav_name"] == "demo"
        assert m["text"] == rest["result"]
        assert_timestamps(m)
        words = [w for s in rest["sentences"] for w in s["words"]]
        assert json.loads(m["timestamp"]) == [[w["begin_time"], w["end_time"]] for w in words]


def test_is_end_and_empty_utterances_at_the_root_path(frontend):
    """FunASR's own clients connect to ws://host:port/ (no path)."""
    async def main():
        async with websockets.connect(frontend.base_url.replace("http://", "ws://") + "/", ping_interval=None) as ws:
            out = []
            for mode in ("offline", "online", "2pass"):
                await ws.send(json.dumps({"mode": mode, "wav_name": mode, "is_speaking": True}))
                await ws.send(json.dumps({"is_end": True}))
                out.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            return out
    results = asyncio.run(main())
    assert [(m["mode"], m["text"], m["is_final"]) for m in results] == [
        ("offline", "", True), ("online", "", True), ("2pass-offline", "", True)]


def test_auth_and_too_many_streams(guarded, one_sentence):
    url = ws_url(guarded)
    message, code = failure(url, json.dumps({"mode": "online"}))
    assert code == 1008 and message["error"]["code"] == "unauthorized" and message["is_final"] is True
    message, code = failure(url + "?token=wrong", json.dumps({"mode": "online"}))
    assert code == 1008 and message["error"]["code"] == "unauthorized"
    (ok,) = session(url + f"?token={KEY}", ({"mode": "online"}, pcm16(one_sentence)))
    assert ok[-1]["is_final"] and "".join(m["text"] for m in ok)
    (ok,) = session(url, ({"mode": "2pass"}, pcm16(one_sentence)),
                    additional_headers={"Authorization": f"Bearer {KEY}"})
    assert ok[-1]["mode"] == "2pass-offline" and ok[-1]["is_final"]

    async def two_at_once():
        async with websockets.connect(url + f"?token={KEY}", ping_interval=None) as holder:
            await holder.send(json.dumps({"mode": "online"}))
            await holder.send(pcm16(one_sentence)[:9600])
            await asyncio.sleep(0.5)
            return await asyncio.to_thread(failure, url + f"?token={KEY}", json.dumps({"mode": "2pass"}))
    message, code = asyncio.run(two_at_once())
    assert code == 1013 and message["error"]["code"] == "too_many_streams" and message["mode"] == "2pass"


@pytest.mark.parametrize("first, code", [
    ("not json", "invalid_message"),
    (b"\x00\x00" * 800, "invalid_message"),
    (json.dumps(["mode", "online"]), "invalid_message"),
    (json.dumps({"mode": "3pass"}), "invalid_parameter"),
    (json.dumps({"mode": "online", "chunk_size": "5,x,5"}), "invalid_parameter"),
    (json.dumps({"mode": "online", "chunk_size": [0, 0, 5]}), "bad_chunk_size"),
    (json.dumps({"mode": "online", "encoder_chunk_look_back": -1}), "invalid_parameter"),
    (json.dumps({"mode": "2pass", "audio_fs": 44100}), "unsupported_sample_rate"),
    (json.dumps({"mode": "online", "wav_format": "mp3"}), "invalid_parameter"),
], ids=["garbage", "audio-first", "not-object", "mode", "chunk-size-text", "chunk-size-value", "look-back",
                       "audio-fs", "format"])
def test_bad_settings(frontend, first, code):
    message, close = failure(ws_url(frontend), first)
    assert close == 1008 and message["error"]["code"] == code and message["is_final"] is True, message
    assert message["text"] == "" and message["error"]["message"]


def test_stamp_sents_cut_at_punctuation():
    from funasr_triton.funasr_ws.session import stamp_sents

    words = [("今", 0, 100), ("天", 100, 200), ("好", 300, 400), ("hello", 500, 900)]
    pieces = [p.model_dump() for p in stamp_sents("今天，好 hello。", words)]
    assert pieces == [
        {"text_seg": "今 天", "punc": "，", "start": 0, "end": 200, "ts_list": [[0, 100], [100, 200]]},
        {"text_seg": "好 hello", "punc": "。", "start": 300, "end": 900, "ts_list": [[300, 400], [500, 900]]}]
    # tokens that cannot be found in the text: one piece, the trailing mark kept
    assert [p.text_seg for p in stamp_sents("完全不同。", words)] == ["今 天 好 hello"]
    assert stamp_sents("", []) == []


def test_stream_config_defaults_and_protocol_options():
    """What reaches streaming_asr's CONFIG: no end silence unless asked (the model then uses FunASR's dynamic
    schedule), the FunASR protocol's look-backs and max_end_silence, the settings as defaults."""
    from funasr_triton.app.config import Settings, StreamingSettings
    from funasr_triton.app.streaming import StreamingService, StreamOptions
    from funasr_triton.funasr_ws.protocol import FunasrConfig

    service = StreamingService(Settings(), client=None, metrics=None)
    config, _ = service.config_for(StreamOptions())
    assert "max_sentence_silence_ms" not in config
    assert "encoder_chunk_look_back" not in config and "decoder_chunk_look_back" not in config
    c = FunasrConfig.model_validate({"mode": "2pass", "encoder_chunk_look_back": 4, "decoder_chunk_look_back": 1,
                                     "max_end_silence": 500})
    config, _ = service.config_for(StreamOptions(encoder_chunk_look_back=c.encoder_chunk_look_back,
                                                 decoder_chunk_look_back=c.decoder_chunk_look_back,
                                                 max_sentence_silence_ms=c.max_end_silence))
    assert (config["encoder_chunk_look_back"], config["decoder_chunk_look_back"], config["max_sentence_silence_ms"]) \
        == (4, 1, 500)
    tuned = StreamingService(Settings(streaming=StreamingSettings(max_sentence_silence_ms=800,
                                                                  encoder_chunk_look_back=4)),
                             client=None, metrics=None)
    config, _ = tuned.config_for(StreamOptions())
    assert config["max_sentence_silence_ms"] == 800 and config["encoder_chunk_look_back"] == 4
    config, _ = tuned.config_for(StreamOptions(encoder_chunk_look_back=0))
    assert "encoder_chunk_look_back" not in config  # the client's 0 wins over the server default


def test_offline_pcm_is_bounded_by_the_upload_limit_too(triton, tmp_path):
    """Offline mode buffers PCM up to `max_offline_seconds`, and never past `limits.max_upload_bytes` (the bound
    every other way in has): 10 s allowed, but 64 000 bytes (2 s) is all an upload may be."""
    fe = start_frontend(triton.grpc_url, tmp_path, FUNASR_TRITON_LIMITS__MAX_UPLOAD_BYTES="64000",
                        FUNASR_TRITON_STREAMING__MAX_OFFLINE_SECONDS="10")
    try:
        async def main():
            async with websockets.connect(ws_url(fe), ping_interval=None) as ws:
                await ws.send(json.dumps({"mode": "offline", "is_speaking": True, "wav_format": "pcm"}))
                for _ in range(3):
                    await ws.send(bytes(32000))  # 1 s each: 3 s in all, under 10 s
                return json.loads(await asyncio.wait_for(ws.recv(), 30))
        message = asyncio.run(main())
        assert message["error"]["code"] == "audio_too_long" and "64000 bytes" in message["error"]["message"]
    finally:
        fe.stop()
