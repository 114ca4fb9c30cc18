"""`funasr-triton eval-diarization`: RTTM I/O and DER/JER on hand-made RTTMs whose answers are worked out
by hand in the comments (pyannote.metrics conventions: DER = (false alarm + missed + confusion) / reference
speech, with the optimal one-to-one speaker mapping; JER = mean over reference speakers of
1 - |ref ∩ hyp| / |ref ∪ hyp| of the mapped hypothesis speaker, 1 for an unmapped reference speaker)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from funasr_triton_tools import cli
from funasr_triton_tools.diarization_score import (Turn, aggregate, format_rttm, parse_rttm, read_rttm, select_uri,
                                                   turns_from_result, write_rttm)


# reference of file "m1": A talks 0-10 s, B 10-20 s
REF_M1 = """\
;; reference of m1
SPEAKER m1 1 0.000 10.000 <NA> <NA> A <NA> <NA>
SPEAKER m1 1 10.000 10.000 <NA> <NA> B <NA> <NA>
"""
# hypothesis of "m1": x 0-8 s, y 8-19 s. Best mapping x->A, y->B.
#   confusion: 8-10 s (reference A, hypothesis y) = 2 s; missed: 19-20 s = 1 s; false alarm 0
#   DER = (0 + 1 + 2) / 20 = 0.15
#   JER: A~x: 1 - |0-8| / |0-10| = 1 - 8/10 = 0.2; B~y: 1 - |10-19| / |8-20| = 1 - 9/12 = 0.25 -> mean 0.225
HYP_M1 = """\
SPEAKER m1 1 0.000 8.000 <NA> <NA> x <NA> <NA>
SPEAKER m1 1 8.000 11.000 <NA> <NA> y <NA> <NA>
"""
# "m2": reference A 0-10 s; hypothesis z 0-12 s -> false alarm 10-12 s = 2 s, DER = 2/10 = 0.2,
#   JER = 1 - 10/12 = 1/6
REF_M2 = "SPEAKER m2 1 0 10 <NA> <NA> A <NA> <NA>\n"
HYP_M2 = "SPEAKER m2 1 0 12 <NA> <NA> z <NA> <NA>\n"
# corpus (m1 + m2): DER = (3 + 2) / (20 + 10) = 1/6 (not the mean of 0.15 and 0.2, 0.175);
#   JER = mean over the 3 reference speakers = (0.2 + 0.25 + 1/6) / 3
CORPUS_DER = 5 / 30
CORPUS_JER = (0.2 + 0.25 + 1 / 6) / 3


def annotation(rttm: str, uri: str):
    from funasr_triton_tools.diarization_score import to_annotation

    return to_annotation(parse_rttm(rttm), uri)


def annotation_of(uri: str, *turns: tuple[float, float, str]):
    from funasr_triton_tools.diarization_score import to_annotation

    return to_annotation([Turn(uri, b, e - b, s) for b, e, s in turns], uri)


# -- RTTM -------------------------------------------------------------------------------------

def test_parse_rttm_fields_comments_and_other_types():
    text = (";; comment\n\n"
            "SPKR-INFO m1 1 <NA> <NA> <NA> unknown A <NA> <NA>\n"
            "SPEAKER m1 1 1.250 2.500 <NA> <NA> spk_A <NA> <NA>\n"
            "SPEAKER m1 1 4.0 0.0 <NA> <NA> spk_A <NA> <NA>\n"      # zero duration: dropped
            "SPEAKER  m2  1  0.5  1  <NA>  <NA>  B  <NA>\n")         # 9 fields, extra spaces
    assert parse_rttm(text) == [Turn("m1", 1.25, 2.5, "spk_A"), Turn("m2", 0.5, 1.0, "B")]
    with pytest.raises(ValueError, match="at least 8 fields"):
        parse_rttm("SPEAKER m1 1 0 1 <NA> <NA>\n")
    with pytest.raises(ValueError, match="negative duration"):
        parse_rttm("SPEAKER m1 1 0 -1 <NA> <NA> A <NA> <NA>\n")


def test_rttm_round_trip(tmp_path):
    turns = [Turn("R8001_M8004_MS801", 0.0, 1.5, "spk0"), Turn("R8001_M8004_MS801", 1.5, 2.25, "spk1"),
             Turn("R8001_M8004_MS801", 12.345, 0.655, "spk0")]
    text = format_rttm(turns)
    assert text.splitlines()[1] == "SPEAKER R8001_M8004_MS801 1 1.500 2.250 <NA> <NA> spk1 <NA> <NA>"
    assert parse_rttm(text) == turns
    write_rttm(tmp_path / "x.rttm", turns)
    assert read_rttm(tmp_path / "x.rttm") == turns
    with pytest.raises(ValueError, match="whitespace"):
        format_rttm([Turn("a b", 0, 1, "A")])


def test_select_uri():
    turns = parse_rttm(REF_M1 + REF_M2)
    assert [t.speaker for t in select_uri(turns, "m2")] == ["A"]
    # a file that names one other uri only is taken whole and renamed
    assert select_uri(parse_rttm(REF_M2), "meeting2") == [Turn("meeting2", 0.0, 10.0, "A")]
    with pytest.raises(ValueError, match="none is"):
        select_uri(turns, "m3")


def test_turns_from_result():
    result = {"text": "...", "sentences": [
        {"start_ms": 0, "end_ms": 1500, "text": "你好。", "speaker": 0},
        {"start_ms": 1500, "end_ms": 3000, "text": "你好。", "speaker": 1},
        {"start_ms": 3200, "end_ms": 4000, "text": "再见。", "speaker": 0},
        {"start_ms": 4000, "end_ms": 4000, "text": "", "speaker": 0},   # empty: dropped
    ]}
    assert turns_from_result(result, "m") == [Turn("m", 0.0, 1.5, "spk0"), Turn("m", 1.5, 1.5, "spk1"),
                                              Turn("m", 3.2, 0.8, "spk0")]
    assert turns_from_result({"text": "", "sentences": []}, "m") == []
    with pytest.raises(ValueError, match="diarization"):
        turns_from_result({"sentences": [{"start_ms": 0, "end_ms": 10, "text": "a"}]}, "m")


def test_hypothesis_from_result():
    from pyannote.core import Segment

    from funasr_triton_tools.diarization_score import hypothesis_from_result

    result = {"sentences": [
        {"start_ms": 0, "end_ms": 1000, "text": "一", "speaker": 0},
        {"start_ms": 1000, "end_ms": 2000, "text": "二", "speaker": 0},  # touches the first: merged
        {"start_ms": 2000, "end_ms": 3500, "text": "三", "speaker": 1},
        {"start_ms": 4000, "end_ms": 5000, "text": "四", "speaker": 0},
    ]}
    hyp = hypothesis_from_result(result, "m")
    assert hyp.uri == "m"
    assert sorted(hyp.labels()) == ["spk0", "spk1"]
    assert list(hyp.label_timeline("spk0")) == [Segment(0, 2), Segment(4, 5)]
    assert list(hyp.label_timeline("spk1")) == [Segment(2, 3.5)]


# -- scoring ----------------------------------------------------------------------------------

def test_der_components_and_jer_known_answer():
    from funasr_triton_tools.diarization_score import score

    s = score(annotation(REF_M1, "m1"), annotation(HYP_M1, "m1"), collar=0.0)
    assert s["total"] == pytest.approx(20.0)
    assert s["confusion_s"] == pytest.approx(2.0)
    assert s["missed_detection_s"] == pytest.approx(1.0)
    assert s["false_alarm_s"] == pytest.approx(0.0)
    assert s["der"] == pytest.approx(3 / 20)
    assert s["confusion"] == pytest.approx(0.10)
    assert s["missed_detection"] == pytest.approx(0.05)
    assert s["false_alarm"] == 0.0
    assert s["correct"] == pytest.approx(17.0)
    assert s["jer"] == pytest.approx(0.225)
    assert (s["reference_speakers"], s["hypothesis_speakers"]) == (2, 2)

    s2 = score(annotation(REF_M2, "m2"), annotation(HYP_M2, "m2"), collar=0.0)
    assert s2["false_alarm_s"] == pytest.approx(2.0)
    assert s2["der"] == pytest.approx(0.2)
    assert s2["jer"] == pytest.approx(1 / 6)


def test_label_permutation_invariance():
    from funasr_triton_tools.diarization_score import score

    ref = annotation(REF_M1, "m1")
    base = score(ref, annotation(HYP_M1, "m1"), collar=0.0)
    swapped = HYP_M1.replace(" x ", " TMP ").replace(" y ", " x ").replace(" TMP ", " y ")
    for hyp_text in (swapped, HYP_M1.replace(" x ", " spk1 ").replace(" y ", " spk0 ")):
        other = score(ref, annotation(hyp_text, "m1"), collar=0.0)
        for key in ("der", "false_alarm", "missed_detection", "confusion", "jer"):
            assert other[key] == pytest.approx(base[key]), key
    # the reference's labels do not matter either
    renamed = score(annotation(REF_M1.replace(" A ", " B2 ").replace(" B ", " A2 "), "m1"),
                    annotation(HYP_M1, "m1"), collar=0.0)
    assert renamed["der"] == pytest.approx(base["der"])
    assert renamed["jer"] == pytest.approx(base["jer"])


def test_one_hypothesis_speaker_for_two():
    from funasr_triton_tools.diarization_score import score

    # reference A 0-10, B 10-20; hypothesis one speaker x 0-20.
    #   DER: x maps to one of them, the other's 10 s are confusion -> 10/20 = 0.5
    #   JER: mapped speaker 1 - 10/20 = 0.5, unmapped speaker 1 -> (0.5 + 1) / 2 = 0.75
    s = score(annotation(REF_M1, "m1"), annotation_of("m1", (0, 20, "x")), collar=0.0)
    assert s["der"] == pytest.approx(0.5)
    assert s["confusion_s"] == pytest.approx(10.0)
    assert s["jer"] == pytest.approx(0.75)


def test_perfect_and_empty_hypothesis():
    from funasr_triton_tools.diarization_score import score

    ref = annotation(REF_M1, "m1")
    perfect = score(ref, annotation(REF_M1.replace(" A ", " p ").replace(" B ", " q "), "m1"))
    assert perfect["der"] == 0.0 and perfect["jer"] == 0.0
    empty = score(ref, annotation_of("m1"), collar=0.0)
    # everything missed: DER 1, JER 1 (no reference speaker is mapped)
    assert empty["der"] == pytest.approx(1.0) and empty["missed_detection_s"] == pytest.approx(20.0)
    assert empty["jer"] == pytest.approx(1.0)
    nothing = score(annotation_of("m0"), annotation_of("m0"))
    assert nothing["der"] == 0.0 and nothing["jer"] is None and nothing["total"] == 0.0


def test_collar_is_total_width():
    from funasr_triton_tools.diarization_score import score

    # reference A 0-10, B 10-20; hypothesis changes speaker 0.2 s late, at 10.2 s -> 0.2 s confusion
    ref = annotation(REF_M1, "m1")
    hyp = annotation_of("m1", (0, 10.2, "x"), (10.2, 20, "y"))
    assert score(ref, hyp, collar=0.0)["der"] == pytest.approx(0.2 / 20)
    # collar 0.5 = +-0.25 s around the reference boundaries 0, 10, 20: 10-10.2 is unscored;
    # scored speech 20 - 0.25 - 0.5 - 0.25 = 19 s
    s = score(ref, hyp, collar=0.5)
    assert s["der"] == 0.0 and s["total"] == pytest.approx(19.0)
    # collar 0.25 = +-0.125 s: 10.125-10.2 = 0.075 s confusion over 20 - 0.125 - 0.25 - 0.125 = 19.5 s
    s = score(ref, hyp, collar=0.25)
    assert s["confusion_s"] == pytest.approx(0.075)
    assert s["der"] == pytest.approx(0.075 / 19.5)


def test_skip_overlap():
    from funasr_triton_tools.diarization_score import score

    # reference A 0-10, B 5-15 (overlap 5-10); hypothesis x 0-10, y 10-15.
    #   scored: 10 s of A + 10 s of B = 20 s; in 5-10 one of the two speakers is missed -> 5 s
    #   DER = 5/20 = 0.25; skipping the overlap: A 0-5 and B 10-15, both right -> 0
    ref = annotation_of("o", (0, 10, "A"), (5, 15, "B"))
    hyp = annotation_of("o", (0, 10, "x"), (10, 15, "y"))
    s = score(ref, hyp, collar=0.0)
    assert s["total"] == pytest.approx(20.0) and s["missed_detection_s"] == pytest.approx(5.0)
    assert s["der"] == pytest.approx(0.25)
    s = score(ref, hyp, collar=0.0, skip_overlap=True)
    assert s["total"] == pytest.approx(10.0) and s["der"] == 0.0


def test_corpus_aggregate():
    from funasr_triton_tools.diarization_score import score

    scores = [score(annotation(REF_M1, "m1"), annotation(HYP_M1, "m1"), collar=0.0),
              score(annotation(REF_M2, "m2"), annotation(HYP_M2, "m2"), collar=0.0)]
    total = aggregate(scores)
    assert total["files"] == 2
    assert total["total"] == pytest.approx(30.0)
    assert total["der"] == pytest.approx(CORPUS_DER)
    assert total["false_alarm"] == pytest.approx(2 / 30)
    assert total["missed_detection"] == pytest.approx(1 / 30)
    assert total["confusion"] == pytest.approx(2 / 30)
    assert total["jer"] == pytest.approx(CORPUS_JER)
    assert total["jer_speaker_count"] == 3


# -- CLI --------------------------------------------------------------------------------------

def write_corpus(root: Path, with_hyp: bool = True) -> tuple[Path, Path]:
    ref, hyp = root / "ref", root / "hyp"
    ref.mkdir()
    hyp.mkdir()
    (ref / "m1.rttm").write_text(REF_M1)
    (ref / "m2.rttm").write_text(REF_M2)
    if with_hyp:
        (hyp / "m1.rttm").write_text(HYP_M1)
        (hyp / "m2.rttm").write_text(HYP_M2)
    return ref, hyp


def test_cli_hypothesis_dir_json(tmp_path, capsys):
    ref, hyp = write_corpus(tmp_path)
    rc = cli.main(["--log-level", "WARNING", "eval-diarization", "--rttm-dir", str(ref), "--hypothesis-dir", str(hyp),
                   "--collar", "0", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [f["uri"] for f in out["files"]] == ["m1", "m2"]
    assert out["files"][0]["der"] == pytest.approx(0.15)
    assert out["files"][1]["der"] == pytest.approx(0.2)
    assert out["total"]["der"] == pytest.approx(CORPUS_DER)
    assert out["total"]["jer"] == pytest.approx(CORPUS_JER)
    assert out["settings"] == {"collar": 0.0, "skip_overlap": False}


def test_cli_table_and_missing_hypothesis(tmp_path, capsys):
    ref, hyp = write_corpus(tmp_path)
    (hyp / "m2.rttm").unlink()      # m2 without hypothesis: all 10 s missed -> corpus DER (3 + 10) / 30
    rc = cli.main(["--log-level", "ERROR", "eval-diarization", "--rttm-dir", str(ref), "--hypothesis-dir", str(hyp),
                   "--collar", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.split()[:2] == ["m1", "15.00"] for line in lines), out
    assert any(line.split()[:2] == ["m2", "100.00"] for line in lines), out
    assert any(line.split()[:2] == ["TOTAL", f"{100 * 13 / 30:.2f}"] for line in lines), out
    assert f"DER {100 * 13 / 30:.2f}%" in out


def test_cli_needs_audio_or_hypothesis(tmp_path, capsys):
    assert cli.main(["eval-diarization", "--rttm-dir", str(tmp_path)]) == 2
    assert "--audio-dir" in capsys.readouterr().err


def test_imports_neither_pyannote_nor_torch():
    # (a bare `pyannote` namespace module is created at startup by pyannote's *-nspkg.pth files)
    code = ("import sys, funasr_triton_tools.cli, funasr_triton_tools.diarization_eval; "
            "bad = sorted(n for n in sys.modules if n.startswith('pyannote.') "
            "or n.split('.')[0] in ('torch', 'funasr', 'pandas', 'matplotlib')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
