"""`/v1/vocabularies`: create, read, list, replace and delete hotword vocabularies (OpenAI error shape: part of
the OpenAI-style `/v1` surface; the registry itself, `funasr_triton.vocabularies`, serves every surface).

Requests name a vocabulary by `vocabulary_id` (registry.vocabulary_words resolves it for every surface).
Each vocabulary alone must pass the hotword limits (limits.max_hotwords, limits.max_hotword_chars).
"""
from __future__ import annotations

from fastapi import APIRouter, Query, Request

from ..app.hotwords import check_hotwords
from ..errors import AsrError
from ..vocabularies.protocol import Vocabulary, VocabularyCreate, VocabularyDeleted, VocabularyList, VocabularyUpdate
from ..vocabularies.registry import Registry, VocabularyRow, registry_of
from .protocol import ErrorResponse
from .router import authorized

# the API key is checked before the body is read or validated
router = APIRouter(prefix="/v1", tags=["vocabularies"], dependencies=[authorized],
                   responses={s: {"model": ErrorResponse} for s in (400, 401, 404, 429)})


def _registry(request: Request) -> Registry:
    registry = registry_of(request.app)
    if registry is None:
        raise AsrError("vocabularies live in the job store, which is disabled on this server (jobs.enabled)", 404,
                       "vocabularies_disabled")
    return registry


def _words(request: Request, body: VocabularyCreate | VocabularyUpdate) -> list[dict]:
    check_hotwords([w.text for w in body.words], request.app.state.settings.limits, "in the vocabulary", "words")
    seen, words = set(), []
    for w in body.words:  # repeats dropped, as the limit check counts them
        if w.text not in seen:
            seen.add(w.text)
            words.append(w.model_dump())
    return words


def _view(row: VocabularyRow) -> Vocabulary:
    return Vocabulary(id=row.id, name=row.name, words=row.words, created_at=int(row.created_at),
                      updated_at=int(row.updated_at))


def _not_found(vocabulary_id: str) -> AsrError:
    return AsrError(f"no vocabulary {vocabulary_id[:80]!r}", 404, "vocabulary_not_found", "vocabulary_id")


@router.post("/vocabularies", status_code=201, summary="Store a hotword vocabulary", response_model=Vocabulary)
async def create_vocabulary(request: Request, body: VocabularyCreate) -> Vocabulary:
    registry = _registry(request)
    return _view(await registry.create(body.name, body.prefix, _words(request, body)))


@router.get("/vocabularies", summary="List vocabularies, newest first", response_model=VocabularyList)
async def list_vocabularies(request: Request, prefix: str | None = Query(None, pattern=r"^[a-z0-9]{1,10}$"),
                            limit: int = Query(20, ge=1, le=100)) -> VocabularyList:
    registry = _registry(request)
    return VocabularyList(data=[_view(r) for r in await registry.list(prefix, limit)])


@router.get("/vocabularies/{vocabulary_id}", summary="One vocabulary", response_model=Vocabulary)
async def get_vocabulary(request: Request, vocabulary_id: str) -> Vocabulary:
    row = await _registry(request).get(vocabulary_id)
    if row is None:
        raise _not_found(vocabulary_id)
    return _view(row)


@router.put("/vocabularies/{vocabulary_id}", summary="Replace a vocabulary's words (and name)",
            response_model=Vocabulary)
async def update_vocabulary(request: Request, vocabulary_id: str, body: VocabularyUpdate) -> Vocabulary:
    registry = _registry(request)
    row = await registry.update(vocabulary_id, body.name, _words(request, body))
    if row is None:
        raise _not_found(vocabulary_id)
    return _view(row)


@router.delete("/vocabularies/{vocabulary_id}", summary="Delete a vocabulary", response_model=VocabularyDeleted)
async def delete_vocabulary(request: Request, vocabulary_id: str) -> VocabularyDeleted:
    if not await _registry(request).delete(vocabulary_id):
        raise _not_found(vocabulary_id)
    return VocabularyDeleted(id=vocabulary_id)
