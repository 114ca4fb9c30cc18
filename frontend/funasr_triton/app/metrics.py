"""Prometheus metrics of the frontend (one registry per app)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("funasr_requests_total", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("funasr_request_duration_seconds", "HTTP request latency", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("funasr_audio_seconds_total", "audio seconds recognised", registry=r)
        self.rtf = Histogram("funasr_rtf", "real-time factor per recognition (processing / audio)",
                             buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2), registry=r)
        self.inflight = Gauge("funasr_inflight_requests", "recognitions running", registry=r)
        self.queued = Gauge("funasr_queued_requests", "recognitions waiting for a slot", registry=r)
        self.rejected = Counter("funasr_rejected_total", "requests refused before recognition", ["reason"], registry=r)
        self.ffmpeg_seconds = Histogram("funasr_ffmpeg_seconds", "ffmpeg decode time", buckets=LATENCY_BUCKETS, registry=r)
        # real-time streams (WebSocket routes)
        self.streams_active = Gauge("funasr_streams_active", "real-time streams open", ["protocol"], registry=r)
        self.streams = Counter("funasr_streams_total", "real-time streams ended, by outcome "
                               "(completed, failed, dropped = client vanished, rejected = over max_streams)",
                               ["protocol", "outcome"], registry=r)
        self.stream_audio_seconds = Counter("funasr_stream_audio_seconds_total", "audio seconds received by streams",
                                            registry=r)
        self.partial_latency = Histogram(
            "funasr_stream_partial_latency_seconds", "audio completing a chunk received -> partial result ready",
            buckets=STREAM_BUCKETS, registry=r)
        self.final_latency = Histogram(
            "funasr_stream_final_latency_seconds", "audio ending a sentence received -> final (2-pass) result ready",
            buckets=STREAM_BUCKETS, registry=r)
        self.triton_seconds = Histogram("funasr_triton_seconds", "Triton pipeline call time", buckets=LATENCY_BUCKETS, registry=r)
