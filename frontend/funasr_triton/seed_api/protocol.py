"""Wire models of the seed-compatible routes (pydantic only): `/api` (one recording, one line per sentence) and
seed 003's `/transcribe` (several recordings, one result per file)."""
from __future__ import annotations

from pydantic import BaseModel, Field


class SeedLine(BaseModel):
    line: int
    speaker: str
    start_time: float
    end_time: float
    text: str


class SeedResponse(BaseModel):
    code: int = 0
    msg: str = "ok"
    data: list[SeedLine]


class SeedErrorResponse(BaseModel):
    code: int
    msg: str
    data: list[SeedLine] = []


# ---------------------------------------------------------------- POST /transcribe

class FileSegment(BaseModel):
    start: float
    end: float
    text: str
    speaker: str | None = None


class FileResult(BaseModel):
    key: str
    status: str  # success | failed
    text: str = ""
    language: str | None = None
    duration: float | None = None  # seconds of audio
    segments: list[FileSegment] = Field(default_factory=list)
    error: str | None = None
    code: str | None = None


class TranscribeResponse(BaseModel):
    message: str
    processing_time: float  # seconds
    results: list[FileResult]
