"""Alibaba Cloud NLS REST wire models (`POST /stream/v1/asr`): query parameters, success and error bodies.

Alibaba's fields come first and keep their meaning; our extensions are only added after them, with
integer milliseconds (NLS times are ms; funasr-api's float seconds are deliberately not copied).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..contract import SpeakerCount
from ..nls import NlsStatus


class NlsAsrQuery(BaseModel):
    """Query parameters of `POST /stream/v1/asr`; unknown parameters are ignored, as Alibaba and funasr-api do."""
    model_config = ConfigDict(extra="ignore")

    appkey: str | None = Field(None, description="required by Alibaba; accepted and ignored here")
    token: str | None = Field(None, description="the NLS token when not sent as the X-NLS-Token header")
    format: str | None = Field(None, description="pcm (raw s16le mono), wav, opus, speex, amr, mp3, aac, ogg, ...; "
                                                 "omitted: pcm unless the bytes carry a known container header")
    sample_rate: int = Field(16000, description="16000 or 8000; the rate of raw pcm")
    enable_punctuation_prediction: bool = False
    enable_inverse_text_normalization: bool = Field(False, description="spelled-out numbers as digits (三点一四 -> "
                                                    "3.14), per sentence after punctuation (the `itn` model)")
    enable_voice_detection: bool = Field(False, description="accepted; VAD always segments the audio")
    disfluency: bool = Field(False, description="accepted; no disfluency filter is served")
    vocabulary_id: str | None = Field(None, description="a stored vocabulary's id (vocab-…, /v1/vocabularies), "
                                         "or inline hotwords as funasr-api: \"词 20 词 15\"")
    customization_id: str | None = Field(None, description="accepted and ignored")
    audio_address: str | None = Field(None, description="audio by http(s) URL instead of the body (when enabled)")
    enable_words: bool = Field(False, description="extension: word timings in `sentences[].words`")
    word_timestamps: bool = Field(False, description="extension (funasr-api name): same as enable_words")
    enable_speaker_diarization: bool = Field(False, description="extension: speaker_id on every sentence")
    speaker_count: SpeakerCount = Field(None, description="extension: exact number of speakers")
    min_speakers: SpeakerCount = None
    max_speakers: SpeakerCount = None
    model: str | None = Field(None, max_length=64, description="extension: the recognizer, e.g. sensevoice-small "
                              "(README \"Choosing a model\"; enable_punctuation_prediction is then its use_itn); "
                              "omitted: the default model")
    language: str | None = Field(None, max_length=16, description="extension, model sensevoice-small: auto, zh, en, "
                                 "yue, ja, ko")


class NlsWord(BaseModel):
    text: str
    begin_time: int = Field(description="ms from the start of the audio")
    end_time: int


class NlsSentence(BaseModel):
    text: str
    begin_time: int = Field(description="ms from the start of the audio")
    end_time: int
    words: list[NlsWord] | None = Field(None, description="only with enable_words / word_timestamps")
    speaker_id: str | None = Field(None, description="only when the speaker is known")
    confidence: float | None = Field(None, description="0-1: geometric mean of the decoder's probabilities of "
                                                       "the sentence's recognised words")


class NlsAsrResponse(BaseModel):
    """Success body; the first four fields are Alibaba's, the rest are added extensions."""
    task_id: str
    result: str
    status: int = NlsStatus.SUCCESS
    message: str = "SUCCESS"
    confidence: float | None = Field(None, description="0-1: geometric mean of the Paraformer decoder's "
                                                       "probabilities of the recognised words (as SentenceEnd's)")
    duration_ms: int | None = Field(None, description="extension: audio duration")
    processing_ms: int | None = Field(None, description="extension: time spent on the request")
    sentences: list[NlsSentence] | None = Field(None, description="extension: one entry per recognised sentence")


class NlsErrorResponse(BaseModel):
    """Failure body: Alibaba's envelope with an empty `result`."""
    task_id: str
    result: str = ""
    status: int
    message: str
