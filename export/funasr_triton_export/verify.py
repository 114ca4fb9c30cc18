"""`funasr-triton verify`: the served models against FunASR AutoModel (PyTorch fp32), stage by stage.

For every audio file: VAD segments (±10 ms), Paraformer text/words/character timestamps on each
served VAD segment without and with hotwords (identical), punctuation of the joined text
(identical), CAM++ embedding per segment (cosine ≥ 0.999), and the full pipeline once.
Exits 1 on any disagreement.

When the repository has the `sensevoice` stage (SenseVoice-Small), each served VAD segment also goes to
the served `sensevoice` model and to AutoModel(SenseVoiceSmall) on the same weights (fbank without
dither: exporters/sensevoice.reference_model), with language auto and with and without use_itn:
the CTC tokens (detokenised by the model's own tokenizer, tags included), the detected language,
emotion and events must be identical, and the words of output_timestamp equal with each start and end
within one 60 ms encoder frame (none where funasr's own alignment raises); the whole-file path with
model=sensevoice must say what its segments say.

`--pipeline` compares instead the whole served result (the `pipeline` model: VAD + ASR + punctuation)
with one AutoModel(model=asr, vad_model=vad, punc_model=punc) on the same weights: the punctuated text
and every token's timestamp (±one CIF frame at a float near-tie). AutoModel drops the whole file's text
when one VAD segment yields no tokens (noise, a cough); the served pipeline keeps the other segments.
For such a file the reference is AutoModel's own stages over AutoModel's own VAD segments (its VAD,
its ASR per segment, FunASR's text joining, its punctuation), which is what AutoModel says for every
file with no empty segment; the file is counted under `blanked` and not failed.
"""
from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
VAD_TOLERANCE_MS = 10
MIN_COSINE = 0.999
# One upsampled CIF frame. A word boundary may move by exactly this much when ORT and PyTorch land
# on opposite sides of the peak threshold (>= 1 - 1e-4) at a float near-tie; such ties are counted
# and reported, anything larger is a failure.
CIF_FRAME_MS = 20


def asr_reference(model, seg: np.ndarray, **kwargs) -> dict:
    """AutoModel's result for one segment. FunASR answers an empty list when the CIF fires no token
    (noise, a click): that is an empty text with no timestamps."""
    out = model.generate(input=seg, **kwargs)
    return out[0] if out else {"text": "", "timestamp": []}


def compare_asr(got: dict, ref: dict) -> tuple[bool, int]:
    """(agrees, number of one-frame timestamp ties). Text must be identical."""
    ref_stamps = ref.get("timestamp", [])
    if got["text"] != ref["text"] or len(got["timestamps"]) != len(ref_stamps):
        return False, 0
    ties = 0
    for a, b in zip(got["timestamps"], ref_stamps):
        for x, y in zip(a, b):
            if x != y:
                if abs(x - y) != CIF_FRAME_MS:
                    return False, ties
                ties += 1
    return True, ties


@dataclass
class StageReport:
    name: str
    checks: int = 0
    failures: list[str] = field(default_factory=list)
    worst: float | None = None  # the stage's own metric (ms error, cosine, ...)
    ties: int = 0  # asr: word boundaries one CIF frame apart (reported, not failed)

    def check(self, ok: bool, what: str) -> None:
        self.checks += 1
        if not ok:
            self.failures.append(what)


@functools.lru_cache(maxsize=1)
def _join_texts():
    """The pipeline's own text joining (funasr_triton_models.sentences), imported once."""
    from funasr_triton_models.sentences import join_texts

    return join_texts


@functools.lru_cache(maxsize=1)
def _parse_tags():
    """The served model's own tag parsing (funasr_triton_models.sensevoice_text)."""
    from funasr_triton_models.sensevoice_text import parse_tags

    return parse_tags


SENSEVOICE_QUERIES = (("auto", False), ("auto", True))


FRAME_MS = 60  # SenseVoice's encoder frame: the served alignment runs on ONNX logits, AutoModel's on torch's


def _sensevoice_reference(reference, seg: np.ndarray, language: str, itn: bool) -> dict:
    """AutoModel's result with output_timestamp=True; where funasr 1.4.16's own alignment raises (a piece that
    re-encodes to several ids) the result without timing, marked `failed`."""
    try:
        return reference.generate(input=seg, language=language, use_itn=itn, output_timestamp=True)[0]
    except IndexError:
        return {**reference.generate(input=seg, language=language, use_itn=itn)[0], "failed": True}


def _same_timing(got: dict, ref: dict) -> bool:
    """The served words equal AutoModel's and each start and end is within one encoder frame of its (no words
    where AutoModel has no timing)."""
    if ref.get("failed") or "timestamp" not in ref:
        return (got["words"], got["timestamps"]) == ([], [])
    return got["words"] == ref.get("words", []) and len(got["timestamps"]) == len(ref["timestamp"]) and all(
        abs(b - rb) <= FRAME_MS and abs(e - re_) <= FRAME_MS for (b, e), (rb, re_) in zip(got["timestamps"], ref["timestamp"]))


def verify_sensevoice_file(path: str, samples: np.ndarray, client, reference, report: StageReport) -> None:
    """The served `sensevoice` model against AutoModel(SenseVoiceSmall) on each served VAD segment: tokens, tags,
    and word timestamps (output_timestamp)."""
    from funasr_triton.contract import TranscribeOptions

    parse = _parse_tags()
    tokenizer = reference.kwargs["tokenizer"]
    texts = []
    for beg, end in client.vad_segments(samples):
        seg = samples[beg * 16: end * 16]
        if len(seg) < 480:
            continue
        for language, itn in SENSEVOICE_QUERIES:
            got = client.sensevoice_segment(seg, language, itn, timestamps=True)
            timed = _sensevoice_reference(reference, seg, language, itn)
            ref_text = timed["text"]
            ref = parse(ref_text)
            got_raw = tokenizer.decode(got["token_ids"])
            same = (got_raw == ref_text and got["text"] == ref.text and got["language"] == ref.language
                    and got["emotion"] == ref.emotion and got["events"] == ref.events)
            report.check(same, f"{path} [{beg},{end}] {language}/itn={itn}: {got_raw[:60]!r} vs AutoModel {ref_text[:60]!r}")
            report.check(_same_timing(got, timed), f"{path} [{beg},{end}] {language}/itn={itn} word timestamps: "
                         f"{list(zip(got['words'], got['timestamps']))[:4]} vs AutoModel "
                         f"{list(zip(timed.get('words', []), timed.get('timestamp', [])))[:4]}")
            if itn:
                texts.append(got["text"])
    result = client.transcribe(samples, TranscribeOptions(model="sensevoice"))
    raw = " ".join(t for t in texts if t)
    report.check(result["raw_text"] == raw, f"{path}: pipeline(model=sensevoice) {result['raw_text'][:40]!r} vs segments {raw[:40]!r}")


def _silence_funasr() -> None:
    for name in ("funasr", "modelscope", "root"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _automodel(path: Path):
    from funasr import AutoModel

    return AutoModel(model=str(path), disable_update=True, device="cpu", disable_pbar=True, disable_log=True)


def _source_dirs(repository: Path, overrides: dict[str, Path]) -> dict[str, Path]:
    manifest = json.loads((repository / "MANIFEST.json").read_text())
    dirs = {stage: Path(info["source_dir"]) for stage, info in manifest["stages"].items()}
    dirs.update(overrides)
    return dirs


class PyannoteReference:
    """The speaker stage when it serves pyannote's WeSpeaker (`export --speaker-model pyannote`): there is
    no AutoModel for it, so the served embeddings are collected and compared, at the end, with
    pyannote.audio's own forward in the pyannote interpreter (one call for all windows)."""

    def __init__(self, checkpoint_dir: Path):
        self.checkpoint_dir = checkpoint_dir
        self.pairs: list[tuple[str, np.ndarray, np.ndarray]] = []

    def add(self, what: str, window: np.ndarray, served: np.ndarray) -> None:
        self.pairs.append((what, window, served))

    def finish(self, report: StageReport) -> None:
        if not self.pairs:
            return
        from .exporters.wespeaker import reference_embeddings

        refs = reference_embeddings(self.checkpoint_dir, [w for _, w, _ in self.pairs])
        for (what, _, emb), ref in zip(self.pairs, refs):
            cos = float(emb @ ref / (np.linalg.norm(emb) * np.linalg.norm(ref) + 1e-12))
            report.worst = cos if report.worst is None else min(report.worst, cos)
            report.check(cos >= MIN_COSINE, f"{what}: cosine {cos:.5f}")


def _speaker_model(repository: Path) -> str:
    return json.loads((repository / "MANIFEST.json").read_text())["stages"].get("speaker", {}).get("model", "")


def verify_file(path: str, samples: np.ndarray, client, models: dict, hotwords: list[str],
                reports: dict[str, StageReport]) -> None:
    vad_r, asr_r, hot_r, punc_r, spk_r, pipe_r = (reports[k] for k in ("vad", "asr", "asr+hotwords", "punc", "speaker", "pipeline"))
    served = client.vad_segments(samples)
    if "vad" in models:
        ref = models["vad"].generate(input=samples)[0]["value"]
        same_count = len(ref) == len(served)
        err = max((abs(a - b) for s, r in zip(served, ref) for a, b in zip(s, r)), default=0) if same_count else float("inf")
        vad_r.worst = max(vad_r.worst or 0, err)
        vad_r.check(same_count and err <= VAD_TOLERANCE_MS, f"{path}: served {served} vs AutoModel {ref}")
    texts = []
    for beg, end in served:
        seg = samples[beg * 16: end * 16]
        if len(seg) < 480:
            continue
        got = client.recognize_segment(seg)
        texts.append(got["text"])
        if "asr" in models:
            ref = asr_reference(models["asr"], seg)
            ok, ties = compare_asr(got, ref)
            asr_r.ties += ties
            asr_r.check(ok, f"{path} [{beg},{end}]: {got['text'][:40]!r}/{got['timestamps'][:3]} vs {ref['text'][:40]!r}/{ref['timestamp'][:3]}")
            got_h = client.recognize_segment(seg, hotwords)
            ref_h = asr_reference(models["asr"], seg, hotword=" ".join(hotwords))
            ok, ties = compare_asr(got_h, ref_h)
            hot_r.ties += ties
            hot_r.check(ok, f"{path} [{beg},{end}] hotwords: {got_h['text'][:40]!r} vs {ref_h['text'][:40]!r}")
        if isinstance(models.get("speaker"), PyannoteReference) and len(seg) >= 4000:
            models["speaker"].add(f"{path} [{beg},{end}]", seg[: 30 * 16000], client.speaker_embedding(seg[: 30 * 16000]))
        elif "speaker" in models and len(seg) >= 4000:
            emb = client.speaker_embedding(seg[: 30 * 16000])
            ref_e = np.asarray(models["speaker"].generate(input=seg[: 30 * 16000])[0]["spk_embedding"]).reshape(-1)
            cos = float(emb @ ref_e / (np.linalg.norm(emb) * np.linalg.norm(ref_e) + 1e-12))
            spk_r.worst = cos if spk_r.worst is None else min(spk_r.worst, cos)
            spk_r.check(cos >= MIN_COSINE, f"{path} [{beg},{end}]: cosine {cos:.5f}")
    joined, got_p = "", ""
    if any(texts):
        joined = _join_texts()(texts)
        got_p = client.punctuate(joined)
        if "punc" in models:
            ref_p = models["punc"].generate(input=joined)[0]["text"]
            punc_r.check(got_p == ref_p, f"{path}: {got_p[:40]!r} vs {ref_p[:40]!r}")
    # the whole pipeline must say exactly what its stages say
    result = client.transcribe(samples)
    raw = " ".join(t for t in texts if t)
    pipe_r.check(result["raw_text"] == raw and result["text"] == got_p,
                 f"{path}: pipeline {result['text'][:40]!r} vs stages {got_p[:40]!r}")


@dataclass
class PipelineReport(StageReport):
    blanked: list[str] = field(default_factory=list)  # files AutoModel blanked (a segment without tokens)


def _flat_timestamps(result: dict) -> list[list[int]]:
    return [list(t) for s in result.get("sentences", []) for t in s.get("timestamps", [])]


def pipeline_reference(samples: np.ndarray, auto, stages: dict) -> tuple[dict, bool]:
    """(AutoModel's VAD+ASR+punctuation result, whether it blanked the file and the reference was
    rebuilt from its stages). Each segment is decoded alone on the CPU (AutoModel's batch_size is 0
    there), as the served graph decodes any segment, alone or batched."""
    from funasr.auto.auto_model import _join_vad_texts

    out = auto.generate(input=samples)
    ref = out[0] if out else {"text": "", "timestamp": []}
    vad = stages["vad"].generate(input=samples)[0]["value"]
    if ref["text"] or not vad:
        return {"text": ref["text"], "timestamp": [list(t) for t in ref.get("timestamp", [])]}, False
    texts, stamps = [], []
    for beg, end in vad:
        r = asr_reference(stages["asr"], samples[beg * 16: end * 16])
        texts.append(r["text"])
        stamps += [[a + beg, b + beg] for a, b in r.get("timestamp", [])]
    if all(texts):
        return {"text": "", "timestamp": []}, False  # blank for another reason: a real disagreement
    joined = _join_vad_texts(texts)
    text = stages["punc"].generate(input=joined)[0]["text"] if joined else ""
    return {"text": text, "timestamp": stamps}, True


def verify_pipeline_file(path: str, samples: np.ndarray, client, auto, stages: dict, report: PipelineReport) -> None:
    from funasr_triton.contract import TranscribeOptions

    got = client.transcribe(samples, TranscribeOptions(punctuation=True))
    ref, blanked = pipeline_reference(samples, auto, stages)
    if blanked:
        report.blanked.append(path)
    got_ts = _flat_timestamps(got)
    report.check(got["text"] == ref["text"], f"{path}: text {got['text'][:60]!r} vs AutoModel {ref['text'][:60]!r}")
    same = len(got_ts) == len(ref["timestamp"])
    worst = 0
    for a, b in zip(got_ts, ref["timestamp"]) if same else ():
        for x, y in zip(a, b):
            worst = max(worst, abs(x - y))
            report.ties += 0 < abs(x - y) <= CIF_FRAME_MS
    report.worst = max(report.worst or 0, worst if same else float("inf"))
    report.check(same and worst <= CIF_FRAME_MS,
                 f"{path}: {len(got_ts)} token timestamps (worst {worst} ms) vs AutoModel {len(ref['timestamp'])}")


def main_pipeline(args, dirs: dict[str, Path], client) -> int:
    from funasr import AutoModel
    from funasr_triton.audio import decode

    auto = AutoModel(model=str(dirs["asr"]), vad_model=str(dirs["vad"]), punc_model=str(dirs["punc"]),
                     disable_update=True, device="cpu", disable_pbar=True, disable_log=True)
    stages = {k: _automodel(dirs[k]) for k in ("vad", "asr", "punc")}
    _silence_funasr()
    report = PipelineReport("pipeline")
    files = 0
    for path in args.audio:
        verify_pipeline_file(path, decode(Path(path).read_bytes()), client, auto, stages, report)
        files += 1
    if args.json:
        print(json.dumps({"pipeline": {"files": files, "checks": report.checks, "failures": report.failures,
                                       "worst_ms": report.worst, "ties": report.ties, "blanked": report.blanked}},
                         ensure_ascii=False))
    else:
        print(f"pipeline: {files} files, {report.checks} checks, {len(report.failures)} failed, "
              f"worst timestamp error {report.worst} ms ({report.ties} one-frame near-ties), "
              f"{len(report.blanked)} files blanked by AutoModel (compared with its stages)")
        for f in report.failures[:10]:
            print(f"  pipeline MISMATCH {f}")
    return 1 if report.failures else 0


def print_table(reports: dict[str, StageReport], out=sys.stdout) -> None:
    out.write(f"{'stage':<14}{'checks':>8}{'failed':>8}  worst\n")
    for r in reports.values():
        worst = "" if r.worst is None else (f"{r.worst:.0f} ms" if r.name == "vad" else f"cos {r.worst:.6f}")
        if r.ties:
            worst = f"{r.ties} word boundaries off by one {CIF_FRAME_MS} ms CIF frame (float near-tie)"
        out.write(f"{r.name:<14}{r.checks:>8}{len(r.failures):>8}  {worst}\n")
    for r in reports.values():
        for f in r.failures[:5]:
            out.write(f"  {r.name} MISMATCH {f}\n")


def main(args) -> int:
    from funasr_triton.audio import decode
    from funasr_triton.triton_client import TritonAsrClient

    from .sources import STAGES  # noqa: F401  (ensures the export extra is installed)

    _silence_funasr()
    overrides = {}
    for v in args.model_dir:
        k, _, p = v.partition("=")
        overrides[k] = Path(p)
    dirs = _source_dirs(Path(args.repository), overrides)
    if getattr(args, "pipeline", False):
        client = TritonAsrClient(args.url)
        try:
            return main_pipeline(args, dirs, client)
        finally:
            client.close()
    pyannote = _speaker_model(Path(args.repository)) == "pyannote"
    # the stages compared one by one (streaming has its own parity tests; itn is not a FunASR model)
    models = {stage: PyannoteReference(path) if stage == "speaker" and pyannote else _automodel(path)
              for stage, path in dirs.items() if stage in ("vad", "asr", "punc", "speaker")}
    _silence_funasr()
    client = TritonAsrClient(args.url)
    hotwords = args.hotwords.split()
    reports = {k: StageReport(k) for k in ("vad", "asr", "asr+hotwords", "punc", "speaker", "pipeline")}
    sensevoice = None
    if "sensevoice" in dirs:  # the second model, when exported
        from .exporters.sensevoice import reference_model

        sensevoice = reference_model(dirs["sensevoice"])
        reports["sensevoice"] = StageReport("sensevoice")
        _silence_funasr()
    try:
        for path in args.audio:
            samples = decode(Path(path).read_bytes())
            verify_file(path, samples, client, models, hotwords, reports)
            if sensevoice is not None:
                verify_sensevoice_file(path, samples, client, sensevoice, reports["sensevoice"])
        if isinstance(models.get("speaker"), PyannoteReference):
            models["speaker"].finish(reports["speaker"])
    finally:
        client.close()
    if args.json:
        print(json.dumps({k: {"checks": r.checks, "failures": r.failures, "worst": r.worst, "ties": r.ties} for k, r in reports.items()},
                         ensure_ascii=False))
    else:
        print_table(reports)
    failed = sum(len(r.failures) for r in reports.values())
    return 1 if failed else 0
