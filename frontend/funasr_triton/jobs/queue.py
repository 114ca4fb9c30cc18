"""The job queue: huey's SQL storage (`huey.contrib.sql_huey.SqlStorage`) in the job store's database.

huey gives the queue table and an atomic dequeue (`BEGIN IMMEDIATE` on SQLite, `FOR UPDATE SKIP LOCKED`
on PostgreSQL, so two replicas never take the same message). Its consumer (threads/processes with
signal handlers) is not used: the frontend's own asyncio workers (runner.py) dequeue job ids and run
them on the transcription service. A message only says "run job X"; whether X may run is decided by
the store's conditional claim, so a message that was delivered twice cannot run a job twice.
"""
from __future__ import annotations

from huey.contrib.sql_huey import SqlStorage

from .store import JobStore

QUEUE_NAME = "funasr-jobs"


class JobQueue:
    def __init__(self, store: JobStore):
        self.storage = SqlStorage(QUEUE_NAME, database=store.db)

    def enqueue(self, job_id: str) -> None:
        self.storage.enqueue(job_id.encode("ascii"))

    def dequeue(self) -> str | None:
        data = self.storage.dequeue()
        return data.decode("ascii") if data else None

    def size(self) -> int:
        return self.storage.queue_size()
