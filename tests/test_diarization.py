"""Diarization end to end (random-weight CAM++: mechanics only): two espeak-ng voices alternating,
speakers in the gRPC result and in every API shape, speaker-count options honoured."""
from __future__ import annotations


import json

import httpx
import numpy as np
import pytest
import srt
from openai import OpenAI

from funasr_triton.triton_client import TranscribeOptions
from tests.synth import SENTENCES, espeak, silence, write_wav

VOICES = [dict(voice="cmn", pitch=30, speed=150), dict(voice="cmn+f3", pitch=80, speed=175)]


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory):
    parts = [silence(0.3)]
    for i in range(6):
        parts += [espeak(SENTENCES[i], **VOICES[i % 2]), silence(1.2)]
    wav = np.concatenate(parts)
    return wav, write_wav(tmp_path_factory.mktemp("dialogue") / "dialogue.wav", wav)


def _check(result: dict, expected_speakers: int | None = None):
    assert result["sentences"]
    speakers = {s["speaker"] for s in result["sentences"]}
    assert speakers == set(range(len(speakers))), "speakers are numbered 0..k-1"
    assert result["num_speakers"] == len(speakers)
    if expected_speakers is not None:
        assert len(speakers) == expected_speakers
    first = [s["speaker"] for s in result["sentences"]]
    assert first[0] == 0, "numbering follows first appearance"
    prev_end = 0
    for s in result["sentences"]:
        assert s["start_ms"] <= s["end_ms"] and s["start_ms"] >= prev_end - 1
        if s.get("timestamps"):
            assert s["timestamps"][0][0] == s["start_ms"] and s["timestamps"][-1][1] == s["end_ms"]
        prev_end = s["end_ms"]


@pytest.mark.parametrize("num", [1, 2, 3])
def test_num_speakers_is_exact(client, dialogue, num):
    result = client.transcribe(dialogue[0], TranscribeOptions(diarize=True, num_speakers=num))
    _check(result, num)


def test_bounds_and_estimate(client, dialogue):
    _check(client.transcribe(dialogue[0], TranscribeOptions(diarize=True, max_speakers=1)), 1)
    est = client.transcribe(dialogue[0], TranscribeOptions(diarize=True, min_speakers=2, max_speakers=4))
    _check(est)
    assert 2 <= est["num_speakers"] <= 4
    plain = client.transcribe(dialogue[0])
    assert "num_speakers" not in plain and all("speaker" not in s for s in plain["sentences"])
    # diarization only splits sentences: the words are the same
    assert [w for s in est["sentences"] for w in s["words"]] == [w for s in plain["sentences"] for w in s["words"]]


def test_invalid_speaker_options(client, dialogue):
    with pytest.raises(Exception) as info:
        client.transcribe(dialogue[0][:32000], TranscribeOptions(diarize=True, min_speakers=3, max_speakers=2))
    assert "speakers" in str(getattr(info.value, "message", info.value)).lower()


def test_every_api_shows_speakers(frontend, dialogue):
    path = dialogue[1]
    oa = OpenAI(base_url=frontend.base_url + "/v1", api_key="x", max_retries=0)
    with open(path, "rb") as f:
        d = oa.audio.transcriptions.create(model="gpt-4o-transcribe-diarize", file=f, response_format="diarized_json",
                                           extra_body={"num_speakers": 2})
    assert {s.speaker for s in d.segments} == {"A", "B"}
    with open(path, "rb") as f:
        d = oa.audio.transcriptions.create(model="whisper-1", file=f, response_format="diarized_json",
                                           known_speaker_names=["客服", "客户"])
    assert {s.speaker for s in d.segments} <= {"客服", "客户"} and d.segments[0].speaker == "客服"
    with open(path, "rb") as f:
        v = oa.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                           extra_body={"enable_speaker_diarization": "true", "num_speakers": 2})
    assert {seg.model_extra["speaker"] for seg in v.segments} == {"SPEAKER_00", "SPEAKER_01"}
    with open(path, "rb") as f:
        subs = oa.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt",
                                              extra_body={"enable_speaker_diarization": "true", "num_speakers": 2})
    cues = list(srt.parse(subs))
    assert cues and all(c.content.startswith(("SPEAKER_00: ", "SPEAKER_01: ")) for c in cues)

    body = path.read_bytes()
    with httpx.Client(base_url=frontend.base_url, timeout=300) as c:
        r = c.post("/stream/v1/asr?format=wav&enable_speaker_diarization=true&speaker_count=2", content=body)
        assert r.status_code == 200 and r.json()["status"] == 20000000
        assert {s["speaker_id"] for s in r.json()["sentences"]} == {"SPEAKER_00", "SPEAKER_01"}
        r = c.post("/api", files={"audio": ("call.wav", body)}, data={"num_speakers": "2"})
        data = r.json()["data"]
        assert r.status_code == 200 and {d["speaker"] for d in data} == {"SPEAKER_00", "SPEAKER_01"}
        assert [d["line"] for d in data] == list(range(1, len(data) + 1))
        r = c.post("/api", files={"audio": ("call.wav", body)}, data={"min_speakers": "3", "max_speakers": "2"})
        assert r.status_code == 400 and r.json()["code"] == 400
        r = c.post("/stream/v1/asr?format=wav&enable_speaker_diarization=true&min_speakers=3&max_speakers=2", content=body)
        assert r.status_code == 400 and r.json()["status"] // 10000000 == 4


def test_speaker_label_template(triton, tmp_path, dialogue):
    from tests.conftest import start_frontend

    fe = start_frontend(triton.grpc_url, tmp_path, FUNASR_TRITON_DIARIZATION__LABEL_TEMPLATE="说话人{number}")
    try:
        with httpx.Client(base_url=fe.base_url, timeout=300) as c:
            r = c.post("/api", files={"audio": ("call.wav", dialogue[1].read_bytes())}, data={"num_speakers": "2"})
        assert {d["speaker"] for d in r.json()["data"]} == {"说话人1", "说话人2"}
    finally:
        fe.stop()


def test_eval_diarization_cli_against_the_served_pipeline(triton, cli_env, dialogue, tmp_path):
    """The scoring tool end to end: real Triton, real audio, a reference RTTM from the synthesis plan."""
    import subprocess

    audio_dir, rttm_dir, out_dir = tmp_path / "audio", tmp_path / "rttm", tmp_path / "hyp"
    audio_dir.mkdir()
    rttm_dir.mkdir()
    (audio_dir / "dialogue.wav").write_bytes(dialogue[1].read_bytes())
    # reference turns: where each espeak utterance was placed (0.3 s lead, 1.2 s gaps)
    t, lines = 0.3, []
    for i in range(6):
        dur = len(espeak(SENTENCES[i], **VOICES[i % 2])) / 16000
        lines.append(f"SPEAKER dialogue 1 {t:.3f} {dur:.3f} <NA> <NA> spk{i % 2} <NA> <NA>")
        t += dur + 1.2
    (rttm_dir / "dialogue.rttm").write_text("\n".join(lines) + "\n")
    out = subprocess.run(["funasr-triton", "eval-diarization", "--url", triton.grpc_url, "--audio-dir", str(audio_dir),
                          "--rttm-dir", str(rttm_dir), "--output-dir", str(out_dir), "--num-speakers", "2", "--json"],
                         capture_output=True, text=True, env=cli_env, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    der = report["total"]["der"]
    assert 0.0 <= der <= 1.0 and report["files"][0]["hypothesis_speakers"] == 2
    assert (out_dir / "dialogue.rttm").read_text().startswith("SPEAKER dialogue 1 ")


def test_bad_merge_threshold_stops_the_pipeline_loading(repository, tmp_path):
    """`speaker_merge_threshold` (pipeline config) is read and validated when the model loads."""
    import shutil

    from tests.conftest import start_triton

    repo = tmp_path / "model_repository"
    shutil.copytree(repository, repo, symlinks=True)
    config = repo / "pipeline" / "config.pbtxt"
    text = config.read_text()
    assert 'key: "speaker_merge_threshold" value: { string_value: "0.78" }' in text
    config.write_text(text.replace('string_value: "0.78"', 'string_value: "1.5"'))
    with pytest.raises(Exception):
        start_triton(repo, tmp_path).server.stop()
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("triton-*.log"))
    assert "speaker_merge_threshold='1.5' must be a number in (0, 1]" in logs
