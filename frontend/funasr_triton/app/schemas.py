"""The internal result every API surface renders (integer milliseconds everywhere)."""
from __future__ import annotations

from pydantic import BaseModel, Field


class Word(BaseModel):
    text: str
    start_ms: int
    end_ms: int


class Sentence(BaseModel):
    start_ms: int
    end_ms: int
    text: str
    words: list[Word] = Field(default_factory=list)
    speaker: str | None = None  # label from settings.diarization.label_template
    speaker_index: int | None = None  # 0-based, numbered by first appearance


class Transcript(BaseModel):
    text: str
    duration_ms: int
    sentences: list[Sentence]
    hotwords: list[str] = Field(default_factory=list)
    processing_ms: int = 0
    num_speakers: int | None = None  # set when diarization ran


class TranscribeOptions(BaseModel):
    """What a surface asks of the service; surfaces map their own parameters onto it."""
    hotwords: list[str] = Field(default_factory=list)
    punctuation: bool = True
    timestamps: bool = True
    # raw PCM input (Aliyun format=pcm): sample rate of s16le mono bytes; None = any container via ffmpeg
    pcm_sample_rate: int | None = None
    diarize: bool = False
    num_speakers: int | None = Field(None, ge=1)
    min_speakers: int | None = Field(None, ge=1)
    max_speakers: int | None = Field(None, ge=1)
