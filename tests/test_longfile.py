"""Long recordings through `transcribe` (audio in pieces, results as they come) and `pipeline` (whole file),
both on LongFileJob, against an independent whole-file reference built from the stage models: the `vad`
model over the whole file, `asr` per segment, `punc` over the whole joined text, speaker embeddings of
every window clustered at once, and the same `assemble`."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from funasr_triton.contract import TritonResult
from funasr_triton.errors import AsrError
from funasr_triton.triton_client import AsyncTritonAsrClient, TranscribeOptions
from tests.synth import SENTENCES, compose, espeak, silence

from funasr_triton_models.diarize import speech_windows, window_samples, word_speakers
from funasr_triton_models.diarize_cluster import cluster_speakers
from funasr_triton_models.sentences import assemble, join_texts, word_stamps

DATA = Path(__file__).resolve().parent / "data"
VOICES = [dict(voice="cmn", pitch=30, speed=150), dict(voice="cmn+f3", pitch=80, speed=175)]


def split_long(segments, max_ms=60100):
    out = []
    for beg, end in segments:
        parts = max(1, -(-(end - beg) // max_ms))
        out.extend([beg + (end - beg) * i // parts, beg + (end - beg) * (i + 1) // parts] for i in range(parts))
    return out


def reference(client, wav: np.ndarray, options: TranscribeOptions, max_speakers: int = 8) -> dict:
    """The whole-file result computed stage by stage (what the pipeline did before streaming)."""
    segments = [s for s in split_long(client.vad_segments(wav)) if s[1] - s[0] >= 30]
    asr = []
    for beg, end in segments:
        r = client.recognize_segment(wav[beg * 16:end * 16], options.hotwords or None)
        asr.append({"start_ms": beg, "end_ms": end, "text": r["text"], "words": r["words"],
                    "timestamps": [[s + beg, e + beg] for s, e in r["timestamps"]]})
    punc = None
    if options.punctuation and any(a["words"] for a in asr):
        out = client._infer("punc", {"TEXT": np.array([join_texts([a["text"] for a in asr]).encode()], dtype=object)},
                            ["PUNC_TEXT", "WORDS", "PUNC_MARKS"])
        dec = [[v.decode() for v in out[k].reshape(-1)] for k in ("PUNC_TEXT", "WORDS", "PUNC_MARKS")]
        punc = {"text": dec[0][0], "words": dec[1], "marks": dec[2]}
    speakers = None
    if options.diarize:
        windows = speech_windows(segments)
        embeddings = np.stack([client.speaker_embedding(window_samples(wav, b, e)) for b, e in windows])
        labels = cluster_speakers(embeddings, num_speakers=options.num_speakers, min_speakers=1,
                                  max_speakers=options.max_speakers or max_speakers)
        speakers = word_speakers([t for a in asr for t in word_stamps(a)], windows, labels)
    return assemble(asr, punc, duration_ms=len(wav) // 16, with_timestamps=options.timestamps, speakers=speakers)


def streamed(url: str, wav: np.ndarray, options: TranscribeOptions, piece: int) -> tuple[dict, list[dict]]:
    async def run():
        client = AsyncTritonAsrClient(url, timeout_s=300)
        job = client.open_job(options)
        events = []
        try:
            for i in range(0, len(wav), piece):
                events += await job.send(wav[i:i + piece], final=i + piece >= len(wav))
            while job.result is None:
                events += await job.poll()
            await job.close()
        finally:
            await client.close()
        return job.result.model_dump(exclude_none=True), events
    return asyncio.run(run())


def _same(result: dict, ref: dict) -> None:
    """Equal as the frontend reads them (the typed result model)."""
    got, want = TritonResult.model_validate(result), TritonResult.model_validate(ref)
    assert got.text == want.text
    assert got.vad_segments == want.vad_segments
    assert got.sentences == want.sentences
    assert got.duration_ms == want.duration_ms
    assert got.num_speakers == want.num_speakers


@pytest.fixture(scope="module")
def long_speech() -> np.ndarray:
    """~2.5 min of Mandarin in 20+ sentences with pauses of 0.2-8 s, some very short and some long."""
    rng = np.random.default_rng(7)
    parts = [0.4]
    for i in range(22):
        parts += [SENTENCES[i % len(SENTENCES)], float(rng.choice([0.2, 0.5, 1.0, 2.5, 8.0]))]
    return compose(*parts)


@pytest.fixture(scope="module")
def real_speech() -> np.ndarray:
    """Real recordings (FunASR's examples, see tests/data/NOTICE) with silences and a noise-only stretch."""
    from funasr_triton.audio import decode

    rng = np.random.default_rng(3)
    clips = [decode((DATA / n).read_bytes()) for n in ("asr_example.wav", "vad_30s_mono_48k.wav", "api_example.wav",
                                                      "triton_5s.wav")]
    parts = []
    for i in range(3):
        for clip in clips:
            parts += [clip, silence(float(rng.choice([0.6, 3.0, 12.0])))]
        parts.append((rng.standard_normal(16000 * 2) * 0.002).astype(np.float32))
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def dialogue() -> np.ndarray:
    parts = [silence(0.3)]
    for i in range(14):
        parts += [espeak(SENTENCES[i % len(SENTENCES)], **VOICES[i % 2]), silence(1.0 + (i % 3))]
    return np.concatenate(parts)


@pytest.mark.parametrize("piece_s", [7, 61])
def test_streamed_equals_whole_file(triton, client, long_speech, piece_s):
    assert len(long_speech) > 16000 * 120
    options = TranscribeOptions()
    ref = reference(client, long_speech, options)
    result, events = streamed(triton.grpc_url, long_speech, options, 16000 * piece_s)
    _same(result, ref)
    # events: one `segment` per VAD segment in order, and `text` pieces that make the final text
    segs = [e for e in events if e["type"] == "segment"]
    assert [[e["start_ms"], e["end_ms"]] for e in segs] == ref["vad_segments"]
    assert "".join(e["text"] for e in events if e["type"] == "text") == ref["text"]
    # the whole-file entry runs the same machinery
    _same(client.transcribe(long_speech), ref)


def test_streamed_equals_whole_file_on_real_recordings(triton, client, real_speech):
    assert len(real_speech) > 16000 * 120
    for options in (TranscribeOptions(), TranscribeOptions(punctuation=False, timestamps=False)):
        ref = reference(client, real_speech, options)
        result, _ = streamed(triton.grpc_url, real_speech, options, 16000 * 30)
        _same(result, ref)


def test_streamed_diarization_equals_whole_file(triton, client, dialogue):
    for options in (TranscribeOptions(diarize=True, num_speakers=2), TranscribeOptions(diarize=True, max_speakers=3)):
        ref = reference(client, dialogue, options)
        result, _ = streamed(triton.grpc_url, dialogue, options, 16000 * 20)
        _same(result, ref)
        _same(client.transcribe(dialogue, options), ref)


def test_hotwords_and_no_punctuation_stream_too(triton, client, long_speech):
    options = TranscribeOptions(hotwords=["今天", "阿里巴巴"], punctuation=False)
    ref = reference(client, long_speech, options)
    result, events = streamed(triton.grpc_url, long_speech, options, 16000 * 45)
    _same(result, ref)
    assert "".join(e["text"] for e in events if e["type"] == "text") == ref["text"]


def _asr_count(client) -> int:
    return int(client.statistics("asr")["model_stats"][0].get("inference_count", 0))


def _settled_asr_count(client, quiet_s: float = 1.0, timeout_s: float = 30.0) -> int:
    """`asr`'s inference count once it has not changed for quiet_s."""
    deadline = time.monotonic() + timeout_s
    count = _asr_count(client)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = _asr_count(client)
        if now == count:
            break
        count = now
    return count


def test_abort_stops_the_recordings_work(triton, client, long_speech):
    """A recording aborted with segments still queued: no more of them reach `asr`."""
    wav = np.concatenate([long_speech] * 4)  # ~10 min
    segments = len(client.vad_segments(wav))
    before = _asr_count(client)

    async def run():
        c = AsyncTritonAsrClient(triton.grpc_url, timeout_s=300)
        job = c.open_job(TranscribeOptions(punctuation=False))
        await job.send(wav[:16000 * 100])
        await job.send(wav[16000 * 100:16000 * 200])  # VAD strides close: many segments queued at once
        await job.abort()
        await c.close()
    asyncio.run(run())
    at_abort = _settled_asr_count(client)  # segments already in `asr` (up to max_inflight_segments) finish
    time.sleep(3.0)
    assert _asr_count(client) == at_abort, "segments of an aborted recording are still being recognised"
    assert at_abort - before < segments


def test_first_text_comes_long_before_the_end(triton, long_speech):
    """A ~10 min recording sent as fast as `transcribe` takes it: its first text event comes back within a
    small part of the total time (the first segment is recognised alone, not in a batch of many; the
    VAD strides do not wait for recognitions in flight)."""
    wav = np.concatenate([long_speech] * 4)
    piece = 16000 * 30

    async def run():
        c = AsyncTritonAsrClient(triton.grpc_url, timeout_s=300)
        job = c.open_job(TranscribeOptions())
        t0, first = time.perf_counter(), None

        def note(events):
            nonlocal first
            if first is None and any(e["type"] == "text" for e in events):
                first = time.perf_counter() - t0
        try:
            for i in range(0, len(wav), piece):
                note(await job.send(wav[i:i + piece], final=i + piece >= len(wav)))
            while job.result is None:
                note(await job.poll())
            total = time.perf_counter() - t0
            await job.close()
        finally:
            await c.close()
        return first, total
    first, total = asyncio.run(run())
    assert first is not None
    assert first < 0.25 * total, f"first text after {first:.1f} s of {total:.1f} s"


def test_bad_requests(triton):
    async def run():
        c = AsyncTritonAsrClient(triton.grpc_url, timeout_s=60)
        try:
            job = c.open_job(TranscribeOptions())
            job._config = '{"diarize": "yes"}'
            with pytest.raises(AsrError) as e:
                await job.send(np.zeros(16000, np.float32))
            assert e.value.status == 400 and "diarize" in e.value.message
            job = c.open_job(TranscribeOptions())
            await job.send(np.zeros(16000, np.float32))
            with pytest.raises(AsrError) as e:
                await job.send(np.full(16000, np.nan, np.float32))
            assert e.value.status == 400 and "NaN" in e.value.message
            # silence only: an empty result, not an error
            job = c.open_job(TranscribeOptions())
            await job.send(np.zeros(16000 * 3, np.float32), final=True)
            while job.result is None:
                await job.poll()
            assert job.result.text == "" and job.result.sentences == [] and job.result.duration_ms == 3000
            # the model forgets a recording once its result is out: more audio is refused, END is harmless
            with pytest.raises(AsrError) as e:
                await job.send(np.zeros(16000, np.float32))
            assert e.value.status == 400 and "no recording" in e.value.message
            job._open = True
            await job.close()
        finally:
            await c.close()
    asyncio.run(run())
