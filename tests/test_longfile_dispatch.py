"""How LongFileJob hands segments to recognition (funasr_triton_models.longfile), with the real
FSMN-VAD and a recording backend in place of Triton's BLS calls: the slow start that gets the first
result out before a batch of others, and the VAD strides running on the job's own threads."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import numpy as np
import pytest

from tests.synth import SENTENCES, compose
from tests.test_vad_port import exported, fsmn_vad  # noqa: F401  (fixture; registers the fsmn_vad module)

from funasr_triton_models.longfile import Backend, JobLimits, JobOptions, LongFileJob

SR = 16000
STRIDE = 60 * SR


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """~2.5 min: 20+ sentences with pauses, so each 60 s VAD stride closes several segments."""
    parts: list = [0.4]
    for i in range(24):
        parts += [SENTENCES[i % len(SENTENCES)], (0.6, 1.5, 3.0)[i % 3]]
    wav = compose(*parts)
    assert len(wav) > 2 * STRIDE
    return wav


@pytest.fixture(scope="module")
def vad(exported):  # noqa: F811
    return fsmn_vad.FsmnVad(exported)


def _result(audio: np.ndarray) -> dict:
    return {"text": "字", "words": ["字"], "timestamps": [[0, min(10, len(audio) // 16)]]}


async def _no_punc(piece, state, final):  # unused: the tests run without punctuation
    raise AssertionError("punctuation was not asked for")


async def _no_embed(window):
    raise AssertionError("diarization was not asked for")


class Recorder:
    """recognize(): notes, at each start, how many segments had finished and how many were in flight."""

    def __init__(self):
        self.starts: list[tuple[int, int]] = []  # (finished before this start, in flight including this one)
        self.finished = 0
        self.active = 0

    async def recognize(self, audio, hotwords):
        self.active += 1
        self.starts.append((self.finished, self.active))
        await asyncio.sleep(0.02)
        self.active -= 1
        self.finished += 1
        return _result(audio)


def _run_whole(vad, speech, limits: JobLimits) -> Recorder:
    rec = Recorder()
    backend = Backend(recognize=rec.recognize, punctuate=_no_punc, embed=_no_embed)

    async def run():
        job = LongFileJob(vad, JobOptions(punctuation=False), backend, limits)
        result = await job.run_whole(speech, STRIDE)
        assert len(result["vad_segments"]) == len(rec.starts)
    asyncio.run(run())
    return rec


def test_slow_start_recognises_the_first_segment_alone(vad, speech):
    rec = _run_whole(vad, speech, JobLimits(max_inflight=8, initial_inflight=1))
    assert len(rec.starts) >= 12
    # the first segment alone: the second starts only once the first is done
    assert rec.starts[0] == (0, 1)
    assert rec.starts[1][0] >= 1
    # then the window widens with each result, up to max_inflight
    assert max(a for _, a in rec.starts) > 2
    assert max(a for _, a in rec.starts) <= 8
    # without slow start, a whole stride's segments go at once
    rec = _run_whole(vad, speech, JobLimits(max_inflight=8, initial_inflight=8))
    assert rec.starts[1] == (0, 2)


def test_vad_strides_do_not_wait_for_the_loops_default_threads(vad, speech):
    """Triton's python backend runs each BLS async_exec on a thread of the loop's default executor for the
    whole call: recognitions in flight must not hold up the next VAD stride (the job's own executor)."""
    gate = threading.Event()

    async def recognize(audio, hotwords):  # like a BLS call: a default-executor thread until it answers
        await asyncio.get_running_loop().run_in_executor(None, gate.wait)
        return _result(audio)

    async def run():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        own = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        job = LongFileJob(vad, JobOptions(punctuation=False),
                          Backend(recognize=recognize, punctuate=_no_punc, embed=_no_embed),
                          JobLimits(max_inflight=8, initial_inflight=8, max_pending_ms=10**7), own)
        try:
            await asyncio.wait_for(job.feed(speech[:STRIDE]), 60)
            await asyncio.sleep(0.2)  # the first stride's segments hold both default threads
            assert len(job._parts) >= 2
            # the next stride's VAD runs although no default thread is free
            await asyncio.wait_for(job.feed(speech[STRIDE:2 * STRIDE]), 30)
            assert job.progress()["processed_ms"] == 2 * STRIDE // 16
        finally:
            gate.set()
        await job.feed(speech[2 * STRIDE:])
        await job.finish()
        while not job.done:
            await job.take(1.0)
        own.shutdown()
    asyncio.run(run())


def test_a_sender_held_by_back_pressure_gets_the_first_results(vad, speech):
    """feed() waits while the backlog is over max_pending_ms, but hands over new results once per such wait:
    the first text does not wait for the backlog to drain. The next feed waits again."""
    first_done, gate = asyncio.Event(), asyncio.Event()

    async def recognize(audio, hotwords):
        if not first_done.is_set():
            first_done.set()
            await asyncio.sleep(0.05)  # the first segment: done soon
        else:
            await gate.wait()  # the rest: held until the test opens the gate
        return _result(audio)

    async def run():
        job = LongFileJob(vad, JobOptions(punctuation=False),
                          Backend(recognize=recognize, punctuate=_no_punc, embed=_no_embed),
                          JobLimits(max_inflight=8, initial_inflight=8, max_pending_ms=1000))
        try:
            # a stride closes segments well over 1 s of audio: back-pressure, until the first result exists
            await asyncio.wait_for(job.feed(speech[:STRIDE]), 30)
            assert job._pending_ms > 1000
            events = await job.take()
            assert [e["index"] for e in events if e["type"] == "segment"] == [0]
            assert any(e["type"] == "text" for e in events)
            # the next feed waits for the backlog (no second early return while it stays over the limit)
            nxt = asyncio.ensure_future(job.feed(speech[STRIDE:STRIDE + SR]))
            await asyncio.sleep(0.5)
            assert not nxt.done()
            gate.set()
            await asyncio.wait_for(nxt, 30)
        finally:
            gate.set()
        await job.feed(speech[STRIDE + SR:])
        await job.finish()
        while not job.done:
            await job.take(1.0)
    asyncio.run(run())


def test_vad_memory_arena_is_a_choice(exported, speech):  # noqa: F811
    """vad_cpu_mem_arena (transcribe/pipeline): the VAD's onnxruntime arena off gives the same segments."""
    on, off = fsmn_vad.FsmnVad(exported), fsmn_vad.FsmnVad(exported, cpu_mem_arena=False)
    assert on.session.get_session_options().enable_cpu_mem_arena
    assert not off.session.get_session_options().enable_cpu_mem_arena
    assert off.segments(speech[:STRIDE]) == on.segments(speech[:STRIDE])
