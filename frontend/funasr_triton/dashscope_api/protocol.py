"""DashScope async transcription (Paraformer recorded-file API) wire models, field names as DashScope's."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TaskStatus = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"]


class TranscriptionInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    file_urls: list[str] = Field(min_length=1)


class TranscriptionParameters(BaseModel):
    """Accepted parameters; those without an effect here (channel_id: audio is downmixed; disfluency and
    timestamp alignment: no such model) are accepted and ignored. vocabulary_id names a stored vocabulary (/v1/vocabularies): its words are the job's hotwords."""
    model_config = ConfigDict(extra="ignore")
    vocabulary_id: str | None = None
    phrase_id: str | None = None
    channel_id: list[int] | None = None
    diarization_enabled: bool = False
    speaker_count: int | None = Field(None, ge=2, le=100)
    language_hints: list[str] | None = None
    timestamp_alignment_enabled: bool = False
    disfluency_removal_enabled: bool = False
    special_word_filter: str | None = None


class TranscriptionSubmit(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    input: TranscriptionInput
    parameters: TranscriptionParameters = Field(default_factory=TranscriptionParameters)


class SubmitOutput(BaseModel):
    task_id: str
    task_status: TaskStatus


class SubmitReply(BaseModel):
    request_id: str
    output: SubmitOutput


class SubtaskResult(BaseModel):
    file_url: str
    transcription_url: str | None = None
    subtask_status: TaskStatus
    code: str | None = None
    message: str | None = None


class TaskOutput(BaseModel):
    task_id: str
    task_status: TaskStatus
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    results: list[SubtaskResult] | None = None
    task_metrics: dict[str, int] | None = None
    code: str | None = None
    message: str | None = None


class TaskReply(BaseModel):
    request_id: str
    output: TaskOutput
    usage: dict | None = None


class ErrorReply(BaseModel):
    request_id: str
    code: str
    message: str


class Word(BaseModel):
    begin_time: int
    end_time: int
    text: str
    punctuation: str = ""


class Sentence(BaseModel):
    begin_time: int
    end_time: int
    text: str
    sentence_id: int
    speaker_id: int | None = None
    words: list[Word] = Field(default_factory=list)


class ChannelTranscript(BaseModel):
    channel_id: int = 0
    content_duration_in_milliseconds: int
    text: str
    sentences: list[Sentence]


class Properties(BaseModel):
    channels: list[int] = Field(default_factory=lambda: [0])
    original_duration_in_milliseconds: int


class TranscriptionDocument(BaseModel):
    """What a `transcription_url` serves."""
    file_url: str
    properties: Properties
    transcripts: list[ChannelTranscript]
