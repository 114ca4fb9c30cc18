"""Score the served speaker diarization against reference RTTMs (DER and JER with pyannote.metrics).

Usage (needs the `eval` extra: `pip install -e '.[eval]'`):

    # transcribe every audio file that has a reference <uri>.rttm through Triton, with diarization
    funasr-triton eval-diarization --audio-dir data/Eval_Ali_far/audio_dir \\
        --rttm-dir data/Eval_Ali_far/rttm --url 127.0.0.1:8001 \\
        [--num-speakers N | --min-speakers A --max-speakers B] \\
        [--output-dir hyp_rttm] [--collar 0.25] [--skip-overlap] [--json]

    # score hypothesis RTTMs that already exist (no Triton call): <uri>.rttm in both folders
    funasr-triton eval-diarization --rttm-dir ref_rttm --hypothesis-dir hyp_rttm

A file's uri is its name without the extension: `R8001_M8004.wav` is scored against
`R8001_M8004.rttm`. Only the RTTM lines of that uri are used; an RTTM naming a single other uri
(a file renamed after export) is used whole. Multi-channel audio is downmixed to mono by ffmpeg.
The hypothesis is one turn per returned sentence (`start_ms`..`end_ms`, `speaker`), so pauses
inside a sentence count as speech, as they usually do in utterance-level references.

It prints one line per file (DER with false alarm / missed detection / speaker confusion, JER,
reference/hypothesis speaker counts) and the corpus totals: corpus DER is total error time over
total reference speech time (not the mean of the file DERs), corpus JER is the mean over all
reference speakers of all files. `--json` prints `{"files": [...], "total": {...}}` instead;
rates are fractions (0.15 = 15 %), durations seconds. The exit status is 1 if a file failed.

The collar follows pyannote.metrics: `collar` is the TOTAL width of the unscored zone centred on
each reference boundary (±collar/2). NIST md-eval's `-c 0.25` (the M2MeT/AliMeeting setting)
is `collar=0.5` here; `collar=0` with no `--skip-overlap` is the strictest DER (AISHELL-4 and
DIHARD report that). `--skip-overlap` leaves overlapped reference speech unscored.

`--compare-backends [--embeddings served|resemblyzer]` scores instead the served clustering and FunASR's
cluster backend side by side on the same embeddings, over the reference's speech (see
funasr_triton_export.diarization_compare; needs funasr, and resemblyzer for `--embeddings resemblyzer`).

Python API: parse_rttm / read_rttm / format_rttm / write_rttm (Turn tuples, no pyannote needed),
to_annotation, turns_from_result / hypothesis_from_result, score, aggregate. pyannote is
imported lazily, so the frontend package imports without it.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    from pyannote.core import Annotation

log = logging.getLogger("funasr_triton.diarization_eval")

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".webm", ".mp4", ".amr", ".wma",
                    ".pcm16", ".sph"}
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


# -- CLI ----------------------------------------------------------------------------------------

def _corpus(args) -> list[tuple[str, Path | None, Path]]:
    """(uri, audio path or None, reference RTTM) for every file to score, sorted by uri."""
    rttm_dir = Path(args.rttm_dir)
    if not rttm_dir.is_dir():
        raise SystemExit(f"error: --rttm-dir {rttm_dir} is not a directory")
    if args.audio_dir:
        audio_dir = Path(args.audio_dir)
        if not audio_dir.is_dir():
            raise SystemExit(f"error: --audio-dir {audio_dir} is not a directory")
        items = []
        for path in sorted(p for p in audio_dir.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS):
            ref = rttm_dir / f"{path.stem}.rttm"
            if ref.is_file():
                items.append((path.stem, path, ref))
            else:
                log.warning("%s: no reference %s, skipped", path.name, ref)
        return items
    return [(p.stem, None, p) for p in sorted(rttm_dir.glob("*.rttm")) if p.is_file()]


def _hypothesis_turns(args, client, uri: str, audio: Path | None) -> list[Turn]:
    if args.hypothesis_dir:
        path = Path(args.hypothesis_dir) / f"{uri}.rttm"
        if not path.is_file():
            # like md-eval: a file with a reference and no hypothesis is all missed speech
            log.warning("%s: no hypothesis %s, scored as empty", uri, path)
            return []
        return select_uri(read_rttm(path), uri)
    from .audio import decode
    from .triton_client import TranscribeOptions

    samples = decode(audio.read_bytes())
    options = TranscribeOptions(punctuation=True, timestamps=False, diarize=True, num_speakers=args.num_speakers,
                                min_speakers=args.min_speakers, max_speakers=args.max_speakers)
    return turns_from_result(client.transcribe(samples, options), uri)


def _compare_backends(args, items) -> int:
    """--compare-backends: funasr_triton_export.diarization_compare on every file with audio."""
    from funasr_triton_export import diarization_compare as dc

    from .audio import decode

    client = None
    if args.embeddings == "resemblyzer":
        embed = dc.ResemblyzerEmbedder()
    else:
        from .triton_client import TritonAsrClient

        client = TritonAsrClient(args.url, timeout_s=args.timeout)
        embed = dc.ServedEmbedder(client)
    results = []
    try:
        for uri, audio, ref_path in items:
            if audio is None:
                continue
            turns = select_uri(read_rttm(ref_path), uri)
            results.append(dc.compare_file(decode(audio.read_bytes()), turns, embed, uri, collar=args.collar))
    finally:
        if client is not None:
            client.close()
    if not results:
        print("error: --compare-backends needs --audio-dir", file=sys.stderr)
        return 2
    total = dc.aggregate(results)
    if args.json:
        print(json.dumps({"embeddings": args.embeddings, "collar": args.collar, "files": results, "total": total}))
    else:
        print(dc.format_table(results, total))
    return 0


def main(args) -> int:
    """`funasr-triton eval-diarization` (see the module docstring)."""
    if not args.audio_dir and not args.hypothesis_dir:
        print("error: give --audio-dir (transcribe through Triton) or --hypothesis-dir (score existing RTTMs)",
              file=sys.stderr)
        return 2
    try:
        import pyannote.metrics  # noqa: F401
    except ImportError:
        print("error: pyannote.metrics is not installed (pip install 'funasr-triton[eval]')", file=sys.stderr)
        return 2
    from .errors import AsrError

    items = _corpus(args)
    if not items:
        print("error: no file has both audio (or a hypothesis) and a reference RTTM", file=sys.stderr)
        return 2
    if getattr(args, "compare_backends", False):
        return _compare_backends(args, items)
    output_dir = Path(args.output_dir) if args.output_dir else None
    if output_dir:
        output_dir.mkdir(parents=True, exist_ok=True)
    client = None
    if not args.hypothesis_dir:
        from .triton_client import TritonAsrClient

        client = TritonAsrClient(args.url, timeout_s=args.timeout)
    scores, status = [], 0
    try:
        for uri, audio, ref_path in items:
            try:
                reference = to_annotation(select_uri(read_rttm(ref_path), uri), uri)
                turns = _hypothesis_turns(args, client, uri, audio)
            except (AsrError, OSError, ValueError) as e:
                print(f"{uri}: error: {getattr(e, 'message', e)}", file=sys.stderr)
                status = 1
                continue
            if output_dir:
                write_rttm(output_dir / f"{uri}.rttm", turns)
            s = score(reference, to_annotation(turns, uri), collar=args.collar, skip_overlap=args.skip_overlap)
            s["uri"] = uri
            scores.append(s)
    finally:
        if client is not None:
            client.close()
    if not scores:
        print("error: no file could be scored", file=sys.stderr)
        return 1
    total = aggregate(scores)
    settings = {"collar": args.collar, "skip_overlap": args.skip_overlap}
    if args.json:
        print(json.dumps({"settings": settings, "files": scores, "total": total}, ensure_ascii=False))
    else:
        print(format_table(scores, total))
        jer = "-" if total["jer"] is None else f"{100 * total['jer']:.2f}%"
        print(f"\nDER {100 * total['der']:.2f}% (false alarm {100 * total['false_alarm']:.2f}%, "
              f"missed {100 * total['missed_detection']:.2f}%, confusion {100 * total['confusion']:.2f}%), "
              f"JER {jer} over {total['files']} files, {total['total']:.1f} s of reference speech "
              f"(collar {args.collar} s total width, skip_overlap={args.skip_overlap})")
    return status
