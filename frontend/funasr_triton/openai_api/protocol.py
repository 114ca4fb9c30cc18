"""OpenAI Audio API wire models (pydantic), fields in OpenAI's order.

Responses follow openai-python's types (`openai.types.audio.*`) and the API reference; optional fields that
are None are left out of the JSON, except in the error envelope where `param` and `code` are always sent.
Extensions: a verbose_json segment carries `speaker` when the transcript knows it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..contract import MAX_SPEAKERS, SpeakerCount

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]

# accepted `language` values -> Whisper's English language name (what verbose_json reports)
LANGUAGE_NAMES: dict[str, str] = {
    "zh": "chinese", "cmn": "chinese", "chinese": "chinese", "mandarin": "chinese",
    "yue": "cantonese", "cantonese": "cantonese",
    "en": "english", "english": "english",
    "ja": "japanese", "japanese": "japanese",
    "ko": "korean", "korean": "korean",
}
AUTO_LANGUAGES = ("auto", "")
# Whisper's language name -> SenseVoice's language code (its `language` query; verbose_json names it back)
SENSEVOICE_CODES = {"chinese": "zh", "cantonese": "yue", "english": "en", "japanese": "ja", "korean": "ko"}
SENSEVOICE_NAMES = {code: name for name, code in SENSEVOICE_CODES.items()}


def normalize_language(value: str) -> str | None:
    """`zh`, `zh-CN`, `zh_Hans`, `Chinese`, `auto`… -> a key of LANGUAGE_NAMES, or None for automatic."""
    v = value.strip().lower()
    if v in AUTO_LANGUAGES:
        return None
    if v in LANGUAGE_NAMES:
        return v
    primary = v.replace("_", "-").split("-")[0]
    if primary in LANGUAGE_NAMES:
        return primary
    raise ValueError(f"unsupported language {value!r}; this model recognises "
                     f"{', '.join(k for k in LANGUAGE_NAMES if len(k) <= 3)} or auto")


# ---------------------------------------------------------------- request (multipart form, parsed by the router)

class ChunkingStrategy(BaseModel):
    """`auto`, or server VAD settings; accepted for compatibility (the served pipeline runs its own FSMN-VAD)."""
    model_config = ConfigDict(extra="ignore")

    type: Literal["auto", "server_vad"]
    prefix_padding_ms: int | None = Field(None, ge=0)
    silence_duration_ms: int | None = Field(None, ge=0)
    threshold: float | None = Field(None, ge=0, le=1)


class TranscriptionRequest(BaseModel):
    """The form fields of POST /v1/audio/transcriptions (without `file`). Unknown fields are ignored."""
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    chunking_strategy: ChunkingStrategy | None = None
    include: list[Literal["logprobs"]] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    known_speaker_names: list[str] = Field(default_factory=list, max_length=4)
    known_speaker_references: list[str] = Field(default_factory=list, max_length=4)
    language: str | None = None
    languages: list[str] = Field(default_factory=list)
    prompt: str | None = None
    response_format: ResponseFormat = "json"
    stream: bool = False
    temperature: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=lambda: ["segment"])
    hotwords: list[str] = Field(default_factory=list, description="extension: hotwords (space/comma separated)")
    vocabulary_id: str | None = Field(None, max_length=64, description="extension: a stored vocabulary's id "
                                      "(/v1/vocabularies); its words come before the inline hotwords")
    # extension: speaker diarization (always on for diarized_json and gpt-4o-transcribe-diarize)
    enable_speaker_diarization: bool = False
    num_speakers: SpeakerCount = None
    min_speakers: SpeakerCount = None
    max_speakers: SpeakerCount = None
    # extension: inverse text normalization (三点一四 -> 3.14); None = settings.itn.default
    itn: bool | None = None

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        return None if v is None else normalize_language(v)

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str]) -> list[str]:
        return [x for x in (normalize_language(s) for s in v) if x is not None]


class TranslationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)


# ---------------------------------------------------------------- responses

class UsageDuration(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class InputTokenDetails(BaseModel):
    audio_tokens: int | None = None
    text_tokens: int | None = None


class UsageTokens(BaseModel):
    """Streaming usage. Paraformer's tokens: input = 60 ms encoder frames (LFR), output = recognised words."""
    type: Literal["tokens"] = "tokens"
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_token_details: InputTokenDetails | None = None


class Logprob(BaseModel):
    """include[]=logprobs: one per recognised word (a Paraformer token for Chinese characters; a word's
    subword pieces are summed), its UTF-8 bytes and the decoder's log-probability of it."""
    token: str | None = None
    logprob: float | None = None
    bytes: list[int] | None = None


class TranscriptionResponse(BaseModel):
    """response_format=json."""
    text: str
    logprobs: list[Logprob] | None = None
    usage: UsageDuration | None = None


class TranscriptionWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionSegment(BaseModel):
    """A Whisper segment; Paraformer has no token ids (empty). avg_logprob: the mean log-probability of the
    sentence's recognised words (the Paraformer decoder's), 0.0 when none were recognised."""
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    speaker: str | None = None  # extension
    # extensions, model sensevoice-small: detected language (English name), emotion and audio events
    language: str | None = None
    emotion: str | None = None
    events: list[str] | None = None


class TranscriptionResponseVerbose(BaseModel):
    """response_format=verbose_json; `language` is an English name ("chinese"), `words` only when asked for."""
    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment]
    words: list[TranscriptionWord] | None = None
    logprobs: list[Logprob] | None = None  # with include[]=logprobs (as in json)
    usage: UsageDuration | None = None


class TranscriptionDiarizedSegment(BaseModel):
    type: Literal["transcript.text.segment"] = "transcript.text.segment"
    id: str
    start: float
    end: float
    speaker: str
    text: str


class TranscriptionDiarized(BaseModel):
    """response_format=diarized_json: speakers are `known_speaker_names` in order, otherwise A, B, …"""
    task: Literal["transcribe"] = "transcribe"
    duration: float
    text: str
    segments: list[TranscriptionDiarizedSegment]
    usage: UsageDuration | None = None


# ---------------------------------------------------------------- stream events (stream=true, SSE `data:` lines)

class TranscriptTextDelta(BaseModel):
    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str
    logprobs: list[Logprob] | None = None
    segment_id: str | None = None


class TranscriptTextSegment(TranscriptionDiarizedSegment):
    """Streamed after each segment's deltas when response_format=diarized_json."""


class TranscriptTextDone(BaseModel):
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
    logprobs: list[Logprob] | None = None
    usage: UsageTokens | None = None


# ---------------------------------------------------------------- errors and models

class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """`{"error": {...}}`, also the last SSE event when a stream fails."""
    error: ErrorInfo


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


# ---------------------------------------------------------------- OpenAPI documentation of the forms
# (FastAPI cannot derive it: the routes read the multipart form themselves, see serving.py)

_LIST = {"type": "array", "items": {"type": "string"}}
_SPEAKERS = {"type": "integer", "minimum": 1, "maximum": MAX_SPEAKERS}
_FORMATS = ["json", "text", "srt", "verbose_json", "vtt"]
_COMMON = {"file": {"type": "string", "format": "binary", "description": "the audio (any format ffmpeg decodes)"},
           "model": {"type": "string", "description": "the served model's name or one of its aliases (404 otherwise)"},
           "prompt": {"type": "string", "description": "used as hotwords (space/comma separated, or JSON {word: weight})"},
           "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0}}
TRANSCRIPTION_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {**_COMMON, "language": {"type": "string", "description": "zh, cmn, yue, en, ja, ko (region suffixes such as zh-CN accepted) or auto; others: 400"},
                   "response_format": {"type": "string", "enum": [*_FORMATS, "diarized_json"], "default": "json"},
                   "stream": {"type": "boolean", "default": False},
                   "timestamp_granularities[]": {"type": "array", "items": {"type": "string",
                                                                            "enum": ["word", "segment"]}},
                   "include[]": {"type": "array", "items": {"type": "string", "enum": ["logprobs"]}},
                   "chunking_strategy": {"type": "string", "description": "auto, or JSON {\"type\": \"server_vad\", …}"},
                   "known_speaker_names[]": {**_LIST, "maxItems": 4},
                   "known_speaker_references[]": {**_LIST, "maxItems": 4}, "keywords[]": _LIST, "languages[]": _LIST,
                   "hotwords": {"type": "string", "description": "extension: hotwords (space/comma separated)"},
                   "vocabulary_id": {"type": "string", "description": "extension: a stored vocabulary's id "
                                     "(/v1/vocabularies); its words are added before the inline hotwords"},
                   "audio_address": {"type": "string", "description": "extension (funasr-api): an audio URL "
                                     "fetched instead of `file` (needs AUDIO__URL_FETCH_ENABLED)"},
                   "enable_speaker_diarization": {"type": "boolean", "default": False, "description": "extension"},
                   "num_speakers": _SPEAKERS, "min_speakers": _SPEAKERS, "max_speakers": _SPEAKERS},
}}}}}
TRANSLATION_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {**_COMMON, "response_format": {"type": "string", "enum": _FORMATS, "default": "json"}}}}}}}

_TEXT = {"schema": {"type": "string"}}
TRANSCRIPTION_200 = {200: {"description": "json/verbose_json/diarized_json as JSON; text, srt and vtt as text; "
                                          "stream=true as server-sent events",
                           "content": {"application/json": {"schema": {"type": "object"}}, "text/plain": _TEXT,
                                       "application/x-subrip": _TEXT, "text/vtt": _TEXT,
                                       "text/event-stream": _TEXT}}}

# POST /v1/jobs: the transcription form with several files or URLs
JOB_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object",
    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"},
                            "description": "the audio: one or more file parts (or `url`)"},
                   "url": {"type": "array", "items": {"type": "string"},
                           "description": "audio URL(s) fetched by the job (`audio_address` is accepted too)"},
                   "response_format": {"type": "string", "enum": ["json", "text", "srt", "verbose_json", "vtt",
                                                                  "diarized_json"]},
                   "model": {"type": "string"}, "language": {"type": "string"}, "prompt": {"type": "string"},
                   "hotwords": {"type": "string"}, "vocabulary_id": {"type": "string"},
                   "enable_speaker_diarization": {"type": "boolean"},
                   "timestamp_granularities[]": {"type": "array", "items": {"type": "string"}}}}}}}}

