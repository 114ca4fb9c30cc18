"""The typed contract between the frontend and Triton: one options model in, one result model out.

`TranscribeOptions` is what every API surface asks for (it becomes the `transcribe`/`pipeline`
inputs in triton_client); `TritonResult` is the RESULT JSON both models answer with (see
funasr_triton_models.sentences); `Transcript` is what every surface renders.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

MAX_SPEAKERS = 32  # the most speakers a caller may name (num/min/max); DashScope's own wire allows its 100
# a caller's speaker count on the surfaces that bound it by MAX_SPEAKERS
SpeakerCount = Annotated[int | None, Field(ge=1, le=MAX_SPEAKERS)]


class TranscribeOptions(BaseModel):
    """What a caller asks of a recognition; surfaces map their own parameters onto it."""
    hotwords: list[str] = Field(default_factory=list)
    punctuation: bool = True
    timestamps: bool = True
    # raw PCM input (Aliyun format=pcm): sample rate of s16le mono bytes; None = any container via ffmpeg
    pcm_sample_rate: int | None = None
    diarize: bool = False
    num_speakers: int | None = Field(None, ge=1)
    min_speakers: int | None = Field(None, ge=1)
    max_speakers: int | None = Field(None, ge=1)
    # inverse text normalization per sentence after punctuation (the `itn` model: 三点一四 -> 3.14)
    itn: bool = False
    # the recognizer: paraformer (SeACo-Paraformer, default) or sensevoice (SenseVoice-Small)
    model: str = "paraformer"
    language: str | None = None  # sensevoice: auto (None), zh, en, yue, ja, ko
    # per-word log-probabilities of the Paraformer decoder ([{token, logprob}] per sentence and segment event)
    logprobs: bool = False

    def job_config(self) -> dict:
        """The `transcribe` model's CONFIG (the model applies its own speaker-count defaults)."""
        config = {"hotwords": [w for w in self.hotwords if w.strip()], "punctuation": self.punctuation,
                  "timestamps": self.timestamps, "diarize": self.diarize}
        if self.itn:  # sent only when asked: off is the model's default
            config["itn"] = True
        if self.model != "paraformer":  # sent only for the second model: the job's default is paraformer
            config.update(model=self.model, language=self.language or "auto")
        if self.logprobs:
            config["logprobs"] = True
        if self.diarize:
            config.update({k: v for k, v in (("num_speakers", self.num_speakers), ("min_speakers", self.min_speakers),
                                             ("max_speakers", self.max_speakers)) if v is not None})
        return config


class TokenLogprob(BaseModel):
    """One recognised word (a Paraformer token for Chinese) and the decoder's log-probability of it."""
    token: str
    logprob: float


class ResultSentence(BaseModel):
    model_config = ConfigDict(extra="ignore")
    start_ms: int
    end_ms: int
    text: str
    words: list[str] = Field(default_factory=list)
    timestamps: list[tuple[int, int]] = Field(default_factory=list)
    speaker: int | None = None
    # model sensevoice: what it detected in the sentence's VAD segment
    language: str | None = None
    emotion: str | None = None
    events: list[str] | None = None
    logprobs: list[TokenLogprob] | None = None  # with TranscribeOptions.logprobs


class TritonResult(BaseModel):
    """The RESULT JSON of `pipeline` and the `result` event of `transcribe`."""
    model_config = ConfigDict(extra="ignore")
    text: str = ""
    duration_ms: int = 0
    sentences: list[ResultSentence] = Field(default_factory=list)
    vad_segments: list[tuple[int, int]] = Field(default_factory=list)
    num_speakers: int | None = None
    raw_text: str = ""
    hotwords: list[str] = Field(default_factory=list)
    model: str = "paraformer"
    language: str | None = None  # sensevoice: the language detected over the most speech
    num_words: int | None = None  # words recognised (also without timestamps, whose sentences carry no words)


@dataclass(slots=True, frozen=True)
class Word:
    """One word and its times. A slotted dataclass, not a BaseModel: a transcript may hold hundreds of thousands
    (4 h: ~190k words, 31 MB instead of 116 MB), and it serialises the same ({text, start_ms, end_ms})."""
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
    language: str | None = None  # sensevoice: detected in the sentence's VAD segment (zh, en, yue, ja, ko, nospeech)
    emotion: str | None = None  # sensevoice: HAPPY, SAD, ANGRY, NEUTRAL, ... (its tag without <| |>)
    events: list[str] | None = None  # sensevoice: audio events (Speech, BGM, Laughter, Applause, ...)
    logprobs: list[TokenLogprob] | None = None  # with TranscribeOptions.logprobs

    @property
    def avg_logprob(self) -> float | None:
        """Mean log-probability of the sentence's recognised words (None without logprobs or words)."""
        if not self.logprobs:
            return None
        return sum(t.logprob for t in self.logprobs) / len(self.logprobs)


class Transcript(BaseModel):
    text: str
    duration_ms: int
    sentences: list[Sentence]
    hotwords: list[str] = Field(default_factory=list)
    processing_ms: int = 0
    num_speakers: int | None = None  # set when diarization ran
    model: str = "paraformer"  # the recognizer that ran (paraformer, sensevoice)
    language: str | None = None  # sensevoice: the language detected over the most speech
    num_words: int | None = None  # words recognised; None (results stored by older versions): count `words`

    @property
    def word_count(self) -> int:
        """Words recognised (the same with or without word timestamps)."""
        return self.num_words if self.num_words is not None else sum(len(s.words) for s in self.sentences)

    @classmethod
    def from_result(cls, result: TritonResult, hotwords: list[str], processing_ms: int,
                    label_template: str = "SPEAKER_{index:02d}") -> "Transcript":
        sentences = [
            Sentence(start_ms=s.start_ms, end_ms=s.end_ms, text=s.text,
                     words=[Word(text=w, start_ms=t[0], end_ms=t[1]) for w, t in zip(s.words, s.timestamps)],
                     speaker_index=s.speaker, language=s.language, emotion=s.emotion, events=s.events,
                     logprobs=s.logprobs,
                     speaker=None if s.speaker is None else label_template.format(index=s.speaker,
                                                                                 number=s.speaker + 1))
            for s in result.sentences]
        return cls(text=result.text, duration_ms=result.duration_ms, sentences=sentences, hotwords=hotwords,
                   processing_ms=processing_ms, num_speakers=result.num_speakers, model=result.model,
                   language=result.language, num_words=result.num_words)
