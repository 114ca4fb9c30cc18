"""The checks of `make e2e` (.ci/e2e) against a running docker-compose stack.

1. the frontend answers /health;
2. a file transcribed through the OpenAI route (POST /v1/audio/transcriptions) comes back as JSON with a text;
3. Prometheus scrapes both targets of helm/funasr-triton/files/prometheus/prometheus.yml (jobs triton and
   frontend) with health "up", and its query API returns Triton's and the frontend's own series.
Exit status 0 when all pass; each step logs what it saw.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import httpx

log = logging.getLogger("e2e")
JOBS = ("triton", "frontend")


def wait_for(what: str, probe, timeout_s: float, every_s: float = 2.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except httpx.HTTPError as e:
            last = e
        time.sleep(every_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s (last error: {last})")


def check_frontend(api: str, audio: Path, timeout_s: float) -> str:
    wait_for("frontend /health", lambda: httpx.get(f"{api}/health", timeout=5).status_code == 200, timeout_s)
    t0 = time.monotonic()
    r = httpx.post(f"{api}/v1/audio/transcriptions", timeout=300,
                   files={"file": (audio.name, audio.read_bytes(), "audio/wav")}, data={"model": "paraformer-zh"})
    r.raise_for_status()
    body = r.json()
    if not isinstance(body.get("text"), str):
        raise AssertionError(f"transcription without a text: {body}")
    log.info("transcribed %s through the OpenAI route in %.1f s: %r", audio.name, time.monotonic() - t0, body["text"])
    return body["text"]


def targets_up(prometheus: str) -> dict[str, str] | None:
    r = httpx.get(f"{prometheus}/api/v1/targets", timeout=5)
    r.raise_for_status()
    health = {t["labels"]["job"]: t["health"] for t in r.json()["data"]["activeTargets"]}
    log.info("prometheus targets: %s", health)
    return health if all(health.get(job) == "up" for job in JOBS) else None


def series(prometheus: str, query: str) -> int:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5)
    r.raise_for_status()
    return len(r.json()["data"]["result"])


def check_prometheus(prometheus: str, timeout_s: float) -> None:
    wait_for("prometheus: both targets up", lambda: targets_up(prometheus), timeout_s, every_s=5)
    # Triton's per-model counters and the frontend's own metrics, as scraped
    for query in ('nv_inference_request_success{job="triton"}', '{job="frontend",__name__=~"funasr_.*"}'):
        n = wait_for(f"prometheus: series for {query}", lambda q=query: series(prometheus, q), timeout_s, every_s=5)
        log.info("prometheus: %d series for %s", n, query)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--api", required=True, help="the frontend's base URL")
    p.add_argument("--prometheus", required=True, help="Prometheus' base URL")
    p.add_argument("--audio", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=180.0, help="per wait, seconds")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="e2e: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    try:
        check_frontend(args.api.rstrip("/"), args.audio, args.timeout)
        check_prometheus(args.prometheus.rstrip("/"), args.timeout)
    except (AssertionError, TimeoutError, httpx.HTTPError) as e:
        log.error("FAILED: %s", e)
        return 1
    log.info("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
