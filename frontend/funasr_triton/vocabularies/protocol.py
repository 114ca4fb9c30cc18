"""Wire models of /v1/vocabularies."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class VocabularyWord(BaseModel):
    """One hotword. SeACo-Paraformer has no per-word weight: `weight` and `lang` are stored and returned,
    and every word is applied as a hotword."""
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="the word or phrase (at most limits.max_hotword_chars characters)")
    weight: int = Field(4, ge=-6, le=5, description="Alibaba's range [-6, 5]; stored, not used by SeACo")
    lang: str | None = Field(None, max_length=16, description="e.g. zh, en; stored")

    @field_validator("text")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("text is blank")
        return v


class VocabularyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    words: list[VocabularyWord] = Field(min_length=1)
    name: str | None = Field(None, max_length=128, description="free text, for people")
    prefix: str | None = Field(None, pattern=r"^[a-z0-9]{1,10}$",
                               description="put in the id as Alibaba does: vocab-<prefix>-<32 hex>")


class VocabularyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    words: list[VocabularyWord] = Field(min_length=1)
    name: str | None = Field(None, max_length=128)


class Vocabulary(BaseModel):
    id: str
    object: Literal["vocabulary"] = "vocabulary"
    name: str | None = None
    words: list[VocabularyWord]
    created_at: int
    updated_at: int


class VocabularyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Vocabulary]


class VocabularyDeleted(BaseModel):
    id: str
    object: Literal["vocabulary.deleted"] = "vocabulary.deleted"
    deleted: bool = True
