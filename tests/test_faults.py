"""Faults injected into a real stack (`funasr-triton serve`: embedded Triton + frontend, on a private copy of the
test repository), seen through every surface's own client (loadtest/soak_clients.py):

1. Triton slower than the deadline (tritonserver SIGSTOPped, then SIGCONTed): 504 in each API's shape, /ready
   503 meanwhile; after SIGCONT everything is served again, and no recording or stream is left open in the
   models once transcribe's idle timeout has passed (Triton runs some timed-out requests late: their recordings
   have no client left to end them).
2. A real-time stream whose Triton sequence dies (the `streaming_asr` python-backend stubs SIGKILLed mid-stream):
   the FunASR client gets an error message and close 1013, the NLS client TaskFailed; the streams' state is
   freed (funasr_streams_active back to 0); /ready names `streaming_asr`.
3. One python-backend stub killed (`punc`): Triton 2.51 neither restarts the stub nor marks the model unready;
   every request that needs punctuation fails with 503 model_unavailable (+Retry-After) in the API's shape,
   requests without punctuation are served, and /ready (503) names `punc`.
4. Triton SIGKILLed under load: every request/stream gets an answer within its deadline (no hang): 503 +
   Retry-After in the HTTP APIs' shapes, error + close 1013 / TaskFailed on the WebSockets; /ready says 503;
   the supervisor restarts Triton, which also brings back the stubs killed in 2 and 3, and the time from the
   kill to the first successful request is measured and printed.

The tests share one stack and run in this order (4 heals what 2 and 3 broke)."""
from __future__ import annotations

import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.soak_clients import Clients, Outcome, speech_clip
from tests.test_lifecycle import Serve, triton_processes

psutil = pytest.importorskip("psutil")

DEADLINE_S = 10.0  # FUNASR_TRITON_TRITON__TIMEOUT_S of the stack: one Triton call's deadline
HTTP_SURFACES = ("openai", "aliyun", "api")
WS_SURFACES = ("funasr_ws", "nls_ws")
SURFACES = HTTP_SURFACES + WS_SURFACES
IDLE_S = 15.0  # transcribe's idle_seconds in this stack


@pytest.fixture(scope="module")
def stack(repository, tmp_path_factory):
    """`serve` on a private copy of the repository (these tests kill its Triton and stubs)."""
    copy = tmp_path_factory.mktemp("faults-repo") / "model_repository"
    shutil.copytree(repository, copy, symlinks=True)
    # a recording whose client gave up is dropped after idle_seconds (at transcribe's next request): 15 s, not 120
    config = copy / "transcribe" / "config.pbtxt"
    text = config.read_text()
    assert 'key: "idle_seconds" value: { string_value: "120" }' in text
    config.write_text(text.replace('key: "idle_seconds" value: { string_value: "120" }',
                                   f'key: "idle_seconds" value: {{ string_value: "{IDLE_S:g}" }}'))
    s = Serve(copy, tmp_path_factory.mktemp("faults-logs"), FUNASR_TRITON_TRITON__TIMEOUT_S=str(DEADLINE_S))
    try:
        s.wait_ready()
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def clients(stack) -> Clients:
    # ~6 s of speech; WebSocket audio paced at about real time so that a stream is still running when it is hit
    return Clients(stack.base, speech_clip(6.0), triton=f"127.0.0.1:{stack.grpc}", timeout_s=90, pace_s=0.05)


def ready(stack) -> httpx.Response:
    return httpx.get(stack.base + "/ready", timeout=30)


def wait_ready(stack, timeout_s: float = 180) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if ready(stack).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"not ready after {timeout_s} s: {stack.log()}")


def metric(stack, name: str, **labels: str) -> float:
    text = httpx.get(stack.base + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def triton_metric(stack, name: str) -> float:
    """A gauge of Triton's own metrics port (the models' custom metrics), summed over instances."""
    text = httpx.get(f"http://127.0.0.1:{stack.metrics}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def wait_state_freed(stack, clients: Clients, timeout_s: float = IDLE_S + 45) -> float:
    """No stream open in `streaming_asr`, no recording open in `transcribe` (the models' own gauges): freed by
    the frontend's abort, or by the model's idle eviction (which runs when the model gets a request)."""
    names = ("funasr_streaming_open_streams", "funasr_transcribe_open_recordings")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s and any(triton_metric(stack, n) for n in names):
        assert clients.call("aliyun").ok
        time.sleep(1)
    assert {n: triton_metric(stack, n) for n in names} == dict.fromkeys(names, 0)
    return time.monotonic() - t0


def all_surfaces_work(clients: Clients) -> None:
    for surface in (*SURFACES, "grpc"):
        out = clients.call(surface)
        assert out.ok, f"{surface}: {out}"


def live(p) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stubs_of(stack, model: str) -> list:
    return [p for p in triton_processes(stack.repo)
            if p.name() == "triton_python_backend_stub" and live(p) and f"/{model}/1/model.py" in " ".join(p.cmdline())]


def assert_failure_shape(out: Outcome, http_status: int, openai_code: str, retry_after: bool) -> None:
    """A failed call in its surface's own error shape (soak_clients.Outcome.code is that shape's code)."""
    if out.surface == "openai":
        assert out.status == http_status and out.code == openai_code, out
        assert out.body["error"]["type"] == "server_error" and out.body["error"]["message"], out
    elif out.surface == "aliyun":
        assert out.status == http_status and out.code == 50000000, out
        assert list(out.body) == ["task_id", "result", "status", "message"] and out.body["result"] == "", out
    elif out.surface == "api":
        assert out.status == http_status and out.code == http_status and out.body["data"] == [], out
    elif out.surface == "funasr_ws":
        assert out.code == openai_code and out.body.get("is_final") is True, out
        assert out.status == (1013 if http_status in (429, 503) else 1011), out
    elif out.surface == "nls_ws":
        assert out.code == 50000000 and out.body["header"]["name"] == "TaskFailed", out
        assert out.body["header"]["status_text"].startswith("Gateway:"), out
    if retry_after and out.surface in HTTP_SURFACES:
        assert int(out.retry_after) > 0, out


def test_triton_slower_than_the_deadline_is_504_in_each_shape(stack, clients):
    wait_ready(stack)
    triton = stack.tritonserver()
    triton.send_signal(signal.SIGSTOP)  # alive (the supervisor leaves it) but answers nothing: a real slow Triton
    try:
        with ThreadPoolExecutor(len(SURFACES)) as pool:
            futures = {s: pool.submit(clients.call, s) for s in SURFACES}
            time.sleep(1)
            probe = ready(stack)
            outcomes = {s: f.result(timeout=DEADLINE_S * 3 + 60) for s, f in futures.items()}
    finally:
        triton.send_signal(signal.SIGCONT)
    assert probe.status_code == 503 and probe.json()["missing"], probe.text
    for surface, out in outcomes.items():
        assert not out.ok, out
        assert_failure_shape(out, 504, "deadline_exceeded", retry_after=False)
        # the deadline holds: one Triton call, then the answer (the sequence is ended in the background)
        assert DEADLINE_S * 0.9 <= out.seconds <= DEADLINE_S + 20, (surface, out.seconds)
    print("\nSIGSTOPped Triton, seconds to the 504 answer: "
          + ", ".join(f"{s} {o.seconds:.1f}" for s, o in outcomes.items()))
    wait_ready(stack, 60)
    # the requests that timed out leave nothing behind in the frontend, nor in Triton's models once their idle
    # timeout has passed (a request Triton ran after SIGCONT opened a recording that no client will end)
    assert metric(stack, "funasr_streams_active") == 0
    freed = wait_state_freed(stack, clients)
    all_surfaces_work(clients)
    print(f"models' state freed {freed:.0f} s after SIGCONT (transcribe idle_seconds {IDLE_S:g})")


def run_in_thread(fn, *args) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target():
        box["out"] = fn(*args)
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def test_a_stream_whose_sequence_dies_fails_and_is_freed(stack, clients):
    wait_ready(stack)
    failed_before = metric(stack, "funasr_streams_total", outcome="failed")
    running = [run_in_thread(clients.call, s) for s in WS_SURFACES]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and metric(stack, "funasr_streams_active") < 2:
        time.sleep(0.1)
    assert metric(stack, "funasr_streams_active") == 2, "both streams are open"
    time.sleep(1.0)  # a second of audio in: each sequence holds state in a streaming_asr instance
    stubs = stubs_of(stack, "streaming_asr")
    assert stubs, "the streaming_asr instances run as python-backend stubs"
    t_kill = time.monotonic()
    for p in stubs:
        p.kill()
    outcomes = {}
    for t, box in running:
        t.join(DEADLINE_S * 2 + 60)
        assert not t.is_alive(), "the client hangs"
        outcomes[box["out"].surface] = box["out"]
    took = time.monotonic() - t_kill
    funasr, nls = outcomes["funasr_ws"], outcomes["nls_ws"]
    assert not funasr.ok and funasr.code == "model_unavailable" and funasr.status == 1013, funasr
    assert funasr.body["is_final"] is True and "streaming_asr" in funasr.body["error"]["message"], funasr
    assert not nls.ok and nls.code == 50000000 and nls.body["header"]["name"] == "TaskFailed", nls
    # the streams' state is freed in the frontend
    assert metric(stack, "funasr_streams_active") == 0
    assert metric(stack, "funasr_streams_total", outcome="failed") == failed_before + 2
    r = ready(stack)
    assert r.status_code == 503 and "streaming_asr" in r.json()["missing"], r.text
    # the offline surfaces do not use streaming_asr: still served
    for surface in HTTP_SURFACES:
        out = clients.call(surface)
        assert out.ok, out
    print(f"\nstreaming_asr stubs killed mid-stream: both clients answered within {took:.1f} s")


def test_one_dead_stub_fails_its_model_in_each_shape_others_served(stack, clients):
    # streaming_asr's stubs are dead since the previous test: this one is about `punc`
    (stub,) = stubs_of(stack, "punc")
    stub.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and live(stub):
        time.sleep(0.1)
    # punctuation is part of every OpenAI and /api recognition: 503 model_unavailable, retry later
    for surface in ("openai", "api"):
        out = clients.call(surface)
        assert not out.ok, out
        assert_failure_shape(out, 503, "model_unavailable", retry_after=True)
        message = out.body["error"]["message"] if surface == "openai" else out.body["msg"]
        assert "'punc'" in message, out
    # Alibaba REST punctuates only when asked: served without, refused with
    assert clients.call("aliyun").ok
    r = httpx.post(stack.base + "/stream/v1/asr", timeout=90, content=clients.pcm,
                   params={"format": "pcm", "enable_punctuation_prediction": "true"},
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 503 and r.json()["status"] == 50000000 and int(r.headers["Retry-After"]) > 0, r.text
    # the other models are served: Triton's own pipeline without punctuation
    from funasr_triton.contract import TranscribeOptions
    from funasr_triton.triton_client import TritonAsrClient
    direct = TritonAsrClient(f"127.0.0.1:{stack.grpc}", timeout_s=90)
    try:
        assert direct.transcribe(clients.samples, TranscribeOptions(punctuation=False))["text"]
        assert direct.vad_segments(clients.samples)
        # what Triton itself says: the model is still READY, yet its requests fail
        assert direct._client.is_model_ready("punc")
    finally:
        direct.close()
    body = ready(stack).json()
    assert body["status"] == "unavailable" and "punc" in body["missing"], body
    assert metric(stack, "funasr_requests_total", status="503") >= 2


def test_triton_sigkill_under_load_503_then_recovers(stack, clients, record_property):
    """Mixed load; tritonserver SIGKILLed; every call answered within its deadline; /ready 503; recovery."""
    if stack.proc.poll() is not None:
        pytest.fail(f"serve is gone: {stack.log()}")
    stop = threading.Event()
    outcomes: list[tuple[float, float, Outcome]] = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def worker(i: int) -> None:
        while not stop.is_set():
            surface = SURFACES[i % len(SURFACES)]
            i += 1
            start = time.monotonic() - t0
            out = clients.call(surface)
            with lock:
                outcomes.append((start, time.monotonic() - t0, out))
            if not out.ok:
                time.sleep(0.2)

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(SURFACES))]
    for w in workers:
        w.start()
    time.sleep(4)  # load running
    triton = stack.tritonserver()
    t_kill = time.monotonic() - t0
    triton.kill()
    saw_unready, recovered_s = False, None
    while time.monotonic() - t0 - t_kill < 240:
        try:
            probe = ready(stack)
        except httpx.HTTPError:
            probe = None
        if probe is not None and probe.status_code == 503 and "transcribe" in probe.json()["missing"]:
            saw_unready = True  # Triton itself is gone (not only the stubs the previous tests killed)
        if probe is not None and probe.status_code == 200 and saw_unready:
            out = clients.call("openai")
            if out.ok:
                recovered_s = time.monotonic() - t0 - t_kill
                break
        time.sleep(0.5)
    time.sleep(3)  # load on the recovered stack for a moment
    stop.set()
    for w in workers:
        w.join(clients.timeout_s + 30)
        assert not w.is_alive(), "a client hangs"
    assert saw_unready, "/ready said 503 while Triton was down"
    assert recovered_s is not None, f"no recovery within 240 s: {stack.log()}"

    failed = [(s, e, o) for s, e, o in outcomes if not o.ok and e > t_kill]
    assert failed, "requests during the outage fail"
    for start, end, out in failed:
        # no hang: a failure comes within the deadline (the stream's abort adds one more)
        assert end - start <= DEADLINE_S * 2 + 30, (start, end, out)
        assert "Timeout" not in out.detail, out
        # an outage in the API's shape: 503 + Retry-After (or the protocol's own failure); a request already
        # inside Triton when it died may see its call cut: 502 (gRPC error mid-call) is the only other answer
        # (before the kill, the stubs killed by the previous tests answer 503 model_unavailable)
        expected = "backend_unavailable" if start > t_kill or out.code != "model_unavailable" else out.code
        if out.surface in HTTP_SURFACES and out.status == 503:
            assert_failure_shape(out, 503, expected, retry_after=True)
        elif out.surface == "funasr_ws":
            assert out.code in (expected, "backend_error"), out
            assert out.status == (1011 if out.code == "backend_error" else 1013), out
        elif out.surface == "nls_ws":
            assert out.code == 50000000 and out.body["header"]["name"] == "TaskFailed", out
        else:
            assert out.status == 502 or (out.surface == "aliyun" and out.status == 500 and out.code == 50000001), out
            assert start <= t_kill + 1, f"only calls in flight at the kill may be cut: {out}"
    assert all(o.ok for s, e, o in outcomes if s > t_kill + recovered_s + 1), "all served after the recovery"
    n_503 = sum(o.status == 503 for _, _, o in failed)
    assert n_503 >= 1
    # the restart brought back the stubs killed by the previous tests, and every stream's state was freed
    wait_ready(stack, 30)
    all_surfaces_work(clients)
    assert metric(stack, "funasr_streams_active") == 0
    wait_state_freed(stack, clients)
    record_property("triton_sigkill_to_served_s", round(recovered_s, 1))
    by_status: dict = {}
    for _, _, o in failed:
        by_status[(o.surface, o.status)] = by_status.get((o.surface, o.status), 0) + 1
    print(f"\nTriton SIGKILLed under load: {len(outcomes)} calls, {len(failed)} failed during the outage "
          f"({', '.join(f'{s} {st}: {n}' for (s, st), n in sorted(by_status.items(), key=str))}); "
          f"kill -> first request served again: {recovered_s:.1f} s")
