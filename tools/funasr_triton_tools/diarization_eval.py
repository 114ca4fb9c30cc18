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
funasr_triton_tools.diarization_compare; needs funasr, and resemblyzer for `--embeddings resemblyzer`).

RTTM I/O and scoring are in diarization_score.py; pyannote is imported only when a file is scored, so
this module imports without it.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from funasr_triton.audio import decode
from funasr_triton.errors import AsrError
from funasr_triton.triton_client import TranscribeOptions, TritonAsrClient

from . import diarization_compare as dc
from .diarization_score import Turn, aggregate, format_table, read_rttm, score, select_uri, to_annotation, turns_from_result, write_rttm

log = logging.getLogger("funasr_triton_tools.diarization_eval")

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".webm", ".mp4", ".amr", ".wma",
                    ".pcm16", ".sph"}


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
    samples = decode(audio.read_bytes())
    options = TranscribeOptions(punctuation=True, timestamps=False, diarize=True, num_speakers=args.num_speakers,
                                min_speakers=args.min_speakers, max_speakers=args.max_speakers)
    return turns_from_result(client.transcribe(samples, options), uri)


def _compare_backends(args, items) -> int:
    """--compare-backends: funasr_triton_tools.diarization_compare on every file with audio."""
    client = None
    if args.embeddings == "resemblyzer":
        embed = dc.ResemblyzerEmbedder()
    else:
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
