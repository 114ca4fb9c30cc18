"""FunASR runtime WebSocket wire models (modelscope/FunASR `runtime/docs/websocket_protocol.md`).

The client's text messages are JSON settings (the first one starts an utterance; `{"is_speaking": false}`
ends it); binary messages are audio. The server answers with result messages; times are integer ms
from the start of the utterance's audio.
"""
from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Mode = Literal["offline", "online", "2pass"]
ResultMode = Literal["offline", "online", "2pass-online", "2pass-offline"]


class FunasrConfig(BaseModel):
    """A settings message. The first one of an utterance carries most keys; later ones may carry only
    `is_speaking` (or `is_end`). Unknown keys are ignored."""
    model_config = ConfigDict(extra="ignore")

    mode: Mode = Field("2pass", description="offline: one result for the whole audio; online: streaming deltas; "
                                            "2pass: streaming deltas + a corrected sentence at each sentence end")
    wav_name: str = Field("demo", max_length=256, description="echoed in every result")
    wav_format: str = Field("pcm", max_length=32, description="pcm: raw s16le mono at audio_fs; offline mode also "
                                                              "takes any container ffmpeg decodes (wav, mp3, ...)")
    audio_fs: int = Field(16000, description="sample rate of pcm audio: 16000 or 8000 (offline: 8000-48000)")
    is_speaking: bool = Field(True, description="false ends the utterance")
    is_end: bool = Field(False, description="true also ends the utterance (a client revision sends it)")
    chunk_size: list[int] | None = Field(None, min_length=3, max_length=3,
                                         description="[look-back, chunk, look-ahead] in 60 ms frames; "
                                                     "a list or \"5,10,5\"; omitted: the server default")
    chunk_interval: int | None = Field(None, description="the client's pacing; accepted and ignored")
    encoder_chunk_look_back: int | None = Field(None, ge=0, le=64, description="chunks of earlier context the "
                                                "streaming encoder attends to (FunASR's client sends 4); omitted: "
                                                "the server default")
    decoder_chunk_look_back: int | None = Field(None, ge=0, le=64, description="chunks of earlier encoder output "
                                                "the streaming decoder attends to (FunASR's client sends 0); "
                                                "omitted: the server default")
    max_end_silence: int | None = Field(None, ge=100, le=6000, description="ms of silence that ends a sentence; "
                                        "omitted: the server default (unset: FunASR's dynamic end silence)")
    hotwords: str | None = Field(None, description="JSON string {\"word\": weight} (weights ignored) or "
                                                   "space/comma separated words")
    hotword: str | None = Field(None, description="the Python sample server's name for hotwords")
    itn: bool = Field(True, description="inverse text normalization (三点一四 -> 3.14) of offline results and "
                      "2pass finals; online partials stay as recognised")
    model: str | None = Field(None, max_length=64, description="offline mode: the recognizer, e.g. sensevoice-small "
                              "(README \"Choosing a model\"); omitted: the default model")
    svs_lang: str | None = Field(None, max_length=16, description="model sensevoice-small: language (auto, zh, en, yue, "
                                 "ja, ko), as FunASR's SenseVoice client sends it")
    svs_itn: bool | None = Field(None, description="model sensevoice-small: its own punctuation + ITN (default on)")

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _chunk_size(cls, value):
        if isinstance(value, str):
            try:
                return [int(x) for x in value.replace(" ", "").split(",")]
            except ValueError:
                raise ValueError("chunk_size must be three integers, e.g. [5,10,5] or \"5,10,5\"") from None
        return value

    @field_validator("hotwords", "hotword", mode="before")
    @classmethod
    def _hotwords(cls, value):
        if isinstance(value, (dict, list)):  # sent as JSON instead of a JSON string
            return json.dumps(value, ensure_ascii=False)
        return value


class FunasrStampSent(BaseModel):
    """One punctuation-delimited piece of a sentence with its token times."""
    text_seg: str = Field(description="tokens separated by spaces")
    punc: str = Field(description="the punctuation mark after the piece, or \"\"")
    start: int
    end: int
    ts_list: list[list[int]] = Field(description="[[begin, end], ...] per token, ms")


class FunasrResult(BaseModel):
    mode: ResultMode
    wav_name: str
    text: str = Field(description="online / 2pass-online: new text to append; 2pass-offline: the corrected, "
                                  "punctuated sentence; offline: the whole transcript")
    is_final: bool = Field(description="true on the last message of an utterance")
    timestamp: str | None = Field(None, description="\"[[b,e],...]\" per token, ms (offline, 2pass-offline)")
    stamp_sents: list[FunasrStampSent] | None = None
    is_end: bool | None = Field(None, description="extension: true on the last message of an utterance")


class FunasrErrorInfo(BaseModel):
    code: str = Field(description="unauthorized, invalid_message, invalid_parameter, idle_timeout, "
                                  "too_many_streams, busy, audio_too_long, ... (the server's AsrError code)")
    message: str


class FunasrErrorMessage(BaseModel):
    """A failure: the last message before the server closes (1008 the client's fault, 1011 the server's,
    1013 too many streams / busy: retry later). It also ends the utterance for clients waiting on is_final."""
    mode: str
    wav_name: str
    text: str = ""
    is_final: bool = True
    is_end: bool = True
    error: FunasrErrorInfo
