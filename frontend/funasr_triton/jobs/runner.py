"""Job workers inside the frontend process: dequeue, claim, run on the transcription service, finish.

`jobs.workers` asyncio workers take job ids from the queue (queue.py) and claim them in the store
(store.py). A running job holds a lease that its heartbeat renews every third of `jobs.lease_s`,
storing the job's progress (the long-file path's progress events) at the same time. A replica that
dies (SIGKILL, OOM, node lost) stops renewing: the maintenance loop of any replica finds the expired
lease and queues the job again, up to `jobs.max_attempts` runs. A graceful stop queues the jobs it was
running at once. Cancelling a running job is seen by its heartbeat (or at once on the replica that
runs it), which cancels the run: leaving the service's event stream aborts the Triton sequence.

The maintenance loop also purges finished jobs after `jobs.retention_hours`, with their audio, and
refreshes the job metrics.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable

from ..app.upload import SpooledAudio
from ..contract import TranscribeOptions, Transcript
from ..errors import AsrError
from ..logs import event
from .metrics import JobMetrics
from .queue import JobQueue
from .store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job, JobStore, new_id

log = logging.getLogger(__name__)
Hook = Callable[[Job], Awaitable[None]]


def error_dict(err: AsrError) -> dict:
    return {"code": err.code, "message": err.message, "status": err.status}


class Busy(Exception):
    """The service refused a recognition slot (429): the job goes back to the queue."""


class JobRunner:
    def __init__(self, settings, service, registry):
        self.settings = settings
        self.cfg = settings.jobs
        self.service = service
        self.store = JobStore(self.cfg.backend_url, Path(self.cfg.data_dir).expanduser())
        self.queue = JobQueue(self.store)
        self.metrics = JobMetrics(registry)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.hooks: dict[str, Hook] = {}  # kind -> called once a job of that kind finished (callbacks)
        self.running: dict[str, asyncio.Task] = {}
        self.progress: dict[str, dict] = {}
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self._stopping = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._maintain_once()
        self._tasks = [asyncio.create_task(self._worker(i), name=f"job-worker-{i}") for i in range(self.cfg.workers)]
        self._tasks.append(asyncio.create_task(self._maintenance(), name="job-maintenance"))
        event(log, "jobs started", owner=self.owner, workers=self.cfg.workers,
              backend="sqlite" if self.store.is_sqlite else "postgresql")

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        running = list(self.running.items())
        for _, t in running:
            t.cancel()
        await asyncio.gather(*self._tasks, *(t for _, t in running), return_exceptions=True)
        for job_id, _ in running:  # queued again now rather than after the lease expires
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.requeue, job_id, self.owner, self.queue.enqueue)
        await asyncio.to_thread(self.store.close)

    # ------------------------------------------------------------ submission

    async def submit(self, kind: str, params: dict, files: list[dict], audio: list[SpooledAudio | None]) -> Job:
        """A new queued job. `files[i]` is {"name", "url"?}; `audio[i]` the uploaded audio of file i (moved
        into the data directory) or None for a URL fetched when the job runs."""
        cfg = self.cfg
        if len(files) > cfg.max_files:
            raise AsrError(f"{len(files)} files in one job; at most {cfg.max_files}", 400, "too_many_files", "file")
        total = sum(a.size for a in audio if a is not None)
        if total > cfg.max_job_bytes:
            raise AsrError(f"the job's audio is {total} bytes; at most {cfg.max_job_bytes}", 413, "too_large", "file")
        queued = await asyncio.to_thread(self.store.count_queued)
        if queued >= cfg.max_queued:
            self.metrics.rejected.inc()
            raise AsrError(f"{queued} jobs are queued, the most this server accepts; retry later", 429,
                           "too_many_jobs", retry_after_s=30)
        job_id = new_id()
        folder = self.store.job_audio_dir(job_id)
        folder.mkdir(parents=True)
        try:
            stored = []
            for i, (f, a) in enumerate(zip(files, audio)):
                entry = dict(f)
                if a is not None:
                    dest = folder / str(i)
                    await asyncio.to_thread(shutil.move, str(a.path), dest)
                    entry.update(path=dest.name, size=a.size)
                stored.append(entry)
            job = Job(id=job_id, kind=kind, state=QUEUED, created_at=time.time(), params=params, files=stored)
            await asyncio.to_thread(self.store.create, job, self.queue.enqueue)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.metrics.submitted.labels(kind).inc()
        event(log, "job queued", job=job_id, kind=kind, files=len(files))
        self._wake.set()
        return job

    async def get(self, job_id: str) -> Job | None:
        job = await asyncio.to_thread(self.store.get, job_id)
        if job is not None and job.state == RUNNING and job_id in self.progress:
            job.progress = self.progress[job_id]  # fresher than the last heartbeat's copy
        return job

    async def list(self, kind: str | None, state: str | None, limit: int, before: float | None) -> list[Job]:
        return await asyncio.to_thread(self.store.list, kind, state, limit, before)

    async def cancel(self, job_id: str) -> str | None:
        state = await asyncio.to_thread(self.store.cancel, job_id)
        task = self.running.get(job_id)
        if state == CANCELLED and task is not None:
            task.cancel()
        return state

    # ------------------------------------------------------------ workers

    async def _worker(self, n: int) -> None:
        while True:
            try:
                job_id = await asyncio.to_thread(self.queue.dequeue)
                if job_id is None:
                    self._wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.cfg.poll_interval_s)
                    continue
                claimed = await asyncio.to_thread(self.store.claim, job_id, self.owner, self.cfg.lease_s,
                                                  self.cfg.max_attempts)
                if not claimed:
                    continue
                await self._execute(job_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is unreachable, or a bug: keep the worker alive
                log.exception("job worker error")
                await asyncio.sleep(self.cfg.poll_interval_s)

    async def _execute(self, job_id: str) -> None:
        job = await asyncio.to_thread(self.store.get, job_id)
        event(log, "job started", job=job_id, kind=job.kind, attempt=job.attempts, owner=self.owner)
        self.metrics.started.inc()
        run = asyncio.create_task(self._run(job))
        self.running[job_id] = run
        beat = asyncio.create_task(self._heartbeat(job_id, run))
        try:
            state, results, error = await run
        except asyncio.CancelledError:
            if self._stopping:  # the runner itself is stopping: stop() queues the job again
                raise
            event(log, "job cancelled", job=job_id)
            self.metrics.finished.labels(job.kind, CANCELLED).inc()
            return
        except Busy:
            await asyncio.to_thread(self.store.requeue, job_id, self.owner, self.queue.enqueue)
            await asyncio.sleep(self.cfg.poll_interval_s)
            return
        finally:
            beat.cancel()
            self.running.pop(job_id, None)
            progress = self.progress.pop(job_id, None)
        done = await asyncio.to_thread(self.store.finish, job_id, self.owner, state, results, error, progress)
        if not done:  # cancelled (or taken over) meanwhile: its outcome is not ours to record
            return
        self.metrics.finished.labels(job.kind, state).inc()
        event(log, "job finished", job=job_id, kind=job.kind, state=state, owner=self.owner)
        hook = self.hooks.get(job.kind)
        if hook is not None:
            finished = await asyncio.to_thread(self.store.get, job_id)
            try:
                await hook(finished)
            except Exception:
                log.exception("job hook failed")

    async def _heartbeat(self, job_id: str, run: asyncio.Task) -> None:
        interval = self.cfg.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                ours = await asyncio.to_thread(self.store.renew, job_id, self.owner, self.cfg.lease_s,
                                               self.progress.get(job_id))
            except Exception:
                log.exception("job lease renewal failed")
                continue
            if not ours:
                run.cancel()
                return

    async def _run(self, job: Job) -> tuple[str, list[dict], dict | None]:
        options = TranscribeOptions.model_validate(job.params.get("options", {}))
        files = list(job.files)
        results: list[dict] = []
        fetched = 0
        for i, f in enumerate(files):
            self.progress[job.id] = {"files": len(files), "file": i, "files_done": i}
            try:
                path = await self._audio(job, i, f, files)
                fetched += f.get("size", 0) if f.get("url") else 0
                if fetched > self.cfg.max_job_bytes:
                    raise AsrError(f"the job's audio passed {self.cfg.max_job_bytes} bytes", 413, "too_large", "file")
                transcript = await self._transcribe(job.id, path, f.get("size", 0), options, i, len(files))
                results.append({"status": SUCCEEDED, "transcript": transcript.model_dump(mode="json")})
            except AsrError as err:
                if err.status == 429:
                    raise Busy from err
                event(log, "job file failed", level=logging.WARNING, job=job.id, file=i, code=err.code)
                results.append({"status": FAILED, "error": error_dict(err)})
        self.progress[job.id] = {**self.progress[job.id], "file": len(files), "files_done": len(files)}
        ok = any(r["status"] == SUCCEEDED for r in results)
        return (SUCCEEDED, results, None) if ok else (FAILED, results, results[0]["error"] if results else None)

    async def _audio(self, job: Job, i: int, f: dict, files: list[dict]) -> Path:
        folder = self.store.job_audio_dir(job.id)
        if f.get("path"):
            path = folder / f["path"]
            if path.exists():
                return path
            if not f.get("url"):  # an upload kept on another replica's volume that this one cannot see
                raise AsrError("the job's audio is missing from the data directory (replicas need a shared "
                               "data volume for uploads)", 500, "audio_missing")
        audio = await self.service.fetch(f["url"])  # the SSRF-guarded fetch (app/fetch.py)
        dest = folder / str(i)
        folder.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.move, str(audio.path), dest)
        f.update(path=dest.name, size=audio.size)
        await asyncio.to_thread(self.store.save_files, job.id, self.owner, files)  # a rerun does not fetch again
        return dest

    async def _transcribe(self, job_id: str, path: Path, size: int, options: TranscribeOptions, i: int,
                          n: int) -> Transcript:
        source = SpooledAudio(path, size or path.stat().st_size)  # not closed here: the job's audio stays
        async with contextlib.aclosing(self.service.events(source, options)) as events:
            async for e in events:
                if e.get("type") == "progress":
                    self.progress[job_id] = {"files": n, "file": i, "files_done": i,
                                             **{k: v for k, v in e.items() if k != "type"}}
                elif e.get("type") == "transcript":
                    return e["transcript"]
        raise AsrError("recognition ended without a result", 502, "backend_error")

    # ------------------------------------------------------------ maintenance

    async def _maintenance(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.maintenance_interval_s)
            try:
                await self._maintain_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job maintenance failed")

    async def _maintain_once(self) -> None:
        requeued, failed = await asyncio.to_thread(self.store.recover, self.queue.enqueue, self.cfg.max_attempts)
        for job_id in requeued:
            event(log, "job recovered", level=logging.WARNING, job=job_id)
        for job_id in failed:
            event(log, "job failed after too many attempts", level=logging.WARNING, job=job_id)
        if requeued:
            self._wake.set()
        retention_s = self.cfg.retention_hours * 3600
        for job_id in await asyncio.to_thread(self.store.expire, retention_s):
            await asyncio.to_thread(shutil.rmtree, self.store.job_audio_dir(job_id), True)
            event(log, "job expired", job=job_id)
        # an expired job is still answered as expired (FileTrans 41050010) for a day or a retention, then forgotten
        await asyncio.to_thread(self.store.drop_expired, retention_s + max(retention_s, 86400.0))
        counts, oldest = await asyncio.to_thread(self.store.counts)
        self.metrics.update(counts, oldest)


def runner_of(app) -> JobRunner:
    """The app's job runner (every job-backed surface's); a 404 `jobs_disabled` when jobs are off (jobs.enabled)."""
    jobs = getattr(app.state, "jobs", None)
    if jobs is None:
        raise AsrError("jobs are disabled on this server", 404, "jobs_disabled")
    return jobs
