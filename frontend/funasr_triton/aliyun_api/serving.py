"""Alibaba NLS REST serving: query -> TranscribeOptions -> service -> NlsAsrResponse, and the one mapping of an
AsrError to (HTTP status, NLS status). No HTTP in here: router.py reads the body and answers.
"""
from __future__ import annotations

import math

from ..app.hotwords import parse_hotwords
from ..app.inputs import check_speakers
from ..contract import TranscribeOptions, Transcript
from ..errors import AsrError
from ..nls import NlsStatus
from ..vocabularies.registry import looks_like_id, vocabulary_words
from .protocol import NlsAsrQuery, NlsAsrResponse, NlsSentence, NlsWord

SAMPLE_RATES = (16000, 8000)
# Formats ffmpeg decodes by content (the name only has to be a known one). Alibaba's own `opus`/`speex`
# packetisations without a container cannot be probed and fail as undecodable audio (40000002).
CONTAINER_FORMATS = frozenset({"wav", "opus", "ogg", "ogg-opus", "speex", "amr", "amr-nb", "amr-wb", "mp3", "aac",
                               "m4a", "mp4", "flac", "webm", "wma"})
# Headers that identify a container beyond doubt (no MPEG/ADTS frame sync: raw PCM may start like one).
_CONTAINER_MAGIC = (b"RIFF", b"RF64", b"ID3", b"OggS", b"fLaC", b"#!AMR", b"\x1aE\xdf\xa3", b"FORM", b"caff")
# AsrError codes that describe the audio itself: NLS "invalid message" rather than "invalid parameter".
_AUDIO_CODES = frozenset({"empty_audio", "bad_audio", "audio_too_long", "decode_timeout", "invalid_audio"})


def nls_status(err: AsrError) -> tuple[int, int]:
    """The one mapping of this surface: AsrError -> (HTTP status, NLS status)."""
    if err.status == 401:
        return 401, NlsStatus.AUTHENTICATION_FAILED
    if err.status == 429:
        return 429, NlsStatus.TOO_MANY_REQUESTS
    if err.status == 413:
        return 413, NlsStatus.DEFAULT_CLIENT_ERROR
    if err.status in (404, 405, 499):  # routing, or the client hung up: keep the HTTP meaning
        return err.status, NlsStatus.DEFAULT_CLIENT_ERROR
    if err.status < 500:
        if err.code == "unsupported_sample_rate":
            return 400, NlsStatus.UNSUPPORTED_SAMPLE_RATE
        if err.code in _AUDIO_CODES:
            return 400, NlsStatus.INVALID_MESSAGE
        return 400, NlsStatus.INVALID_PARAMETER if err.param else NlsStatus.DEFAULT_CLIENT_ERROR
    if err.status in (503, 504):  # backend unavailable / past the deadline: keep the HTTP meaning for retries
        return err.status, NlsStatus.DEFAULT_SERVER_ERROR
    if err.status == 502:  # Triton answered with a failure over gRPC
        return 500, NlsStatus.INTERNAL_GRPC_ERROR
    return 500, NlsStatus.DEFAULT_SERVER_ERROR


def check_format(name: str | None) -> str | None:
    if name is None or name == "":
        return None
    fmt = name.lower()
    if fmt != "pcm" and fmt not in CONTAINER_FORMATS:
        raise AsrError(f"format {name!r} is not supported; use pcm or one of {', '.join(sorted(CONTAINER_FORMATS))}",
                       400, "unsupported_format", "format")
    return fmt


def check_sample_rate(rate: int) -> int:
    if rate not in SAMPLE_RATES:
        raise AsrError(f"sample_rate {rate} is not supported; use 16000 or 8000", 400, "unsupported_sample_rate",
                       "sample_rate")
    return rate


def pcm_rate(fmt: str | None, sample_rate: int, data: bytes) -> int | None:
    """None: ffmpeg decodes by content; an int: the bytes are raw s16le mono at that rate.

    Alibaba's default format is pcm; bytes with an unmistakable container header (a wav sent without
    `format`, or with `format=pcm`) are decoded by content instead, their header being authoritative.
    """
    has_header = data.startswith(_CONTAINER_MAGIC) or data[4:8] == b"ftyp"
    if fmt is None:
        return None if has_header else sample_rate
    if fmt == "pcm":
        return None if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE" else sample_rate
    return None


def confidence(logprobs: list[float]) -> float:
    """Geometric mean of the probabilities: exp(mean log-probability), 0.0 with nothing recognised."""
    return round(math.exp(sum(logprobs) / len(logprobs)), 4) if logprobs else 0.0


def to_response(task_id: str, transcript: Transcript, words: bool, processing_ms: int) -> NlsAsrResponse:
    sentences = [NlsSentence(text=s.text, begin_time=s.start_ms, end_time=s.end_ms, speaker_id=s.speaker,
                             confidence=None if s.logprobs is None else confidence([x.logprob for x in s.logprobs]),
                             words=[NlsWord(text=w.text, begin_time=w.start_ms, end_time=w.end_ms) for w in s.words]
                             if words else None)
                 for s in transcript.sentences]
    every = [x.logprob for s in transcript.sentences for x in s.logprobs or []]
    # SenseVoice's CTC output has no decoder log-probabilities: no confidence rather than a made-up one
    overall = confidence(every) if transcript.model == "paraformer" else None
    return NlsAsrResponse(task_id=task_id, result=transcript.text, confidence=overall,
                          duration_ms=transcript.duration_ms,
                          processing_ms=processing_ms, sentences=sentences)


async def options_of(app, service, query: NlsAsrQuery) -> tuple[TranscribeOptions, str | None]:
    """The checked query as TranscribeOptions and the audio format; `pcm_sample_rate` is decided once the audio's
    first bytes are known (`pcm_rate`)."""
    fmt = check_format(query.format)
    check_sample_rate(query.sample_rate)
    check_speakers(query.speaker_count, query.min_speakers, query.max_speakers,
                   ("speaker_count", "min_speakers", "max_speakers"))
    # enable_voice_detection and disfluency are accepted for compatibility: no disfluency model is served,
    # and VAD always segments the audio.
    # a stored vocabulary's id (vocab-…), or inline words as funasr-api takes them ("词 20 词 15")
    hotwords = (await vocabulary_words(app, query.vocabulary_id) if looks_like_id(query.vocabulary_id)
                else parse_hotwords(query.vocabulary_id))
    model = service.check_model(query.model) if query.model else "paraformer"
    await service.require_model(model, query.model)
    language = (query.language or "auto").lower() if model == "sensevoice" else None
    if language is not None and language not in ("auto", "zh", "en", "yue", "ja", "ko"):
        raise AsrError(f"language {query.language!r}: one of auto, zh, en, yue, ja, ko", 400, "invalid_parameter",
                       "language")
    options = TranscribeOptions(hotwords=hotwords, punctuation=query.enable_punctuation_prediction,
                                timestamps=words_asked(query), diarize=query.enable_speaker_diarization,
                                num_speakers=query.speaker_count, min_speakers=query.min_speakers,
                                max_speakers=query.max_speakers, itn=query.enable_inverse_text_normalization,
                                model=model, language=language, logprobs=True)
    return options, fmt


def words_asked(query: NlsAsrQuery) -> bool:
    return query.enable_words or query.word_timestamps
