"""ITN on the 2-pass finals of real-time streams: `streaming_asr`'s CONFIG `itn` (the `itn` model per sentence
after punctuation, words realigned, partials left raw) and each streaming surface's flag reaching Triton:
NLS WebSocket `enable_inverse_text_normalization` (official SDK), FunASR WebSocket `itn` (default on),
`funasr-triton listen --itn` (tests/test_listen.py).

The random-weight test models rarely say a number, so the served tests prove the stage is applied by the
`itn` model's inference count and by the finals equalling the `itn` model's output on the plain finals'
sentences; the word realignment is checked on a crafted recognition run through the real `itn` model.
"""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from funasr_triton.errors import AsrError
from tests.synth import SENTENCES, compose

import funasr_triton_models.streams as streams_mod
from funasr_triton_models.sentences import split_sentences

CHUNK = 9600  # 600 ms: chunk_size [0, 10, 5]


@pytest.fixture(scope="module")
def two_sentences() -> np.ndarray:
    return compose(0.5, SENTENCES[0], 1.6, SENTENCES[8], 1.2)


def _itn_count(client) -> int:
    return int(client.statistics("itn")["model_stats"][0].get("inference_count", 0))


def _pieces(text: str) -> list[str]:
    done, rest = split_sentences(text)
    return done + ([rest] if rest else [])


def _per_sentence(client, text: str) -> str:
    return "".join(client.normalize(_pieces(text)))


# ---------------------------------------------------------------- the final job, crafted recognition

class CraftedOffline:
    """recognize: `spoken` with one word per character, 100 ms each; punctuate: a mark after each
    character position in `marks`; normalize: the served `itn` model (real grammars)."""

    def __init__(self, client, spoken: str, marks: dict[int, str]):
        self.client, self.spoken, self.marks = client, spoken, marks
        self.normalized: list[list[str]] = []

    async def recognize(self, wav, hotwords):
        return self.spoken, list(self.spoken), [[i * 100, (i + 1) * 100] for i in range(len(self.spoken))]

    async def punctuate(self, text):
        return "".join(ch + self.marks.get(i, "") for i, ch in enumerate(text))

    async def normalize(self, texts):
        self.normalized.append(list(texts))
        return self.client.normalize(texts)


def _final(offline, itn: bool = True, two_pass: bool = True, begin_ms: int = 1000) -> dict:
    event = {"event": "sentence_end", "index": 1, "begin_ms": begin_ms, "end_ms": begin_ms + 3000,
             "text": "涨了", "raw_text": "涨了", "online_text": "涨了", "words": [], "confidence": 0.9}
    config = streams_mod.StreamConfig(itn=itn, two_pass=two_pass)
    job = streams_mod.FinalJob(event, np.zeros(16000, np.float32), config)
    asyncio.run(job.run(offline))
    return event


def test_final_itn_per_sentence_with_rewritten_words_merged(client):
    spoken = "涨了百分之六点三电话幺三五零幺二三四五六七"
    offline = CraftedOffline(client, spoken, {7: "。", len(spoken) - 1: "。"})
    ev = _final(offline)
    # one itn request with the final's two sentences, each normalized on its own
    assert offline.normalized == [["涨了百分之六点三。", "电话幺三五零幺二三四五六七。"]]
    assert ev["text"] == "涨了6.3%。电话13501234567。"
    assert ev["raw_text"] == spoken  # the recognised text stays as it was
    # unchanged words keep their times; a rewritten span is one word spanning the original words' times
    # (times are absolute: the sentence begins at 1000 ms)
    words = [(w["text"], w["begin_ms"], w["end_ms"]) for w in ev["words"]]
    assert words == [("涨", 1000, 1100), ("了", 1100, 1200), ("6.3%", 1200, 1800),
                     ("电", 1800, 1900), ("话", 1900, 2000), ("13501234567", 2000, 3100)]


def test_final_without_itn_or_without_change(client):
    spoken = "涨了百分之六点三"
    off = CraftedOffline(client, spoken, {})
    ev = _final(off, itn=False)
    assert off.normalized == [] and ev["text"] == spoken and len(ev["words"]) == len(spoken)
    # idioms stay: the words and their times are untouched
    idiom = CraftedOffline(client, "一心一意", {3: "。"})
    ev = _final(idiom)
    assert idiom.normalized == [["一心一意。"]] and ev["text"] == "一心一意。"
    assert [w["text"] for w in ev["words"]] == list("一心一意")


def test_final_itn_without_two_pass_rewrites_the_online_text(client):
    """two_pass false: the final is the online text (no words); ITN still applies to it."""
    off = CraftedOffline(client, "unused", {})

    async def punctuate(text):
        return text + "。"
    off.punctuate = punctuate
    event = {"event": "sentence_end", "index": 1, "begin_ms": 0, "end_ms": 2000, "text": "百分之五十",
             "raw_text": "百分之五十", "online_text": "百分之五十", "words": [], "confidence": 0.5}
    job = streams_mod.FinalJob(event, np.zeros(0, np.float32), streams_mod.StreamConfig(itn=True, two_pass=False))
    asyncio.run(job.run(off))
    assert event["text"] == "50%。" and event["words"] == []


def test_config_itn_key():
    assert streams_mod.StreamConfig.parse(None, max_hotwords=5).itn is False
    assert streams_mod.StreamConfig.parse(json.dumps({"itn": True}), max_hotwords=5).itn is True
    with pytest.raises(streams_mod.StreamInputError, match="itn"):
        streams_mod.StreamConfig.parse(json.dumps({"itn": "yes"}), max_hotwords=5)


# ---------------------------------------------------------------- streaming_asr served by Triton

def _stream(client, wav: np.ndarray, config: dict) -> list[dict]:
    stream = client.open_stream(config)
    events = []
    for i in range(0, wav.shape[0], CHUNK):
        events += stream.send(wav[i:i + CHUNK])
    return events + stream.send(np.zeros(0, np.float32), end=True)


def test_served_stream_finals_with_itn(client, two_sentences):
    plain = _stream(client, two_sentences, {})
    before = _itn_count(client)
    with_itn = _stream(client, two_sentences, {"itn": True})
    ends = [e for e in with_itn if e["event"] == "sentence_end"]
    plain_ends = [e for e in plain if e["event"] == "sentence_end"]
    assert len(ends) == len(plain_ends) == 2
    # one itn item per sentence of each final (inference_count counts batch items)
    assert _itn_count(client) - before == sum(len(_pieces(p["text"])) for p in plain_ends if p["text"].strip())
    for e, p in zip(ends, plain_ends):
        assert e["text"] == _per_sentence(client, p["text"])
        assert (e["raw_text"], e["begin_ms"], e["end_ms"], e["confidence"]) == \
            (p["raw_text"], p["begin_ms"], p["end_ms"], p["confidence"])
        if e["text"] == p["text"]:
            assert e["words"] == p["words"]
    # partial results stay as the online model recognised them
    assert [e for e in with_itn if e["event"] != "sentence_end"] == [e for e in plain if e["event"] != "sentence_end"]
    # no itn asked: no itn request
    before = _itn_count(client)
    _stream(client, two_sentences[:3 * CHUNK], {"itn": False})
    assert _itn_count(client) == before


def test_served_stream_refuses_a_bad_itn_value(client, two_sentences):
    with pytest.raises(AsrError) as e:
        _stream(client, two_sentences[:CHUNK], {"itn": "yes"})
    assert e.value.status == 400 and "itn" in e.value.message


# ---------------------------------------------------------------- each streaming surface's flag

def _asks_itn(client, send) -> bool:
    before = _itn_count(client)
    send()
    return _itn_count(client) > before


def test_nls_websocket_flag_reaches_triton(frontend, client, two_sentences):
    from tests.test_nls_ws import pcm16, run_transcriber, ws_url

    pcm = pcm16(two_sentences)

    def nls(on: bool):
        def send():
            rec = run_transcriber(ws_url(frontend), pcm, aformat="pcm", sample_rate=16000,
                                  enable_intermediate_result=True, enable_punctuation_prediction=True,
                                  enable_inverse_text_normalization=on)
            assert not rec.of("TaskFailed"), rec.events
            ends = rec.of("SentenceEnd")
            assert ends and all(m["payload"]["result"] for m in ends)
        return send

    assert _asks_itn(client, nls(True))
    assert not _asks_itn(client, nls(False))


def test_funasr_websocket_flag_reaches_triton(frontend, client, two_sentences):
    import websockets

    from tests.test_funasr_ws import CHUNK_SIZE, pcm16, session, triton_sentences, ws_url

    pcm = pcm16(two_sentences)

    def funasr(mode: str, itn: bool):
        return lambda: session(ws_url(frontend), ({"mode": mode, "itn": itn}, pcm))

    def funasr_default():  # a client that does not send `itn` (FunASR's default is on)
        async def main():
            async with websockets.connect(ws_url(frontend), subprotocols=["binary"], max_size=None) as ws:
                await ws.send(json.dumps({"mode": "2pass", "chunk_size": CHUNK_SIZE, "wav_name": "d",
                                          "wav_format": "pcm", "audio_fs": 16000, "is_speaking": True}))
                for i in range(0, len(pcm), 19200):
                    await ws.send(pcm[i:i + 19200])
                await ws.send(json.dumps({"is_speaking": False}))
                while not json.loads(await asyncio.wait_for(ws.recv(), 120)).get("is_final"):
                    pass
        asyncio.run(main())

    assert _asks_itn(client, funasr("2pass", True))
    assert not _asks_itn(client, funasr("2pass", False))
    assert not _asks_itn(client, funasr("online", True))  # partials only: nothing to normalize
    assert _asks_itn(client, funasr_default)
    # the 2pass finals are streaming_asr's with itn
    (messages,) = session(ws_url(frontend), ({"mode": "2pass", "itn": True}, pcm))
    offline = [m["text"] for m in messages if m["mode"] == "2pass-offline" and m["text"]]
    reference = triton_sentences(client, two_sentences, {"chunk_size": CHUNK_SIZE, "encoder_chunk_look_back": 4,
                                                          "itn": True})
    assert offline == [e["text"] for e in reference if e["text"]]
