"""The job store: one SQL database (SQLite in the data directory, or PostgreSQL shared by replicas).

It holds huey's queue tables (see queue.py) and our own tables, so a job's row and its queue message
are written in one transaction: a job is never recorded without being queued, nor queued twice by a
recovery. Tables are peewee models on `Base`; another feature adds its own table by subclassing
`Base` and listing it in `TABLES` (or calling `JobStore.add_table`) before the store opens.

Every call is synchronous (peewee); the runner calls them through `asyncio.to_thread`.
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from peewee import (BooleanField, CharField, DatabaseProxy, DoubleField, IntegerField, Model, SqliteDatabase,
                    TextField, fn)
from playhouse.db_url import connect as db_url_connect

database = DatabaseProxy()

# job states
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED = "queued", "running", "succeeded", "failed", "cancelled", "expired"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)


class Base(Model):
    class Meta:
        database = database


class JSONField(TextField):
    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=False)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class Job(Base):
    """One submitted job: one or more files, recognised in order with the same options."""
    id = CharField(primary_key=True, max_length=64)
    kind = CharField(max_length=16, index=True)  # openai (native /v1/jobs), filetrans, dashscope
    state = CharField(max_length=16, index=True, default=QUEUED)
    created_at = DoubleField(index=True)
    started_at = DoubleField(null=True)
    finished_at = DoubleField(null=True, index=True)
    lease_until = DoubleField(null=True)  # a running job whose lease passed is queued again
    owner = CharField(max_length=128, null=True)  # the replica running it
    attempts = IntegerField(default=0)  # runs started
    cancel_requested = BooleanField(default=False)
    params = JSONField()  # TranscribeOptions + the surface's own fields (response_format, callback_url…)
    files = JSONField()  # [{"name", "url"?, "path"?, "size"?}] in order
    progress = JSONField(null=True)
    results = JSONField(null=True)  # one entry per file: {"status", "transcript"?, "error"?}
    error = JSONField(null=True)  # {"code", "message", "status"} when the job as a whole failed

    class Meta:
        table_name = "funasr_jobs"


TABLES: list[type[Model]] = [Job]


def new_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    def __init__(self, url: str | None, data_dir: Path):
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.audio_dir = data_dir / "audio"
        self.audio_dir.mkdir(exist_ok=True)
        if url:
            self.db = db_url_connect(url)
        else:
            self.db = SqliteDatabase(str(data_dir / "jobs.sqlite3"), timeout=30,
                                     pragmas={"journal_mode": "wal", "busy_timeout": 30000, "synchronous": "normal"})
        database.initialize(self.db)
        with self.db.connection_context():
            self.db.create_tables(TABLES, safe=True)

    @property
    def is_sqlite(self) -> bool:
        return isinstance(self.db, SqliteDatabase)

    def add_table(self, model: type[Model]) -> None:
        """Another feature's table in the same database (created if missing)."""
        if model not in TABLES:
            TABLES.append(model)
        with self.db.connection_context():
            self.db.create_tables([model], safe=True)

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    def atomic(self):
        return self.db.atomic("IMMEDIATE") if self.is_sqlite else self.db.atomic()

    def job_audio_dir(self, job_id: str) -> Path:
        return self.audio_dir / job_id

    # ------------------------------------------------------------ reads

    def get(self, job_id: str) -> Job | None:
        return Job.get_or_none(Job.id == job_id)

    def list(self, kind: str | None = None, state: str | None = None, limit: int = 20,
             before: float | None = None) -> list[Job]:
        q = Job.select()
        if kind:
            q = q.where(Job.kind == kind)
        if state:
            q = q.where(Job.state == state)
        if before is not None:
            q = q.where(Job.created_at < before)
        return list(q.order_by(Job.created_at.desc()).limit(limit))

    def count_queued(self) -> int:
        return Job.select().where(Job.state == QUEUED).count()

    def counts(self) -> tuple[dict[str, int], float | None]:
        """Jobs per state, and the creation time of the oldest queued job."""
        rows = Job.select(Job.state, fn.COUNT(Job.id).alias("n")).group_by(Job.state).tuples()
        oldest = Job.select(fn.MIN(Job.created_at)).where(Job.state == QUEUED).scalar()
        return {state: n for state, n in rows}, oldest

    # ------------------------------------------------------------ writes

    def create(self, job: Job, enqueue) -> None:
        """Insert the job and queue it (`enqueue(job_id)`) in one transaction."""
        with self.atomic():
            job.save(force_insert=True)
            enqueue(job.id)

    def claim(self, job_id: str, owner: str, lease_s: float, max_attempts: int) -> bool:
        """queued -> running for this replica; False when someone else has it, or it was cancelled."""
        now = time.time()
        n = (Job.update(state=RUNNING, owner=owner, lease_until=now + lease_s, started_at=now,
                        attempts=Job.attempts + 1)
             .where((Job.id == job_id) & (Job.state == QUEUED) & (Job.attempts < max_attempts)).execute())
        return n == 1

    def renew(self, job_id: str, owner: str, lease_s: float, progress: dict | None) -> bool:
        """Extend the lease (and store progress); False when the job is no longer ours to run (cancelled)."""
        fields: dict[str, Any] = {"lease_until": time.time() + lease_s}
        if progress is not None:
            fields["progress"] = progress
        n = (Job.update(**fields)
             .where((Job.id == job_id) & (Job.owner == owner) & (Job.state == RUNNING)
                    & (Job.cancel_requested == False)).execute())  # noqa: E712 - SQL comparison
        return n == 1

    def save_files(self, job_id: str, owner: str, files: list[dict]) -> None:
        Job.update(files=files).where((Job.id == job_id) & (Job.owner == owner)).execute()

    def finish(self, job_id: str, owner: str, state: str, results: list[dict] | None, error: dict | None,
               progress: dict | None = None) -> bool:
        fields: dict[str, Any] = {"state": state, "results": results, "error": error, "finished_at": time.time(),
                                  "lease_until": None}
        if progress is not None:
            fields["progress"] = progress
        n = (Job.update(**fields)
             .where((Job.id == job_id) & (Job.owner == owner) & (Job.state == RUNNING)).execute())
        return n == 1

    def requeue(self, job_id: str, owner: str, enqueue) -> bool:
        """A run that could not start (server busy) goes back to the queue without counting as an attempt."""
        with self.atomic():
            n = (Job.update(state=QUEUED, owner=None, lease_until=None, attempts=Job.attempts - 1)
                 .where((Job.id == job_id) & (Job.owner == owner) & (Job.state == RUNNING)).execute())
            if n == 1:
                enqueue(job_id)
        return n == 1

    def cancel(self, job_id: str) -> str | None:
        """Cancel a job: queued -> cancelled at once; running -> cancelled (its runner stops at its next
        lease renewal). Returns the new state, or None when the job does not exist."""
        now = time.time()
        with self.atomic():
            job = self.get(job_id)
            if job is None:
                return None
            if job.state in (QUEUED, RUNNING):
                Job.update(state=CANCELLED, cancel_requested=True, finished_at=now, lease_until=None).where(
                    (Job.id == job_id) & (Job.state == job.state)).execute()
                return CANCELLED
            return job.state

    def recover(self, enqueue, max_attempts: int) -> tuple[list[str], list[str]]:
        """Running jobs whose lease expired (their replica died): queued again, or failed after
        `max_attempts` runs. Returns (re-queued ids, failed ids). Each row is taken by one replica only."""
        now = time.time()
        stale = [j for (j,) in Job.select(Job.id).where((Job.state == RUNNING) & (Job.lease_until < now)).tuples()]
        requeued, failed = [], []
        for job_id in stale:
            with self.atomic():
                n = (Job.update(state=QUEUED, owner=None, lease_until=None)
                     .where((Job.id == job_id) & (Job.state == RUNNING) & (Job.lease_until < now)
                            & (Job.attempts < max_attempts)).execute())
                if n == 1:
                    enqueue(job_id)
                    requeued.append(job_id)
                    continue
                n = (Job.update(state=FAILED, finished_at=now, lease_until=None,
                                error={"code": "too_many_attempts", "status": 500,
                                       "message": f"the job's runner stopped {max_attempts} times"})
                     .where((Job.id == job_id) & (Job.state == RUNNING) & (Job.lease_until < now)).execute())
                if n == 1:
                    failed.append(job_id)
        return requeued, failed

    def expire(self, retention_s: float) -> list[str]:
        """Finished jobs older than the retention: results dropped, state `expired` (so a client asking
        later is told it expired). Returns their ids (the caller deletes their audio)."""
        cutoff = time.time() - retention_s
        ids = [j for (j,) in Job.select(Job.id).where(Job.state.in_(FINISHED) & (Job.finished_at < cutoff)).tuples()]
        if ids:
            Job.update(state=EXPIRED, results=None, progress=None).where(
                Job.id.in_(ids) & Job.state.in_(FINISHED)).execute()
        return ids

    def drop_expired(self, older_than_s: float) -> int:
        """Forget expired rows entirely after a further period."""
        cutoff = time.time() - older_than_s
        return Job.delete().where((Job.state == EXPIRED) & (Job.finished_at < cutoff)).execute()

