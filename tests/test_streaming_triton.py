"""`streaming_asr` served by the real embedded Triton: events, 2-pass finals, parity, many streams, faults."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import numpy as np
import pytest

from funasr_triton.errors import AsrError
from tests.conftest import CACHE
from tests.synth import SENTENCES, compose

SR = 16000
CHUNK = 9600  # 600 ms: chunk_size [0, 10, 5]


@pytest.fixture(scope="module")
def two_sentences() -> np.ndarray:
    return compose(0.5, SENTENCES[0], 1.6, SENTENCES[8], 1.2)


def stream_all(client, wav: np.ndarray, piece: int = CHUNK, config: dict | None = None) -> list[list[dict]]:
    stream = client.open_stream(config or {})
    out = []
    for i in range(0, wav.shape[0], piece):
        out.append(stream.send(wav[i:i + piece]))
    out.append(stream.send(np.zeros(0, np.float32), end=True))
    return out


def flat(per_request: list[list[dict]]) -> list[dict]:
    return [e for events in per_request for e in events]


def test_event_sequence_and_two_pass_finals(client, two_sentences):
    events = flat(stream_all(client, two_sentences))
    kinds = [(e["event"], e["index"]) for e in events]
    begins = [e for e in events if e["event"] == "sentence_begin"]
    ends = [e for e in events if e["event"] == "sentence_end"]
    assert len(begins) == len(ends) == 2, kinds
    # per sentence: begin, then partials, then end; sentence 2 starts after sentence 1 ended
    for n in (1, 2):
        mine = [k for k, i in kinds if i == n]
        assert mine[0] == "sentence_begin" and mine[-1] == "sentence_end", mine
        assert set(mine[1:-1]) <= {"partial"}
    assert kinds.index(("sentence_end", 1)) < kinds.index(("sentence_begin", 2))
    # times: integer ms, ordered, covering the spoken regions (0.5 s of silence first)
    for e in ends:
        assert isinstance(e["begin_ms"], int) and isinstance(e["end_ms"], int)
        assert 0 < e["confidence"] <= 1  # from the online decoder's token probabilities
        assert 0 <= e["begin_ms"] < e["end_ms"] <= two_sentences.shape[0] // 16
    assert ends[0]["begin_ms"] >= 200 and ends[0]["end_ms"] <= ends[1]["begin_ms"]
    # 2-pass: the final text is the offline model's decode of exactly that span, then punctuation
    for e in ends:
        span = two_sentences[e["begin_ms"] * 16:e["end_ms"] * 16]
        offline = client.recognize_segment(span)
        assert e["raw_text"] == offline["text"]
        assert e["text"] == (client.punctuate(offline["text"]) if offline["text"] else "")
        assert [w["text"] for w in e["words"]] == offline["words"]
        assert [[w["begin_ms"] - e["begin_ms"], w["end_ms"] - e["begin_ms"]] for w in e["words"]] == offline["timestamps"]
    # partials: cumulative text; the deltas add up to it
    for n in (1, 2):
        partials = [e for e in events if e["event"] == "partial" and e["index"] == n]
        assert partials, f"no partial result for sentence {n}"
        assert "".join(p["delta"] for p in partials) == partials[-1]["text"]
        assert all(isinstance(p["time_ms"], int) for p in partials)


def test_piece_size_does_not_change_results(client, two_sentences):
    """Triton callers may send any piece size: the model decodes whole chunks either way."""
    whole = flat(stream_all(client, two_sentences))
    odd = flat(stream_all(client, two_sentences, piece=3333))
    assert whole == odd


def _automodel(chunk_size=(0, 10, 5), **look_back):
    """funasr AutoModel on the test streaming model, with the tokens of every generate_chunk recorded."""
    from funasr import AutoModel

    model = AutoModel(model=str(CACHE / "test" / "streaming"), disable_update=True, disable_pbar=True,
                      disable_log=True)
    emitted: list[list[str]] = []
    generate_chunk = model.model.generate_chunk

    def recording(*args, **kwargs):  # the tokens funasr emits for each chunk
        out = generate_chunk(*args, **kwargs)
        emitted.append(list(out))
        return out
    model.model.generate_chunk = recording

    def run(chunks: list[np.ndarray], final: bool) -> list[str]:
        """One online decoder over `chunks` (the last one is_final when `final`): all its tokens."""
        cache: dict = {}
        emitted.clear()
        for i, chunk in enumerate(chunks):
            model.generate(input=chunk, cache=cache, is_final=final and i == len(chunks) - 1,
                           chunk_size=list(chunk_size), encoder_chunk_look_back=look_back.get("encoder", 0),
                           decoder_chunk_look_back=look_back.get("decoder", 0))
        return [t for part in emitted for t in part]
    return run


def _sentence_chunks(wav: np.ndarray, per_request: list[list[dict]]) -> list[list[np.ndarray]]:
    """The chunks each sentence's online decoder saw, as the model cut them (requests of CHUNK
    samples, then an empty END request that carries the rest as the final chunk): from the chunk
    after the previous sentence end (the decoder starts afresh there) to the chunk whose VAD step
    ended the sentence."""
    n = wav.shape[0] // CHUNK
    chunks = [wav[i * CHUNK:(i + 1) * CHUNK] for i in range(n)] + [wav[n * CHUNK:]]
    out, first = [], 0
    for r, events in enumerate(per_request):
        for e in events:
            if e["event"] == "sentence_end":
                last = r if r < n else n  # the END request (and a short last piece) processes chunk n
                out.append(chunks[first:last + 1])
                first = last + 1
    return out


def test_online_only_and_final_only_modes(client, two_sentences):
    """online-only sentence finals are funasr's: the online decoder's last step at a VAD sentence end
    is its is_final step (the CIF's 0.45 tail weight can fire the sentence's last token)."""
    from funasr_triton_models.asr_text import sentence_postprocess

    per_request = stream_all(client, two_sentences, config={"two_pass": False, "punctuation": False})
    online = flat(per_request)
    ends = [e for e in online if e["event"] == "sentence_end"]
    partial_last = {e["index"]: e["text"] for e in online if e["event"] == "partial"}
    assert len(ends) == 2 and all(e["text"] == partial_last.get(e["index"], "") for e in ends)
    run = _automodel()
    expected = []
    for chunks in _sentence_chunks(two_sentences, per_request):
        tokens = run(chunks, final=True)
        expected.append(sentence_postprocess(tokens)[0] if tokens else "")
    assert [e["text"] for e in ends] == expected
    for n in (1, 2):  # the deltas carry the tail too
        deltas = "".join(e["delta"] for e in online if e["event"] == "partial" and e["index"] == n)
        assert deltas == ends[n - 1]["text"]
    # with FunASR's client's look-backs (4, 0) the same holds
    per_request = stream_all(client, two_sentences, config={"two_pass": False, "punctuation": False,
                                                            "encoder_chunk_look_back": 4})
    ends_lb = [e for e in flat(per_request) if e["event"] == "sentence_end"]
    run = _automodel(encoder=4)
    expected = []
    for chunks in _sentence_chunks(two_sentences, per_request):
        tokens = run(chunks, final=True)
        expected.append(sentence_postprocess(tokens)[0] if tokens else "")
    assert [e["text"] for e in ends_lb] == expected and expected != [e["text"] for e in ends]
    finals = flat(stream_all(client, two_sentences, config={"partial": False}))
    assert not [e for e in finals if e["event"] == "partial"]
    assert [e["text"] for e in finals if e["event"] == "sentence_end"] == \
        [e["text"] for e in flat(stream_all(client, two_sentences)) if e["event"] == "sentence_end"]


def test_served_partials_equal_funasr_automodel_chunk_by_chunk(client):
    """Parity: the served online text after every chunk equals funasr AutoModel's streaming
    generate(cache=..., is_final=...) on the same tiny streaming model (before the first sentence end)."""
    from funasr import AutoModel

    from funasr_triton_models.asr_text import sentence_postprocess

    wav = compose(0.3, SENTENCES[3], 0.3)  # one sentence; the VAD ends it only at the end of the audio
    model = AutoModel(model=str(CACHE / "test" / "streaming"), disable_update=True, disable_pbar=True,
                      disable_log=True)
    emitted: list[list[str]] = []
    generate_chunk = model.model.generate_chunk

    def recording(*args, **kwargs):  # the tokens funasr emits for each chunk
        out = generate_chunk(*args, **kwargs)
        emitted.append(list(out))
        return out
    model.model.generate_chunk = recording
    cache: dict = {}
    tokens: list[str] = []
    expected = []
    n = wav.shape[0] // CHUNK  # whole chunks: a shorter non-final piece waits in both
    for i in range(n):
        chunk = wav[i * CHUNK:(i + 1) * CHUNK]
        emitted.clear()
        model.generate(input=chunk, cache=cache, is_final=False, chunk_size=[0, 10, 5],
                       encoder_chunk_look_back=0, decoder_chunk_look_back=0)
        assert len(emitted) == 1
        tokens += emitted[0]
        expected.append(sentence_postprocess(tokens)[0] if tokens else "")

    stream = client.open_stream({"two_pass": False, "punctuation": False})
    text = ""
    served = []
    for i in range(n):
        for e in stream.send(wav[i * CHUNK:(i + 1) * CHUNK]):
            if e["event"] == "partial":
                text = e["text"]
        served.append(text)
    stream.send(np.zeros(0, np.float32), end=True)
    assert any(served), "the tiny model produced no online tokens: the comparison would be empty"
    # the served text is only emitted once the VAD has confirmed the sentence start
    first = next(i for i, t in enumerate(served) if t)
    assert served[first:] == expected[first:]


def test_twenty_concurrent_streams(triton, two_sentences):
    """20 streams at once (2 cores): every stream finishes with both sentences; none starves."""
    from funasr_triton.triton_client import AsyncTritonAsrClient

    async def one(client, k: int):
        stream = client.open_stream({})
        wav = two_sentences
        events, waits = [], []
        for i in range(0, wav.shape[0], CHUNK):
            t0 = time.perf_counter()
            events += await stream.send(wav[i:i + CHUNK])
            waits.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)
        events += await stream.send(np.zeros(0, np.float32), end=True)
        return events, waits

    async def main():
        client = AsyncTritonAsrClient(triton.grpc_url, timeout_s=120)
        try:
            return await asyncio.gather(*[one(client, k) for k in range(20)])
        finally:
            await client.close()

    results = asyncio.run(main())
    reference = [e["text"] for e in results[0][0] if e["event"] == "sentence_end"]
    for events, waits in results:
        assert [e["text"] for e in events if e["event"] == "sentence_end"] == reference
        assert max(waits) < 30, f"a stream waited {max(waits):.1f} s for one chunk"


def _triton_metric(triton, name: str) -> float:
    with urllib.request.urlopen(triton.metrics_url, timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_faults_fail_alone_and_free_state(client, triton, two_sentences):
    from funasr_triton.triton_client import TritonAsrStream

    # a piece for a stream that was never started
    orphan = TritonAsrStream(client, {})
    orphan._config = None
    with pytest.raises(AsrError) as err:
        orphan.send(two_sentences[:CHUNK])
    assert err.value.status == 400 and "START" in err.value.message  # refused by the sequence batcher
    # bad configs are refused at START
    for bad in ({"chunk_size": [0, 0, 5]}, {"partial": False, "two_pass": False}, {"nope": 1},
                {"max_sentence_silence_ms": 5}):
        with pytest.raises(AsrError) as err:
            client.open_stream(bad).send(two_sentences[:CHUNK])
        assert err.value.status == 400, bad
    # NaN audio fails that request; the model keeps the stream, which then goes on
    stream = client.open_stream({})
    stream.send(two_sentences[:CHUNK])
    bad = two_sentences[CHUNK:2 * CHUNK].copy()
    bad[5] = np.nan
    with pytest.raises(AsrError) as err:
        stream.send(bad)
    assert err.value.status == 400 and "NaN" in err.value.message
    stream.ended = False  # the client marks a stream ended on any error; the model did not
    stream.send(two_sentences[CHUNK:2 * CHUNK], end=True)
    # abort frees the state at once
    before = _triton_metric(triton, "funasr_streaming_open_streams")
    s = client.open_stream({})
    s.send(two_sentences[:CHUNK])
    assert _triton_metric(triton, "funasr_streaming_open_streams") == before + 1
    import tritonclient.grpc as grpcclient

    from funasr_triton.triton_client import stream_inputs
    inputs = stream_inputs(np.zeros(0, np.float32), None)
    inputs.append(grpcclient.InferInput("ABORT", [1, 1], "BOOL"))
    inputs[-1].set_data_from_numpy(np.array([[True]]))
    client._client.infer("streaming_asr", inputs, sequence_id=s.sequence_id, sequence_end=True)
    # the metric is set after each execute: one more request refreshes it
    flat(stream_all(client, two_sentences[:CHUNK]))
    assert _triton_metric(triton, "funasr_streaming_open_streams") <= before


def test_idle_streams_are_evicted():
    """A client that vanishes without END: its state is dropped after idle_seconds (fake clock)."""
    import funasr_triton_models.streams as streams_mod

    manager = streams_mod.StreamManager(asr=None, vad=None, offline=None, max_streams=4, idle_s=30, retain_ms=1000,
                                        max_hotwords=0, max_request_samples=16000)

    class Dummy:
        def __init__(self, seen):
            self.last_seen = seen
    now = time.monotonic()
    manager.streams = {1: Dummy(now - 31), 2: Dummy(now - 5)}
    assert manager.evict_idle(now) == 1 and list(manager.streams) == [2] and manager.evicted == 1
    # and an unknown stream is refused with a clear message
    with pytest.raises(streams_mod.StreamInputError, match="not open"):
        manager._prepare(streams_mod.ChunkRequest(corrid=9, wav=np.zeros(10, np.float32)))


def test_config_json_round_trip():
    import funasr_triton_models.streams as streams_mod

    cfg = streams_mod.StreamConfig.parse(json.dumps({"chunk_size": [0, 8, 4], "hotwords": [" 阿里 ", ""],
                                                     "max_sentence_silence_ms": 500}), max_hotwords=5)
    assert cfg.chunk_size == (0, 8, 4) and cfg.hotwords == ["阿里"] and cfg.max_sentence_silence_ms == 500
    with pytest.raises(streams_mod.StreamInputError, match="at most 1"):
        streams_mod.StreamConfig.parse(json.dumps({"hotwords": ["a", "b"]}), max_hotwords=1)
    # defaults: FunASR's (dynamic end silence, no look-back); explicit values are kept
    default = streams_mod.StreamConfig.parse(None, max_hotwords=5)
    assert default.max_sentence_silence_ms is None
    assert (default.encoder_chunk_look_back, default.decoder_chunk_look_back) == (0, 0)
    cfg = streams_mod.StreamConfig.parse(json.dumps({"encoder_chunk_look_back": 4, "decoder_chunk_look_back": 1,
                                                     "max_sentence_silence_ms": None}), max_hotwords=5)
    assert (cfg.encoder_chunk_look_back, cfg.decoder_chunk_look_back, cfg.max_sentence_silence_ms) == (4, 1, None)
    for bad in ({"encoder_chunk_look_back": -1}, {"decoder_chunk_look_back": 65}, {"encoder_chunk_look_back": True},
                {"max_sentence_silence_ms": 50}):
        with pytest.raises(streams_mod.StreamInputError):
            streams_mod.StreamConfig.parse(json.dumps(bad), max_hotwords=5)
