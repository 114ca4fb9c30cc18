"""Alibaba Cloud NLS real-time WebSocket wire models (SpeechTranscriber, SpeechRecognizer).

Text frames are JSON `{"header": ..., "payload": ...}`; binary frames are audio. Field names, the order
of the header keys and the meaning of every value follow Alibaba's gateway (docs "WebSocket协议说明",
aliyun/alibabacloud-nls-python-sdk, -go-sdk); times are integer milliseconds from the start of the audio.
Status codes are `funasr_triton.nls.NlsStatus` (one code list for both NLS surfaces).
"""
from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field

from ..nls import new_id

SUCCESS_TEXT = "Gateway:SUCCESS:Success."
FAILURE_NAMESPACE = "Default"  # real TaskFailed messages use it (and the Go SDK accepts it)


class NlsCommands(BaseModel):
    """The message names of one namespace."""
    model_config = ConfigDict(frozen=True)

    start: str
    stop: str
    control: str | None
    started: str
    result_changed: str
    completed: str


NAMESPACES: dict[str, NlsCommands] = {
    "SpeechTranscriber": NlsCommands(start="StartTranscription", stop="StopTranscription",
                                     control="ControlTranscriber", started="TranscriptionStarted",
                                     result_changed="TranscriptionResultChanged",
                                     completed="TranscriptionCompleted"),
    "SpeechRecognizer": NlsCommands(start="StartRecognition", stop="StopRecognition", control=None,
                                    started="RecognitionStarted", result_changed="RecognitionResultChanged",
                                    completed="RecognitionCompleted"),
}


# ---- client -> server ----------------------------------------------------------------------------------------

class NlsClientHeader(BaseModel):
    model_config = ConfigDict(extra="ignore")

    namespace: str = Field(max_length=64)
    name: str = Field(max_length=64)
    task_id: str | None = Field(None, max_length=128, description="32 hex chars per Alibaba; echoed back as sent")
    message_id: str | None = Field(None, max_length=128)
    appkey: str | None = Field(None, description="required by Alibaba; accepted and ignored here")


class NlsClientMessage(BaseModel):
    """Any client command (StartTranscription, StopTranscription, ControlTranscriber, StartRecognition, ...)."""
    model_config = ConfigDict(extra="ignore")

    header: NlsClientHeader
    payload: dict[str, Any] | None = None
    context: dict[str, Any] | None = Field(None, description="SDK identification; ignored")


class NlsStartPayload(BaseModel):
    """StartTranscription / StartRecognition payload. Defaults are Alibaba's (flags off); unknown keys, which
    the SDKs merge in from `ex=`, are ignored."""
    model_config = ConfigDict(extra="ignore")

    format: str = Field("pcm", description="pcm (raw s16le mono) or wav (its RIFF header is skipped); "
                                           "opus, speex, mp3, aac and amr are refused with 40000003")
    sample_rate: int = Field(16000, description="16000 or 8000, else 41010101")
    enable_intermediate_result: bool = Field(False, description="send *ResultChanged while a sentence is spoken")
    enable_punctuation_prediction: bool = False
    enable_inverse_text_normalization: bool = Field(False, description="ITN of SentenceEnd results (三点一四 -> "
                                                    "3.14); intermediate results stay as recognised")
    enable_words: bool = Field(False, description="word timings in SentenceEnd `words`")
    enable_voice_detection: bool = Field(False, description="SpeechRecognizer: complete at the first sentence end")
    max_sentence_silence: int | None = Field(None, ge=200, le=2000, description="ms of silence that ends a "
                                             "sentence; omitted: the server's streaming.max_sentence_silence_ms")
    disfluency: bool = Field(False, description="accepted; no disfluency filter is served")
    vocabulary_id: str | None = Field(None, description="as the REST surface: a stored vocabulary's id "
                                         "(vocab-…) or inline hotwords \"词 20 词 15\"")
    customization_id: str | None = Field(None, description="accepted and ignored")


# ---- server -> client ----------------------------------------------------------------------------------------

class NlsServerHeader(BaseModel):
    """Keys in the gateway's order. `status` is 20000000 except in TaskFailed, where it is the failure code."""
    namespace: str
    name: str
    status: int = 20000000
    message_id: str = Field(default_factory=new_id)
    task_id: str
    status_text: str = SUCCESS_TEXT


class NlsWsWord(BaseModel):
    text: str
    startTime: int = Field(description="ms from the start of the audio")
    endTime: int


class SentenceBeginPayload(BaseModel):
    index: int = Field(description="1-based sentence number")
    time: int = Field(description="sentence start, ms")


class TranscriptionResultChangedPayload(BaseModel):
    index: int
    time: int = Field(description="audio processed so far, ms")
    result: str = Field(description="the whole sentence so far (not a delta)")
    confidence: float
    words: list[NlsWsWord] = Field(default_factory=list)
    status: int = 0


class SentenceEndPayload(BaseModel):
    index: int
    time: int = Field(description="sentence end, ms")
    begin_time: int = Field(description="sentence start, ms")
    result: str = Field(description="the final sentence (punctuated when enable_punctuation_prediction)")
    confidence: float = Field(ge=0, le=1)
    words: list[NlsWsWord] = Field(default_factory=list, description="filled only with enable_words")
    status: int = 0


class RecognitionResultPayload(BaseModel):
    """RecognitionResultChanged (utterance so far) and RecognitionCompleted (the whole utterance)."""
    result: str
    duration: int | None = Field(None, description="RecognitionCompleted: audio received, ms")


NlsPayload = Union[SentenceBeginPayload, TranscriptionResultChangedPayload, SentenceEndPayload,
                   RecognitionResultPayload]


class NlsServerMessage(BaseModel):
    """Every server event; `payload` is left out when there is none (TranscriptionStarted, TaskFailed, ...)."""
    header: NlsServerHeader
    payload: NlsPayload | None = None
