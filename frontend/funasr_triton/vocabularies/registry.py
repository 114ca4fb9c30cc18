"""The vocabulary table in the job store (jobs/store.py), and `vocabulary_id` resolution for every surface.

A vocabulary is a list of `{text, weight, lang}`; its words are checked against the hotword limits by
`app.hotwords.check_hotwords` when stored, and merged with a request's inline hotwords (and the hotword
file) by the transcription service, which checks the limits again on the union.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid

from peewee import CharField, DoubleField

from ..errors import AsrError
from ..jobs.store import Base, JSONField

ID_PATTERN = re.compile(r"vocab-(?:[a-z0-9]{1,10}-)?[0-9a-f]{32}")


class VocabularyRow(Base):
    id = CharField(primary_key=True, max_length=64)
    name = CharField(max_length=128, null=True)
    words = JSONField()  # [{"text", "weight", "lang"}]
    created_at = DoubleField(index=True)
    updated_at = DoubleField()

    class Meta:
        table_name = "funasr_vocabularies"


def setup(jobs) -> None:
    """A job setup hook (app.state.job_setups): the table in the job store, created if missing."""
    jobs.store.add_table(VocabularyRow)


def looks_like_id(value: str | None) -> bool:
    """Aliyun REST / NLS WebSocket take inline words in `vocabulary_id` too ("词 20 词 15"): a value that
    starts with `vocab-` and has no whitespace is an id, anything else is inline words."""
    return bool(value) and value.startswith("vocab-") and not any(c.isspace() for c in value)


def new_vocabulary_id(prefix: str | None) -> str:
    return f"vocab-{prefix}-{uuid.uuid4().hex}" if prefix else f"vocab-{uuid.uuid4().hex}"


class Registry:
    """Async access to the table (peewee calls run in a thread, as the job runner's do)."""

    def __init__(self, jobs, max_count: int):
        self.jobs = jobs
        self.max_count = max_count

    async def get(self, vocabulary_id: str) -> VocabularyRow | None:
        return await asyncio.to_thread(VocabularyRow.get_or_none, VocabularyRow.id == vocabulary_id)

    async def list(self, prefix: str | None, limit: int) -> list[VocabularyRow]:
        def q():
            query = VocabularyRow.select()
            if prefix:
                query = query.where(VocabularyRow.id.startswith(f"vocab-{prefix}-"))
            return list(query.order_by(VocabularyRow.created_at.desc()).limit(limit))
        return await asyncio.to_thread(q)

    async def create(self, name: str | None, prefix: str | None, words: list[dict]) -> VocabularyRow:
        def q():
            with self.jobs.store.atomic():
                if VocabularyRow.select().count() >= self.max_count:
                    raise AsrError(f"{self.max_count} vocabularies are stored already (jobs.max_vocabularies); "
                                   "delete one first", 429, "too_many_vocabularies")
                now = time.time()
                row = VocabularyRow(id=new_vocabulary_id(prefix), name=name, words=words, created_at=now,
                                    updated_at=now)
                row.save(force_insert=True)
                return row
        return await asyncio.to_thread(q)

    async def update(self, vocabulary_id: str, name: str | None, words: list[dict]) -> VocabularyRow | None:
        def q():
            n = (VocabularyRow.update(name=name, words=words, updated_at=time.time())
                 .where(VocabularyRow.id == vocabulary_id).execute())
            return VocabularyRow.get_or_none(VocabularyRow.id == vocabulary_id) if n else None
        return await asyncio.to_thread(q)

    async def delete(self, vocabulary_id: str) -> bool:
        return bool(await asyncio.to_thread(
            lambda: VocabularyRow.delete().where(VocabularyRow.id == vocabulary_id).execute()))


def registry_of(app) -> Registry | None:
    jobs = getattr(app.state, "jobs", None)
    if jobs is None:
        return None
    return Registry(jobs, app.state.settings.jobs.max_vocabularies)


async def vocabulary_words(app, vocabulary_id: str | None, param: str = "vocabulary_id") -> list[str]:
    """The words of a stored vocabulary, for a request's `vocabulary_id`; [] when none is given.
    An unknown id (or no store: jobs disabled) is a 400 naming `param`, rendered in each API's shape."""
    if not vocabulary_id:
        return []
    registry = registry_of(app)
    if registry is None:
        raise AsrError(f"{param}: vocabularies need the job store, which is disabled on this server (jobs.enabled)",
                       400, "vocabulary_not_found", param)
    row = await registry.get(vocabulary_id) if len(vocabulary_id) <= 64 else None
    if row is None:
        raise AsrError(f"{param}: no vocabulary {vocabulary_id[:80]!r}", 400, "vocabulary_not_found", param)
    return [w["text"] for w in row.words]

