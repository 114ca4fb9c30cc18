"""RTTM turns and DER/JER scoring (pyannote.metrics) for `funasr-triton eval-diarization` (diarization_eval.py)
and the backend comparison (diarization_compare.py).

Python API: parse_rttm / read_rttm / format_rttm / write_rttm (Turn tuples, no pyannote needed),
to_annotation, turns_from_result / hypothesis_from_result, score, aggregate, format_table.

pyannote is imported only when an annotation is built or scored, so this module imports without it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    from pyannote.core import Annotation

NA = "<NA>"


class Turn(NamedTuple):
    """One RTTM SPEAKER line: `speaker` talks from `start` for `duration` seconds in file `uri`."""
    uri: str
    start: float
    duration: float
    speaker: str

    @property
    def end(self) -> float:
        return self.start + self.duration


# -- RTTM ---------------------------------------------------------------------------------------

def parse_rttm(text: str) -> list[Turn]:
    """SPEAKER lines of an RTTM text (`SPEAKER <file> <chnl> <tbeg> <tdur> <ortho> <stype> <name> <conf> <slat>`).

    Other line types, blank lines and `;;` comments are skipped, as are turns of zero duration.
    """
    turns = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith(";") or fields[0].upper() != "SPEAKER":
            continue
        if len(fields) < 8:
            raise ValueError(f"RTTM line {n}: expected at least 8 fields, got {len(fields)}: {line!r}")
        try:
            start, duration = float(fields[3]), float(fields[4])
        except ValueError:
            raise ValueError(f"RTTM line {n}: bad onset/duration: {line!r}") from None
        if duration < 0:
            raise ValueError(f"RTTM line {n}: negative duration: {line!r}")
        if duration > 0:
            turns.append(Turn(fields[1], start, duration, fields[7]))
    return turns


def read_rttm(path: str | Path) -> list[Turn]:
    return parse_rttm(Path(path).read_text(encoding="utf-8"))


def format_rttm(turns: Iterable[Turn]) -> str:
    """RTTM text, one `SPEAKER <uri> 1 <start> <dur> <NA> <NA> <speaker> <NA> <NA>` line per turn (ms precision)."""
    lines = []
    for t in turns:
        for name, value in (("uri", t.uri), ("speaker", t.speaker)):
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"RTTM {name} must be non-empty without whitespace: {value!r}")
        lines.append(f"SPEAKER {t.uri} 1 {t.start:.3f} {t.duration:.3f} {NA} {NA} {t.speaker} {NA} {NA}\n")
    return "".join(lines)


def write_rttm(path: str | Path, turns: Iterable[Turn]) -> None:
    Path(path).write_text(format_rttm(turns), encoding="utf-8")


def select_uri(turns: list[Turn], uri: str) -> list[Turn]:
    """The turns of `uri`; an RTTM that names one other file only is taken whole (renamed to `uri`)."""
    mine = [t for t in turns if t.uri == uri]
    if mine or not turns:
        return mine
    uris = {t.uri for t in turns}
    if len(uris) == 1:
        return [t._replace(uri=uri) for t in turns]
    raise ValueError(f"the RTTM names {len(uris)} files ({', '.join(sorted(uris)[:5])}, ...) and none is {uri!r}")


# -- pyannote conversion ----------------------------------------------------------------------

def to_annotation(turns: Iterable[Turn], uri: str | None = None) -> "Annotation":
    """pyannote Annotation of the turns (of `uri` only, when given); overlapping or touching turns of
    one speaker are merged, so a speaker is never counted twice at one instant."""
    from pyannote.core import Annotation, Segment

    turns = list(turns)
    if uri is None:
        uris = {t.uri for t in turns}
        uri = uris.pop() if len(uris) == 1 else None
    else:
        turns = [t for t in turns if t.uri == uri]
    annotation = Annotation(uri=uri)
    for i, t in enumerate(turns):
        if t.duration > 0:
            annotation[Segment(t.start, t.end), i] = t.speaker
    return annotation.support()


def turns_from_result(result: dict, uri: str) -> list[Turn]:
    """Turns of a pipeline RESULT: one per sentence with `start_ms`, `end_ms` and `speaker` (label `spk<N>`).

    Raises ValueError when there are sentences but none has a speaker (diarization was not applied).
    """
    sentences = result.get("sentences") or []
    turns = []
    for s in sentences:
        if s.get("speaker") is None:
            continue
        start, end = int(s["start_ms"]) / 1000.0, int(s["end_ms"]) / 1000.0
        if end > start:
            turns.append(Turn(uri, start, round(end - start, 3), f"spk{int(s['speaker'])}"))
    if sentences and not any(s.get("speaker") is not None for s in sentences):
        raise ValueError("the result's sentences carry no speaker: was diarization enabled on the server?")
    return turns


def hypothesis_from_result(result: dict, uri: str) -> "Annotation":
    """pyannote Annotation of a pipeline RESULT with diarization (see turns_from_result)."""
    return to_annotation(turns_from_result(result, uri), uri)


# -- scoring ------------------------------------------------------------------------------------

def _rate(numerator: float, total: float) -> float:
    # pyannote's convention for an empty reference: 0 when nothing is wrong, 1 otherwise
    if total == 0:
        return 0.0 if numerator == 0 else 1.0
    return numerator / total


def _uem(reference: "Annotation", hypothesis: "Annotation"):
    """The scored region: the union of both extents (what pyannote approximates when given no UEM)."""
    from pyannote.core import Segment, Timeline

    segments = [a.get_timeline().extent() for a in (reference, hypothesis) if a]
    if not segments:
        return Timeline()
    return Timeline([Segment(min(s.start for s in segments), max(s.end for s in segments))])


def score(reference: "Annotation", hypothesis: "Annotation", collar: float = 0.25,
          skip_overlap: bool = False, uem=None) -> dict:
    """DER (with its components) and JER of one file.

    collar: pyannote convention, the total width of the unscored zone centred on each reference
    boundary (md-eval `-c X` is collar=2X). uem: a pyannote Timeline of the scored region, default the
    union of both annotations' extents.

    Returns rates as fractions and durations in seconds: der, false_alarm, missed_detection,
    confusion (each / total), total (scored reference speech), correct, false_alarm_s,
    missed_detection_s, confusion_s, jer (None without reference speakers), jer_speaker_count,
    jer_speaker_error (the JER numerator, for aggregation), reference_speakers, hypothesis_speakers.
    """
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    if uem is None:
        uem = _uem(reference, hypothesis)
    d = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)(reference, hypothesis, uem=uem, detailed=True)
    total, fa, miss, conf = d["total"], d["false alarm"], d["missed detection"], d["confusion"]
    out = {
        "uri": reference.uri or hypothesis.uri,
        "der": _rate(fa + miss + conf, total),
        "false_alarm": _rate(fa, total),
        "missed_detection": _rate(miss, total),
        "confusion": _rate(conf, total),
        "total": total,
        "correct": d["correct"],
        "false_alarm_s": fa,
        "missed_detection_s": miss,
        "confusion_s": conf,
        "jer": None,
        "jer_speaker_count": 0,
        "jer_speaker_error": 0.0,
        "reference_speakers": len(reference.labels()),
        "hypothesis_speakers": len(hypothesis.labels()),
    }
    if reference.labels():
        j = JaccardErrorRate(collar=collar, skip_overlap=skip_overlap)(reference, hypothesis, uem=uem, detailed=True)
        count, error = int(j["speaker count"]), j["speaker error"]
        out.update(jer=error / count if count else None, jer_speaker_count=count, jer_speaker_error=error)
    return out


def aggregate(scores: Iterable[dict]) -> dict:
    """Corpus totals of score() results: DER = sum of errors / sum of reference speech (not a mean of
    file DERs); JER = mean over every reference speaker of every file."""
    scores = list(scores)
    total = sum(s["total"] for s in scores)
    fa = sum(s["false_alarm_s"] for s in scores)
    miss = sum(s["missed_detection_s"] for s in scores)
    conf = sum(s["confusion_s"] for s in scores)
    count = sum(s["jer_speaker_count"] for s in scores)
    error = sum(s["jer_speaker_error"] for s in scores)
    return {
        "uri": "TOTAL",
        "files": len(scores),
        "der": _rate(fa + miss + conf, total),
        "false_alarm": _rate(fa, total),
        "missed_detection": _rate(miss, total),
        "confusion": _rate(conf, total),
        "total": total,
        "correct": sum(s["correct"] for s in scores),
        "false_alarm_s": fa,
        "missed_detection_s": miss,
        "confusion_s": conf,
        "jer": error / count if count else None,
        "jer_speaker_count": count,
        "jer_speaker_error": error,
        "reference_speakers": sum(s["reference_speakers"] for s in scores),
        "hypothesis_speakers": sum(s["hypothesis_speakers"] for s in scores),
    }


def format_table(scores: list[dict], total: dict) -> str:
    head = f"{'file':<32} {'DER%':>7} {'FA%':>7} {'MISS%':>7} {'CONF%':>7} {'JER%':>7} {'ref':>4} {'hyp':>4} {'speech_s':>9}"
    rows = [head, "-" * len(head)]

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    for s in [*scores, total]:
        if s is total:
            rows.append("-" * len(head))
        rows.append(f"{str(s['uri']):<32} {pct(s['der']):>7} {pct(s['false_alarm']):>7} {pct(s['missed_detection']):>7} "
                    f"{pct(s['confusion']):>7} {pct(s['jer']):>7} {s['reference_speakers']:>4} "
                    f"{s['hypothesis_speakers']:>4} {s['total']:>9.2f}")
    return "\n".join(rows)
