"""Seed serving, no HTTP in here: form fields -> TranscribeOptions, Transcript -> the wire models of `/api` and
`/transcribe`."""
from __future__ import annotations

from ..app.hotwords import parse_hotwords
from ..app.inputs import check_speakers, is_uint
from ..app.service import PARAFORMER, SENSEVOICE
from ..contract import MAX_SPEAKERS, TranscribeOptions, Transcript
from ..errors import AsrError
from .protocol import FileResult, FileSegment, SeedLine, SeedResponse

UNKNOWN_SPEAKER = "SPEAKER_00"
FILE_FIELDS = ("audio", "file")  # /api: the recording's field, `audio` first
BATCH_FILE_FIELDS = ("files", "files[]", "file")  # /transcribe: one part per recording
LANGS = ("auto", "zh", "en")
SENSEVOICE_LANGS = (*LANGS, "yue", "ja", "ko")


def seconds(ms: int) -> float:
    return round(ms / 1000, 3)


def _true(value: object) -> bool:
    """A form's boolean text that is on only when it says so (true, 1, yes)."""
    return isinstance(value, str) and value.strip().lower() in ("true", "1", "yes")


# ---------------------------------------------------------------- /api

def _count(fields: dict[str, str], name: str) -> int | None:
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    if not is_uint(raw) or not 1 <= int(raw) <= MAX_SPEAKERS:
        raise AsrError(f"{name} must be an integer between 1 and {MAX_SPEAKERS}", 400, "invalid_request", name)
    return int(raw)


def call_options(fields: dict[str, str], diarization_enabled: bool) -> TranscribeOptions:
    """`/api`'s text fields as TranscribeOptions: diarization on unless the server has it off or the field says
    false, hotwords as "词 20 词 15", speaker counts 1-MAX_SPEAKERS that agree with each other."""
    counts = {k: _count(fields, k) for k in ("num_speakers", "min_speakers", "max_speakers")}
    check_speakers(counts["num_speakers"], counts["min_speakers"], counts["max_speakers"])
    default = "true" if diarization_enabled else "false"
    diarize = fields.get("enable_speaker_diarization", default).strip().lower() not in ("false", "0", "no")
    return TranscribeOptions(hotwords=parse_hotwords(fields.get("hotwords")), timestamps=False, diarize=diarize,
                             itn=_true(fields.get("itn")), **counts)


def to_response(transcript: Transcript) -> SeedResponse:
    return SeedResponse(data=[SeedLine(line=i, speaker=s.speaker or UNKNOWN_SPEAKER, start_time=seconds(s.start_ms),
                                       end_time=seconds(s.end_ms), text=s.text)
                              for i, s in enumerate(transcript.sentences, start=1)])


# ---------------------------------------------------------------- /transcribe

def file_keys(raw: object, files: int) -> list[str]:
    """`keys`: comma-separated, one per file; none given: []."""
    keys = [k.strip() for k in raw.split(",")] if isinstance(raw, str) and raw.strip() else []
    if keys and len(keys) != files:
        raise AsrError(f"{len(keys)} keys for {files} files: give one key per file", 400, "invalid_request", "keys")
    return keys


async def batch_options(service, model_field: object, lang_field: object,
                        itn_field: object) -> tuple[TranscribeOptions, str]:
    """`/transcribe`'s `model`, `lang` and `itn` as TranscribeOptions (the same for every file), and `lang`."""
    name = model_field.strip() if isinstance(model_field, str) and model_field.strip() else None
    model = service.check_model(name) if name else PARAFORMER
    await service.require_model(model, name)
    langs = SENSEVOICE_LANGS if model == SENSEVOICE else LANGS
    lang = lang_field or "auto"
    if not isinstance(lang, str) or lang.strip().lower() not in langs:
        raise AsrError(f"lang must be one of {', '.join(langs)}", 400, "invalid_request", "lang")
    lang = lang.strip().lower()
    # a file's result has segments, not words: no word times asked for
    return TranscribeOptions(punctuation=True, timestamps=False, itn=_true(itn_field), model=model,
                             language=lang if model == SENSEVOICE else None), lang


def file_result(key: str, t: Transcript, options: TranscribeOptions, lang: str) -> FileResult:
    """One recognised file; `language` is SenseVoice's detected one, else the `lang` asked for."""
    return FileResult(key=key, status="success", text=t.text,
                      language=t.language if options.model == SENSEVOICE else lang,
                      duration=seconds(t.duration_ms),
                      segments=[FileSegment(start=seconds(s.start_ms), end=seconds(s.end_ms), text=s.text,
                                            speaker=s.speaker) for s in t.sentences])
