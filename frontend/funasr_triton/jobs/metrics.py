"""Job metrics, on the frontend's registry. Store-wide gauges are refreshed by the maintenance loop
(every `jobs.maintenance_interval_s`); counters count what this replica did."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge

from .store import CANCELLED, EXPIRED, FAILED, QUEUED, RUNNING, SUCCEEDED

STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED)


class JobMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.jobs = Gauge("funasr_jobs", "jobs in the store by state (all replicas)", ["state"], registry=r)
        self.oldest_queued = Gauge("funasr_jobs_oldest_queued_age_seconds",
                                   "age of the oldest queued job (0 when none)", registry=r)
        self.submitted = Counter("funasr_jobs_submitted_total", "jobs accepted by this replica", ["kind"], registry=r)
        self.started = Counter("funasr_jobs_started_total", "job runs started by this replica", registry=r)
        self.finished = Counter("funasr_jobs_finished_total", "job runs finished by this replica, by outcome",
                                ["kind", "state"], registry=r)
        self.rejected = Counter("funasr_jobs_rejected_total", "jobs refused because the queue was full", registry=r)

    def update(self, counts: dict[str, int], oldest_queued: float | None) -> None:
        for state in STATES:
            self.jobs.labels(state).set(counts.get(state, 0))
        self.oldest_queued.set(max(0.0, time.time() - oldest_queued) if oldest_queued else 0.0)
