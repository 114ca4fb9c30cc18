"""Triton python backend for `transcribe`: one long recording per sequence, results as they come.

Each sequence owns a LongFileJob (longfile.py) that lives in this instance between requests: its
segment recognitions run as BLS tasks on the backend's event loop while the client sends the next
piece. The contract is in config.pbtxt.
"""
import asyncio
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from funasr_triton_models.diarize_cluster import DEFAULT_MAX_SPEAKERS
from funasr_triton_models.hotwords import MAX_HOTWORDS
from funasr_triton_models.job_backend import BLS, JobThreads, job_limits, load_vad
from funasr_triton_models.longfile import JobInputError, JobOptions, LongFileJob
from funasr_triton_models.stage import (StageInputError, input_array, int_param, json_tensor, model_config,
                                        outcome_response, scalar_input)

INPUTS = {"WAV": "TYPE_FP32", "CONFIG": "TYPE_STRING", "FINAL": "TYPE_BOOL", "ABORT": "TYPE_BOOL"}
CONTROLS = {"START", "END", "READY", "CORRID"}
OUTPUTS = {"EVENTS": "TYPE_STRING"}
SAMPLE_RATE = 16000


class _Recording:
    def __init__(self, job: LongFileJob):
        self.job = job
        self.seen = time.monotonic()


class TritonPythonModel:
    def initialize(self, args):
        config, _ = model_config(args, INPUTS, OUTPUTS)
        controls = {c["name"] for c in config.get("sequence_batching", {}).get("control_input", [])}
        if controls != CONTROLS:
            raise pb_utils.TritonModelException(
                f"transcribe: sequence_batching must declare the control inputs {sorted(CONTROLS)}, got {sorted(controls)}")
        self.max_samples = int_param(config, "max_audio_seconds", 14400, minimum=1) * SAMPLE_RATE
        self.max_request = int_param(config, "max_request_seconds", 120, minimum=1) * SAMPLE_RATE
        self.max_jobs = int_param(config, "max_jobs", 64, minimum=1)
        self.idle_s = int_param(config, "idle_seconds", 120, minimum=1)
        self.poll_wait_s = int_param(config, "poll_wait_seconds", 5, minimum=1)
        self.max_hotwords = int_param(config, "max_hotwords", MAX_HOTWORDS, minimum=0)
        self.default_max_speakers = int_param(config, "default_max_speakers", DEFAULT_MAX_SPEAKERS, minimum=1)
        self.limits = job_limits(config)
        self.vad = load_vad(args, config)
        self.threads = JobThreads(config)
        self.recordings: dict[int, _Recording] = {}
        labels = {"model": args["model_name"], "instance": args["model_instance_name"]}
        # the families must outlive their metrics: keep both
        self.metric_families = [
            pb_utils.MetricFamily(name="funasr_transcribe_open_recordings",
                                  description="long recordings a transcribe instance holds",
                                  kind=pb_utils.MetricFamily.GAUGE),
            pb_utils.MetricFamily(name="funasr_transcribe_dropped_total",
                                  description="recordings dropped before their result (abort, idle, failure)",
                                  kind=pb_utils.MetricFamily.COUNTER)]
        self.gauge = self.metric_families[0].Metric(labels=labels)
        self.evicted = self.metric_families[1].Metric(labels=labels)

    @staticmethod
    def _control(request, name: str) -> int:
        return int(input_array(request, name).reshape(-1)[0])

    @staticmethod
    def _flag(request, name: str) -> bool:
        return bool(scalar_input(request, name, np.bool_, False))

    def _drop(self, corrid: int, why: str) -> None:
        rec = self.recordings.pop(corrid, None)
        if rec is not None:
            rec.job.cancel()
            if why != "done":
                self.evicted.increment(1)
        self.gauge.set(len(self.recordings))

    def _evict_idle(self) -> None:
        now = time.monotonic()
        for corrid in [c for c, r in self.recordings.items() if now - r.seen > self.idle_s]:
            pb_utils.Logger.log_warn(f"transcribe: recording {corrid} idle for {self.idle_s} s, dropped")
            self._drop(corrid, "idle")

    def _open(self, request, corrid: int) -> _Recording:
        if len(self.recordings) >= self.max_jobs:
            raise StageInputError(f"this instance already transcribes {self.max_jobs} recordings (max_jobs)")
        raw = input_array(request, "CONFIG", required=False)
        options = {}
        if raw is not None:
            value = raw.reshape(-1)[0]
            try:
                options = json.loads(value.decode("utf-8") if isinstance(value, bytes) else str(value) or "{}")
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                raise StageInputError(f"CONFIG is not JSON: {e}") from e
        try:
            opts = JobOptions.parse(options, self.default_max_speakers, self.max_hotwords)
        except JobInputError as e:
            raise StageInputError(str(e)) from e
        rec = _Recording(LongFileJob(self.vad, opts, BLS, self.limits, self.threads.cpu))
        self.recordings[corrid] = rec
        self.gauge.set(len(self.recordings))
        return rec

    async def _one(self, request) -> list[dict]:
        corrid = self._control(request, "CORRID")
        start, end = self._control(request, "START"), self._control(request, "END")
        if self._flag(request, "ABORT"):
            self._drop(corrid, "abort")
            return []
        if start:
            self._drop(corrid, "restart")
            rec = self._open(request, corrid)
        else:
            rec = self.recordings.get(corrid)
            if rec is None:
                if end:  # the result was already taken (or the recording was dropped): nothing left
                    return []
                raise StageInputError(f"no recording {corrid} here: it ended, was dropped after "
                                      f"{self.idle_s} s idle, or never started (send START first)")
        rec.seen = time.monotonic()
        try:
            wav = input_array(request, "WAV", np.float32, ndim=2)[0]
            if wav.shape[0] > self.max_request:
                raise StageInputError(f"one request holds at most {self.max_request // SAMPLE_RATE} s of audio")
            if rec.job.received + wav.shape[0] > self.max_samples:
                raise StageInputError(f"the recording is longer than {self.max_samples // SAMPLE_RATE} s")
            if not np.isfinite(wav).all():
                raise StageInputError("WAV contains NaN or infinite samples")
            final = self._flag(request, "FINAL")
            try:
                await rec.job.feed(wav)
                if final:
                    await rec.job.finish()
            except JobInputError as e:
                raise StageInputError(str(e)) from e
            events = await rec.job.take(self.poll_wait_s if rec.job.progress()["final"] else 0.0)
        except BaseException:
            self._drop(corrid, "failed")
            raise
        events.append(rec.job.progress())
        rec.seen = time.monotonic()
        if rec.job.done or end:
            self._drop(corrid, "done" if rec.job.done else "ended")
        return events

    async def execute(self, requests):
        self.threads.on_loop()
        self._evict_idle()
        outcomes = await asyncio.gather(*[self._one(r) for r in requests], return_exceptions=True)
        return [outcome_response("transcribe", o, lambda events: [json_tensor("EVENTS", events)]) for o in outcomes]

    def finalize(self):
        for corrid in list(self.recordings):
            self._drop(corrid, "unload")
        self.threads.close()
