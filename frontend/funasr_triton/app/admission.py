"""Bounded admission: at most N recognitions run, at most M wait (each at most T seconds), else 429."""
from __future__ import annotations

import asyncio
import contextlib

from ..errors import AsrError


class Admission:
    def __init__(self, max_running: int, max_queued: int, queue_timeout_s: float):
        self._slots = asyncio.Semaphore(max_running)
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.waiting = 0
        self.running = 0

    @contextlib.asynccontextmanager
    async def slot(self):
        if self._slots.locked() and self.waiting >= self.max_queued:
            raise AsrError("too many concurrent requests; retry later", 429, "rate_limited", retry_after_s=1)
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.queue_timeout_s or None)
        except asyncio.TimeoutError:
            raise AsrError(f"no recognition slot within {self.queue_timeout_s:.0f} s; retry later", 429,
                           "rate_limited", retry_after_s=max(1, int(self.queue_timeout_s)))
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
