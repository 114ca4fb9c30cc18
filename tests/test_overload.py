"""Overload against the real frontend and Triton, with small admission limits (FUNASR_TRITON_LIMITS__*,
FUNASR_TRITON_STREAMING__MAX_STREAMS): twice the capacity at once on each surface is shed with 429 +
Retry-After in the surface's own shape (OpenAI `rate_limited`, Alibaba 40000005, `/api` code 429; FunASR
WebSocket close 1013 for offline sessions and streams, NLS TaskFailed 40000005), the admitted ones are all
served with a bounded latency, and a request that waits longer than the queue timeout gets 429 too."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from loadtest.soak_clients import Clients, Outcome, speech_clip
from tests.conftest import start_frontend

RUNNING, QUEUED, STREAMS = 2, 2, 2
CAPACITY = RUNNING + QUEUED  # recognitions admitted at once (running + waiting for a slot)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return speech_clip(6.0)


@pytest.fixture(scope="module")
def small(triton, tmp_path_factory):
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("overload"),
                        FUNASR_TRITON_LIMITS__MAX_CONCURRENT_JOBS=str(RUNNING),
                        FUNASR_TRITON_LIMITS__MAX_QUEUED_JOBS=str(QUEUED),
                        FUNASR_TRITON_LIMITS__QUEUE_TIMEOUT_S="120",
                        FUNASR_TRITON_STREAMING__MAX_STREAMS=str(STREAMS))
    yield fe
    fe.stop()


def at_once(clients: Clients, surface: str, n: int) -> list[Outcome]:
    """n calls released together."""
    barrier = threading.Barrier(n)

    def one(_):
        barrier.wait(30)
        return clients.call(surface)
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99))


@pytest.mark.parametrize("surface", ["openai", "aliyun", "api", "funasr_ws_offline"])
def test_twice_the_capacity_is_shed_with_429_admitted_ones_served(small, clip, surface):
    # 60 s of audio per request: each holds its slot for a few seconds, so all 2x CAPACITY overlap
    clients = Clients(small.base_url, np.tile(clip, 10), timeout_s=300, pace_s=0)
    alone = clients.call(surface)
    assert alone.ok, alone
    outcomes = at_once(clients, surface, 2 * CAPACITY)
    served = [o for o in outcomes if o.ok]
    shed = [o for o in outcomes if not o.ok]
    refused = 1013 if surface == "funasr_ws_offline" else 429  # FunASR WebSocket: close 1013, try again later
    assert all(o.status == refused for o in shed), [o for o in shed if o.status != refused]
    assert len(served) >= CAPACITY, "the running and the queued requests are served"
    assert shed, "beyond the capacity, requests are shed"
    for o in shed:
        if surface == "funasr_ws_offline":
            assert o.code == "rate_limited" and o.body["is_final"] is True and o.body["mode"] == "offline", o
        else:
            assert int(o.retry_after) >= 1, o
        if surface == "openai":
            assert o.code == "rate_limited" and o.body["error"]["type"] == "rate_limit_error", o
        elif surface == "aliyun":
            assert o.code == 40000005 and list(o.body) == ["task_id", "result", "status", "message"], o
        elif surface == "api":
            assert o.code == 429 and o.body["data"] == [] and o.body["msg"], o
        assert o.seconds < alone.seconds + 10, "shed at once, not after waiting"
    # the admitted ones waited at most for the ones ahead of them: a generous bound on their p99
    latency = p99([o.seconds for o in served])
    bound = 4 * CAPACITY * alone.seconds + 30
    assert latency <= bound, (latency, bound)
    print(f"\n{surface}: {2 * CAPACITY} at once, capacity {CAPACITY}: {len(served)} served (p99 {latency:.1f} s; "
          f"alone {alone.seconds:.1f} s), {len(shed)} shed with {refused} (max {max(o.seconds for o in shed):.2f} s)")


@pytest.mark.parametrize("surface", ["funasr_ws", "nls_ws"])
def test_twice_the_streams_are_refused_in_the_protocols_way(small, clip, surface):
    clients = Clients(small.base_url, clip, timeout_s=120, pace_s=0.05)  # ~3 s per stream
    outcomes = at_once(clients, surface, 2 * STREAMS)
    served = [o for o in outcomes if o.ok]
    refused = [o for o in outcomes if not o.ok]
    assert len(served) >= STREAMS and refused, outcomes
    for o in refused:
        if surface == "funasr_ws":
            assert o.status == 1013 and o.code == "too_many_streams" and o.body["is_final"] is True, o
        else:
            assert o.code == 40000005 and o.body["header"]["name"] == "TaskFailed", o
        assert o.seconds < 10, "refused at once"
    print(f"\n{surface}: {2 * STREAMS} streams at once, at most {STREAMS}: {len(served)} served, "
          f"{len(refused)} refused")


def wait_admitted(base_url: str, held, timeout_s: float = 120.0) -> None:
    """Until the frontend's funasr_inflight_requests gauge shows the holder running."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert not held.done(), f"the holder ended before it was seen running: {held.result()}"
        lines = httpx.get(base_url + "/metrics", timeout=10).text.splitlines()
        if any(line.startswith("funasr_inflight_requests ") and float(line.split()[1]) >= 1 for line in lines):
            return
        time.sleep(0.05)
    raise AssertionError("the holder was not admitted in time")


def test_queue_timeout_is_429(triton, tmp_path, clip):
    fe = start_frontend(triton.grpc_url, tmp_path, FUNASR_TRITON_LIMITS__MAX_CONCURRENT_JOBS="1",
                        FUNASR_TRITON_LIMITS__MAX_QUEUED_JOBS="4", FUNASR_TRITON_LIMITS__QUEUE_TIMEOUT_S="1")
    try:
        # 20 min of audio holds the only slot well past the three waiters' queue timeouts, even on a quiet machine
        # where the test models recognise 4 min in about a second
        holder = Clients(fe.base_url, np.tile(clip, 200), timeout_s=300)
        waiter = Clients(fe.base_url, clip[:16000 * 2], timeout_s=60)
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(holder.call, "openai")
            wait_admitted(fe.base_url, held)  # uploaded (38 MB) and running, not a fixed sleep
            outcomes = {s: waiter.call(s) for s in ("openai", "aliyun", "api")}
            first = held.result(300)
        assert first.ok, first
        for surface, o in outcomes.items():
            assert o.status == 429, o
            assert 1.0 <= o.seconds < first.seconds, "refused after waiting the queue timeout, before the slot freed"
            assert int(o.retry_after) >= 1, o
            message = {"openai": lambda b: b["error"]["message"], "aliyun": lambda b: b["message"],
                       "api": lambda b: b["msg"]}[surface](o.body)
            assert "no recognition slot within 1 s" in message, o
        assert first.seconds > 4, "the holder kept the slot while the three waited in turn"
        # the queue is empty again: the next request is served
        assert waiter.call("openai").ok
    finally:
        fe.stop()
