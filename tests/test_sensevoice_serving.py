"""SenseVoice-Small served next to Paraformer from one repository: the `sensevoice` stage against
AutoModel(SenseVoiceSmall) on the same weights, the whole-file path (VAD -> sensevoice per segment), the
option checks, and a repository without the export (NOT_FOUND -> 404 model_not_found)."""
from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from funasr_triton.contract import TranscribeOptions
from funasr_triton.errors import AsrError
from tests.conftest import BIN, CACHE, ROOT, start_triton
from tests.synth import SENTENCES, compose

from funasr_triton_models.sensevoice_text import parse_tags

SOURCE = CACHE / "test" / "sensevoice"


@pytest.fixture(scope="session")
def sv_repository(repository, tmp_path_factory):
    """The session repository plus `export --stages sensevoice` (test weights): both models side by side."""
    repo = tmp_path_factory.mktemp("svrepo") / "model_repository"
    shutil.copytree(repository, repo, symlinks=False)
    subprocess.run([str(BIN / "funasr-triton"), "--log-level", "WARNING", "export", "--source", "test", "--quantize",
                    "--stages", "sensevoice", "--repository", str(repo), "--cache-dir", str(CACHE)],
                   check=True, cwd=ROOT)
    return repo


@pytest.fixture(scope="session")
def sv_triton(sv_repository, tmp_path_factory):
    handle = start_triton(sv_repository, tmp_path_factory.mktemp("sv-triton-logs"))
    yield handle
    handle.server.stop()


@pytest.fixture()
def sv_client(sv_triton):
    from funasr_triton.triton_client import TritonAsrClient

    c = TritonAsrClient(sv_triton.grpc_url, timeout_s=300)
    yield c
    c.close()


@pytest.fixture(scope="module")
def reference():
    from funasr_triton_export.exporters.sensevoice import reference_model

    return reference_model(SOURCE)


def segment(i: int) -> np.ndarray:
    return compose(0.1, SENTENCES[i % len(SENTENCES)], 0.1).astype(np.float32)


@pytest.mark.parametrize("language,itn", [("auto", False), ("en", True), ("yue", False)])
def test_stage_equals_automodel(sv_client, reference, language, itn):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(SOURCE / "chn_jpn_yue_eng_ko_spectok.bpe.model"))
    wav = segment(0)
    got = sv_client.sensevoice_segment(wav, language, itn)
    ref_text = reference.generate(input=wav, language=language, use_itn=itn)[0]["text"]
    assert sp.DecodeIds(got["token_ids"]) == ref_text  # tokens, tags included
    ref = parse_tags(ref_text)
    assert (got["text"], got["language"], got["emotion"], got["events"]) == (ref.text, ref.language, ref.emotion, ref.events)
    assert "<|" not in got["text"]


def test_stage_timestamps_equal_automodel(sv_client, reference):
    """WORDS/TIMESTAMPS of the served stage (CTC forced alignment on the ONNX logits) against
    AutoModel(SenseVoiceSmall, output_timestamp=True) on the same weights: the same words, each start and
    end within one 60 ms encoder frame (in practice equal: the logits agree to ~1e-5)."""
    timed = exact = 0
    for i, language, itn in [(i, lang, itn) for i in range(4) for lang, itn in (("auto", False), ("en", True))]:
        wav = segment(i)
        got = sv_client.sensevoice_segment(wav, language, itn, timestamps=True)
        plain = sv_client.sensevoice_segment(wav, language, itn)
        assert got["token_ids"] == plain["token_ids"] and "words" not in plain
        try:
            ref = reference.generate(input=wav, language=language, use_itn=itn, output_timestamp=True)[0]
        except IndexError:  # funasr's own alignment fails (a piece re-encodes to several ids): no word timing
            assert (got["words"], got["timestamps"]) == ([], []), (i, language, itn)
            continue
        assert got["words"] == ref.get("words", []), (i, language, itn)
        ref_times = ref.get("timestamp", [])
        assert len(got["timestamps"]) == len(ref_times)
        for (b, e), (rb, re_) in zip(got["timestamps"], ref_times):
            assert abs(b - rb) <= 60 and abs(e - re_) <= 60, (got["timestamps"], ref_times)
        timed += bool(ref_times)
        exact += got["timestamps"] == ref_times
    assert timed >= 4 and exact >= timed - 1, (timed, exact)


def test_concurrent_segments_batch_like_alone(sv_client):
    """Segments of different lengths batched together answer as each does alone."""
    wavs = [segment(i) for i in range(4)]
    alone = [sv_client.sensevoice_segment(w) for w in wavs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(sv_client.sensevoice_segment, wavs))
    assert [a["token_ids"] for a in alone] == [t["token_ids"] for t in together]


def test_stage_rejects_bad_input(sv_client):
    with pytest.raises(AsrError) as e:
        sv_client.sensevoice_segment(segment(0), language="fr")
    assert e.value.status == 400 and "LANGUAGE" in e.value.message
    with pytest.raises(AsrError) as e:
        sv_client.sensevoice_segment(np.zeros(10, np.float32))
    assert e.value.status == 400


def test_pipeline_with_sensevoice(sv_client):
    """The whole-file path: the same VAD, each segment on `sensevoice`; segment-level sentences with the
    detected language, emotion and events; the text is the segments' texts joined."""
    samples = compose(0.3, SENTENCES[0], 1.5, SENTENCES[1], 1.5, SENTENCES[2], 0.3).astype(np.float32)
    result = sv_client.transcribe(samples, TranscribeOptions(model="sensevoice", language="auto"))
    assert result["model"] == "sensevoice"
    vad = sv_client.vad_segments(samples)
    assert [list(s) for s in result["vad_segments"]] == [list(s) for s in vad]
    per_segment = [sv_client.sensevoice_segment(samples[b * 16:e * 16], "auto", True) for b, e in vad]
    texts = [p["text"] for p in per_segment if p["text"]]
    assert [s["text"] for s in result["sentences"]] == texts
    timed = [sv_client.sensevoice_segment(samples[b * 16:e * 16], "auto", True, timestamps=True) for b, e in vad]
    spoken = [(seg, p, t) for seg, p, t in zip(vad, per_segment, timed) if p["text"]]
    for s, (seg, p, t) in zip(result["sentences"], spoken):
        assert (s["language"], s["emotion"], s["events"]) == (p["language"], p["emotion"], p["events"])
        # word timing: the stage's aligned words (no tags, no lone marks), moved to the segment's start
        words = [(w.removeprefix("▁"), [b + seg[0], e + seg[0]]) for w, (b, e) in zip(t["words"], t["timestamps"])]
        words = [(w, ts) for w, ts in words if "<|" not in w and any(ch.isalnum() for ch in w)]
        if words:
            assert (s["words"], s["timestamps"]) == ([w for w, _ in words], [ts for _, ts in words])
            assert all(seg[0] <= b <= e <= seg[1] for b, e in s["timestamps"])
        else:
            assert (s["words"], s["timestamps"]) == ([s["text"]], [list(seg)])  # segment-level timing
    assert any(len(s["words"]) > 1 for s in result["sentences"])
    no_times = sv_client.transcribe(samples, TranscribeOptions(model="sensevoice", language="auto", timestamps=False))
    assert [s["text"] for s in no_times["sentences"]] == texts and "words" not in no_times["sentences"][0]
    assert result["language"] in {p["language"] for p in per_segment}
    # the default model is still Paraformer
    assert sv_client.transcribe(samples).get("model", "paraformer") == "paraformer"


def test_pipeline_sensevoice_rejects_hotwords_and_bad_language(sv_client):
    wav = segment(1)
    with pytest.raises(AsrError) as e:
        sv_client.transcribe(wav, TranscribeOptions(model="sensevoice", hotwords=["阿里巴巴"]))
    assert e.value.status == 400 and "hotwords" in e.value.message
    with pytest.raises(AsrError) as e:
        sv_client.transcribe(wav, TranscribeOptions(model="sensevoice", language="klingon"))
    assert e.value.status == 400 and "language" in e.value.message
    with pytest.raises(AsrError) as e:
        sv_client.transcribe(wav, TranscribeOptions(model="whisper"))
    assert e.value.status == 400 and "model" in e.value.message


def test_not_exported_is_model_not_found(client):
    """The session repository has no sensevoice export: the model loads and answers NOT_FOUND."""
    with pytest.raises(AsrError) as e:
        client.sensevoice_segment(segment(0))
    assert (e.value.status, e.value.code) == (404, "model_not_found")
    with pytest.raises(AsrError) as e:  # the whole-file path names it as the caller's error
        client.transcribe(segment(0), TranscribeOptions(model="sensevoice"))
    assert e.value.status == 400 and "not exported" in e.value.message


# ---------------------------------------------------------------- the OpenAI API (official SDK) with model=sensevoice-small

@pytest.fixture(scope="module")
def sv_frontend(sv_triton, tmp_path_factory):
    from tests.conftest import start_frontend

    handle = start_frontend(sv_triton.grpc_url, tmp_path_factory.mktemp("sv-frontend-logs"))
    yield handle
    handle.stop()


def sdk(base_url: str):
    from openai import OpenAI

    return OpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory):
    from tests.synth import write_wav

    samples = compose(0.3, SENTENCES[0], 1.5, SENTENCES[1], 1.5, SENTENCES[2], 0.3)
    return samples.astype(np.float32), write_wav(tmp_path_factory.mktemp("sv-audio") / "dialogue.wav", samples).read_bytes()


def test_openai_sensevoice_verbose_json(sv_frontend, sv_client, dialogue):
    samples, wav = dialogue
    with sdk(sv_frontend.base_url) as oai:
        out = oai.audio.transcriptions.create(model="sensevoice-small", file=("d.wav", wav), response_format="verbose_json")
    ref = sv_client.transcribe(samples, TranscribeOptions(model="sensevoice"))
    assert out.text == ref["text"] and [s.text for s in out.segments] == [s["text"] for s in ref["sentences"]]
    names = {"zh": "chinese", "en": "english", "yue": "cantonese", "ja": "japanese", "ko": "korean"}
    for seg, s in zip(out.segments, ref["sentences"]):
        extra = seg.model_extra or {}
        assert extra.get("language") == names.get(s["language"], "")
        assert extra.get("emotion") == s["emotion"] and extra.get("events") == s["events"]
    if ref["language"] in names:
        assert out.language == names[ref["language"]]


def test_openai_sensevoice_word_timestamps(sv_frontend, sv_client, dialogue):
    """timestamp_granularities[]=word with model=sensevoice-small: SenseVoice's aligned words (the
    pipeline's), in seconds; the segments keep SenseVoice's own text."""
    samples, wav = dialogue
    with sdk(sv_frontend.base_url) as oai:
        out = oai.audio.transcriptions.create(model="sensevoice-small", file=("d.wav", wav), response_format="verbose_json",
                                              timestamp_granularities=["word", "segment"])
    ref = sv_client.transcribe(samples, TranscribeOptions(model="sensevoice"))
    want = [(w, b / 1000, e / 1000) for s in ref["sentences"] for w, (b, e) in zip(s["words"], s["timestamps"])]
    assert [(w.word, w.start, w.end) for w in out.words] == want
    assert len(out.words) > len(out.segments) and [s.text for s in out.segments] == [s["text"] for s in ref["sentences"]]


def test_openai_sensevoice_forced_language_and_default_model(sv_frontend, sv_client, dialogue):
    samples, wav = dialogue
    with sdk(sv_frontend.base_url) as oai:
        forced = oai.audio.transcriptions.create(model="sensevoice-small", file=("d.wav", wav), language="en")
        default = oai.audio.transcriptions.create(model="whisper-1", file=("d.wav", wav))
    assert forced.text == sv_client.transcribe(samples, TranscribeOptions(model="sensevoice", language="en"))["text"]
    assert default.text == sv_client.transcribe(samples)["text"]  # Paraformer stays the default


def test_openai_sensevoice_hotwords_400(sv_frontend, dialogue):
    import openai

    with sdk(sv_frontend.base_url) as oai, pytest.raises(openai.BadRequestError) as e:
        oai.audio.transcriptions.create(model="sensevoice-small", file=("d.wav", dialogue[1]), prompt="阿里巴巴 达摩院")
    assert e.value.body["code"] == "unsupported_hotwords" and "hotword" in e.value.body["message"]


def test_models_list_what_is_exported(sv_frontend, frontend):
    import openai

    with sdk(sv_frontend.base_url) as oai:
        ids = [m.id for m in oai.models.list().data]
        assert oai.models.retrieve("sensevoice-small").id == "sensevoice-small"
    assert ids[0] == "paraformer-zh" and "sensevoice-small" in ids and "whisper-1" in ids
    with sdk(frontend.base_url) as oai:  # the session repository: no sensevoice export
        assert "sensevoice-small" not in [m.id for m in oai.models.list().data]
        with pytest.raises(openai.NotFoundError) as e:
            oai.audio.transcriptions.create(model="sensevoice-small", file=("d.wav", b"RIFF"))
        assert e.value.body["code"] == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            oai.models.retrieve("sensevoice-small")
    import urllib.request

    with urllib.request.urlopen(frontend.base_url + "/ready", timeout=10) as r:  # ready without sensevoice
        assert r.status == 200


# ---------------------------------------------------------------- funasr-triton verify

def _verify(sv_triton, repo, cli_env, paths, *extra):
    import json

    out = subprocess.run(["funasr-triton", "--log-level", "WARNING", "verify", "--json", "--url", sv_triton.grpc_url,
                          "--repository", str(repo), *extra, *map(str, paths)],
                         capture_output=True, text=True, env=cli_env, timeout=1200)
    return out, json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from tests.synth import write_wav

    d = tmp_path_factory.mktemp("sv-verify")
    return [write_wav(d / "two.wav", compose(SENTENCES[1], 1.5, SENTENCES[2])),
            write_wav(d / "one.wav", compose(0.5, SENTENCES[3], 0.5))]


def test_verify_sensevoice_agrees_with_automodel(sv_triton, sv_repository, cli_env, clips):
    out, report = _verify(sv_triton, sv_repository, cli_env, clips)
    failures = {k: v["failures"] for k, v in report.items() if v["failures"]}
    assert out.returncode == 0 and not failures, failures or out.stderr[-2000:]
    # every VAD segment twice (use_itn off/on) plus the whole-file check per file
    assert report["sensevoice"]["checks"] >= 2 * 3 + len(clips)


def test_verify_sensevoice_detects_other_weights(sv_triton, sv_repository, cli_env, clips, tmp_path):
    from funasr_triton_export.testmodels.sensevoice import build

    other = build(tmp_path / "other_sv", seed=7)
    out, report = _verify(sv_triton, sv_repository, cli_env, clips[:1], "--model-dir", f"sensevoice={other}")
    assert out.returncode == 1 and report["sensevoice"]["failures"]
    assert "vs AutoModel" in report["sensevoice"]["failures"][0]


# ---------------------------------------------------------------- FunASR WebSocket protocol: model + svs_lang / svs_itn

def test_funasr_ws_offline_with_sensevoice(sv_frontend, sv_client, dialogue):
    from tests.test_funasr_ws import pcm16, session, ws_url

    samples, _ = dialogue
    (msgs,) = session(ws_url(sv_frontend), ({"mode": "offline", "model": "sensevoice-small", "svs_lang": "en",
                                              "svs_itn": True}, pcm16(samples)))
    assert len(msgs) == 1 and msgs[0]["is_final"]
    ref = sv_client.transcribe(samples, TranscribeOptions(model="sensevoice", language="en", punctuation=True))
    assert msgs[0]["text"] == ref["text"]


def test_funasr_ws_sensevoice_streaming_refused(sv_frontend):
    from tests.test_funasr_ws import failure, ws_url

    import json

    message, code = failure(ws_url(sv_frontend), json.dumps({"mode": "2pass", "model": "sensevoice-small",
                                                             "wav_format": "pcm", "is_speaking": True}))
    assert "offline mode only" in json.dumps(message, ensure_ascii=False)


# ---------------------------------------------------------------- Aliyun NLS REST: model / language extensions

def test_aliyun_rest_with_sensevoice(sv_frontend, frontend, sv_client, dialogue):
    import httpx

    samples, wav = dialogue
    params = {"format": "wav", "model": "sensevoice-small", "language": "zh", "enable_punctuation_prediction": "true"}
    with httpx.Client(base_url=sv_frontend.base_url, timeout=120) as c:
        ok = c.post("/stream/v1/asr", params=params, content=wav,
                    headers={"Content-Type": "application/octet-stream"}).json()
        hot = c.post("/stream/v1/asr", params={**params, "vocabulary_id": "阿里巴巴 20"}, content=wav,
                     headers={"Content-Type": "application/octet-stream"})
        timed = c.post("/stream/v1/asr", params={**params, "enable_words": "true"}, content=wav,
                       headers={"Content-Type": "application/octet-stream"}).json()
    assert ok["status"] == 20000000
    ref = sv_client.transcribe(samples, TranscribeOptions(model="sensevoice", language="zh"))
    assert ok["result"] == ref["text"]
    # enable_words: SenseVoice's aligned words with their times (ms), as the pipeline has them
    assert [[(w["text"], w["begin_time"], w["end_time"]) for w in s["words"]] for s in timed["sentences"]] == \
        [[(w, b, e) for w, (b, e) in zip(s["words"], s["timestamps"])] for s in ref["sentences"]]
    assert hot.status_code == 400 and "hotword" in hot.json()["message"]
    with httpx.Client(base_url=frontend.base_url, timeout=120) as c:  # no sensevoice export there
        missing = c.post("/stream/v1/asr", params=params, content=wav, headers={"Content-Type": "application/octet-stream"})
    assert missing.status_code == 404 and "sensevoice" in missing.json()["message"]


# ---------------------------------------------------------------- seed 003 POST /transcribe: model + lang

def test_seed_transcribe_with_sensevoice(sv_frontend, frontend, sv_client, dialogue):
    import httpx

    samples, wav = dialogue
    files = [("files", ("a.wav", wav, "audio/wav")), ("files", ("b.wav", wav, "audio/wav"))]
    with httpx.Client(base_url=sv_frontend.base_url, timeout=180) as c:
        ok = c.post("/transcribe", data={"model": "sensevoice-small", "lang": "zh", "keys": "a,b"}, files=files)
        ja_default = c.post("/transcribe", data={"lang": "ja"}, files=files[:1])
        ja_sv = c.post("/transcribe", data={"model": "sensevoice-small", "lang": "ja"}, files=files[:1])
    assert ok.status_code == 200, ok.text
    ref = sv_client.transcribe(samples, TranscribeOptions(model="sensevoice", language="zh"))
    assert [(r["key"], r["status"], r["text"]) for r in ok.json()["results"]] == [("a", "success", ref["text"]),
                                                                                  ("b", "success", ref["text"])]
    assert ok.json()["results"][0]["language"] == ref["language"]
    assert ja_default.status_code == 400 and "lang" in ja_default.json()["message"]  # Paraformer: auto/zh/en
    assert ja_sv.status_code == 200 and ja_sv.json()["results"][0]["status"] == "success"
    assert ja_sv.json()["results"][0]["text"] == sv_client.transcribe(
        samples, TranscribeOptions(model="sensevoice", language="ja"))["text"]
    with httpx.Client(base_url=frontend.base_url, timeout=120) as c:  # no sensevoice export there
        missing = c.post("/transcribe", data={"model": "sensevoice-small"}, files=files[:1])
    assert missing.status_code == 404 and "sensevoice" in missing.json()["message"]
    assert missing.json()["results"] == []
