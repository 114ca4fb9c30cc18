"""Alibaba FileTrans (录音文件识别, product nls-filetrans, API 2018-08-17) wire models.

`SubmitTask` carries the form field `Task` (a JSON string, `FileTransTask`); `GetTaskResult` answers
`TaskResult` with `Result.Sentences`/`Result.Words`, times in ms. Field names are Alibaba's.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..contract import SpeakerCount

PRODUCT, VERSION = "nls-filetrans", "2018-08-17"

# status codes (StatusCode, StatusText)
SUCCESS = (21050000, "SUCCESS")
RUNNING = (21050001, "RUNNING")
QUEUEING = (21050002, "QUEUEING")
SUCCESS_WITH_NO_VALID_FRAGMENT = (21050003, "SUCCESS_WITH_NO_VALID_FRAGMENT")
FILE_DOWNLOAD_FAILED = (41050002, "FILE_DOWNLOAD_FAILED")
FILE_TOO_LARGE = (41050004, "FILE_TOO_LARGE")
FILE_PARSE_FAILED = (41050006, "FILE_PARSE_FAILED")
TASK_EXPIRED = (41050010, "FILE_TRANS_TASK_EXPIRED")
INVALID_FILE_URL = (41050011, "REQUEST_INVALID_FILE_URL_VALUE")
INVALID_CALLBACK = (41050012, "REQUEST_INVALID_CALLBACK_VALUE")
PARAMETER_INVALID = (41050013, "REQUEST_PARAMETER_INVALID")
EMPTY_APPKEY = (41050014, "REQUEST_EMPTY_APPKEY_VALUE")
TOO_MANY_TASKS = (41050008, "USER_TASK_QUEUE_FULL")
CANCELLED = (41050030, "TASK_CANCELLED")
INTERNAL_ERROR = (51050000, "INTERNAL_ERROR")
UNAUTHORIZED = (40000001, "INVALID_ACCESS_KEY")


class FileTransTask(BaseModel):
    """The `Task` JSON of SubmitTask. Unknown fields are ignored; fields without an effect here are accepted."""
    model_config = ConfigDict(extra="ignore")

    appkey: str = ""
    file_link: str = ""
    version: str = "4.0"
    enable_words: bool = False
    enable_sample_rate_adaptive: bool = False
    enable_callback: bool = False
    callback_url: str | None = None
    auto_split: bool = False  # two speakers told apart; the speaker shows as ChannelId (and SpeakerId)
    enable_inverse_text_normalization: bool = False
    enable_disfluency: bool = False
    enable_punctuation_prediction: bool = True
    max_end_silence: int | None = Field(None, ge=0)
    max_single_segment_time: int | None = Field(None, ge=0)
    customization_id: str | None = None
    vocabulary_id: str | None = None
    class_vocabulary_id: str | None = None
    enable_semantic_sentence_detection: bool = False
    enable_timestamp_alignment: bool = False
    first_channel_only: bool = False
    # extension: speaker diarization with an optional speaker count
    enable_speaker_diarization: bool = False
    speaker_num: SpeakerCount = None


class FileTransSentence(BaseModel):
    BeginTime: int
    EndTime: int
    Text: str
    ChannelId: int = 0
    SpeechRate: int = 0  # characters per minute
    SilenceDuration: int = 0  # seconds of silence before the sentence
    SpeakerId: str | None = None


class FileTransWord(BaseModel):
    Word: str
    BeginTime: int
    EndTime: int
    ChannelId: int = 0


class FileTransResult(BaseModel):
    Sentences: list[FileTransSentence] = Field(default_factory=list)
    Words: list[FileTransWord] | None = None


class SubmitReply(BaseModel):
    TaskId: str
    RequestId: str
    StatusCode: int
    StatusText: str


class TaskResult(BaseModel):
    TaskId: str
    RequestId: str
    StatusCode: int
    StatusText: str
    BizDuration: int | None = None  # audio ms
    SolveTime: int | None = None  # when it finished, ms since the epoch
    RecDuration: int | None = None
    Result: FileTransResult | None = None
    RequestTime: int | None = None  # callbacks only
    Message: str | None = None  # extension: why a task failed


class ErrorReply(BaseModel):
    """An RPC-level failure (HTTP 4xx): the SDK raises ServerException(Code, Message)."""
    RequestId: str
    Code: str
    Message: str
    StatusCode: int
    StatusText: str
    TaskId: str | None = None
