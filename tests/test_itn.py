"""Inverse text normalization (ITN): the correctness table that chose the package, the served `itn`
model, ITN inside long-file jobs (sentences, words, streamed text) and each API's flag reaching Triton.

The table is the record of how the candidates behave on the cases that matter for ASR output: each
row has what a user wants, and each candidate's actual output where it differs. The chosen build
(WeTextProcessing, grammar flags of funasr_triton_export.exporters.itn.GRAMMAR) must keep every idiom.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from funasr_triton.contract import TranscribeOptions

ROOT = Path(__file__).resolve().parents[1]
from funasr_triton_models.sentences import itn_sentence, split_sentences

CHOSEN = "WeTextProcessing"
CANDIDATES = [CHOSEN, "WeTextProcessing enable_0_to_9", "wetext", "wetext enable_0_to_9"]
# (kind, spoken, wanted, {candidate: actual output where it differs from `wanted`})
TABLE = [
    ("date", "二零二四年三月五日", "2024年3月5日", {c: "2024/03/05" for c in CANDIDATES}),
    ("date", "三月五号开会", "3月5号开会", {c: "03/05开会" for c in CANDIDATES}),
    ("time", "明天下午三点开会", "明天下午3点开会", {CHOSEN: "明天下午三点开会", "wetext": "明天下午三点开会",
                                                  "wetext enable_0_to_9": ""}),
    ("time", "下午三点半", "下午3点半", {c: "3:30p.m." for c in CANDIDATES}),
    ("time", "十点二十分", "10:20", {}),
    ("money", "一百二十三元", "123元", {c: "¥123" for c in CANDIDATES}),
    ("money", "五十块钱", "50块钱", {}),
    ("percent", "百分之六点三", "6.3%", {}),
    ("percent", "百分之五十", "50%", {}),
    ("phone", "幺三五零幺二三四五六七", "13501234567", {}),
    ("ordinal", "第三名", "第3名", {CHOSEN: "第三名", "wetext": "第三名", "wetext enable_0_to_9": ""}),
    ("count", "三个人", "3个人", {CHOSEN: "三个人", "wetext": "三个人", "wetext enable_0_to_9": ""}),
    ("number", "一千二百三十四", "1234", {}),
    ("decimal", "三点一四", "3.14", {}),
    ("idiom", "一心一意", "一心一意", {"WeTextProcessing enable_0_to_9": "1心1意", "wetext enable_0_to_9": ""}),
    ("idiom", "一个", "一个", {}),
    ("idiom", "一个苹果", "一个苹果", {}),
    ("idiom", "三心二意", "三心二意", {}),
    ("idiom", "一五一十", "一五一十", {}),
]


@pytest.fixture(scope="module")
def normalizers(tmp_path_factory):
    pytest.importorskip("pynini")
    pytest.importorskip("wetext")
    from wetext import Normalizer

    from funasr_triton_export.exporters.itn import build_normalizer

    root = tmp_path_factory.mktemp("itn-fsts")
    return {
        CHOSEN: build_normalizer(root / "chosen", overwrite=True).normalize,
        "WeTextProcessing enable_0_to_9": build_normalizer(root / "0to9", overwrite=True, enable_0_to_9=True).normalize,
        "wetext": Normalizer(lang="zh", operator="itn").normalize,
        "wetext enable_0_to_9": Normalizer(lang="zh", operator="itn", enable_0_to_9=True).normalize,
    }


@pytest.mark.parametrize("candidate", CANDIDATES)
def test_correctness_table(normalizers, candidate):
    got = {spoken: normalizers[candidate](spoken) for _, spoken, _, _ in TABLE}
    expected = {spoken: actual.get(candidate, wanted) for _, spoken, wanted, actual in TABLE}
    assert got == expected


def test_the_chosen_build_keeps_idioms_and_scores_best_of_those_that_do(normalizers):
    def score(candidate):
        return sum(actual.get(candidate, wanted) == wanted for _, _, wanted, actual in TABLE)

    def keeps_idioms(candidate):
        return all(normalizers[candidate](spoken) == spoken for kind, spoken, _, _ in TABLE if kind == "idiom")

    assert keeps_idioms(CHOSEN)
    assert score(CHOSEN) == max(score(c) for c in CANDIDATES if keeps_idioms(c))
    # no candidate that keeps the idioms ever returns an empty string for a non-empty input
    assert all(normalizers[CHOSEN](spoken) for _, spoken, _, _ in TABLE)


# ---------------------------------------------------------------- alignment (pure python)

def _sentence(words, text, step=100):
    return {"start_ms": 0, "end_ms": step * len(words), "text": text, "words": list(words),
            "timestamps": [[i * step, (i + 1) * step] for i in range(len(words))]}


def test_itn_sentence_keeps_unchanged_words_and_merges_rewritten_spans():
    s = _sentence(list("明天下午三点开会百分之六点三"), "明天下午三点开会，百分之六点三。")
    out = itn_sentence(s, "明天下午3点开会，6.3%。")
    assert out["text"] == "明天下午3点开会，6.3%。"
    assert (out["start_ms"], out["end_ms"]) == (s["start_ms"], s["end_ms"])
    assert out["words"] == ["明", "天", "下", "午", "3", "点", "开", "会", "6.3%"]
    assert out["timestamps"][:4] == s["timestamps"][:4] and out["timestamps"][5:8] == s["timestamps"][5:8]
    assert out["timestamps"][4] == s["timestamps"][4]  # 三 -> 3: one word, its own time
    assert out["timestamps"][8] == [s["timestamps"][8][0], s["timestamps"][13][1]]  # 百分之六点三 -> 6.3%


def test_itn_sentence_phone_number_and_latin_words():
    s = _sentence(list("电话幺三五零幺二三四五六七"), "电话幺三五零幺二三四五六七")
    out = itn_sentence(s, "电话13501234567")
    assert out["words"] == ["电", "话", "13501234567"]
    assert out["timestamps"] == [[0, 100], [100, 200], [200, 1300]]
    s = _sentence(["ok", "三", "点", "一", "四", "thanks"], "ok 三点一四, thanks.")
    out = itn_sentence(s, "ok 3.14, thanks.")
    assert out["words"] == ["ok", "3.14", "thanks"]
    assert out["timestamps"] == [[0, 100], [100, 500], [500, 600]]


def test_itn_sentence_unchanged_and_without_words():
    s = _sentence(list("一心一意"), "一心一意。")
    assert itn_sentence(s, "一心一意。") == s
    bare = {"start_ms": 5, "end_ms": 9, "text": "三点一四"}
    assert itn_sentence(bare, "3.14") == {"start_ms": 5, "end_ms": 9, "text": "3.14"}


def test_split_sentences_concatenates_back():
    text = "第一句。第二句？！ And the third. 还没完"
    done, rest = split_sentences(text)
    assert done == ["第一句。", "第二句？！", " And the third."]
    assert rest == " 还没完"
    assert "".join(done) + rest == text


# ---------------------------------------------------------------- LongFileJob with crafted recognitions

def _job_module():
    from funasr_triton_models.longfile import Backend, JobOptions, LongFileJob
    return Backend, JobOptions, LongFileJob


def _fake_backend(normalize, spoken: list[str]):
    """recognize: the i-th segment says spoken[i] (one word per character, 100 ms each);
    punctuate: commits each piece at once with a full stop after it; itn: the real grammars."""
    Backend, _, _ = _job_module()
    calls = iter(spoken)

    async def recognize(audio, hotwords):
        text = next(calls)
        return {"text": text, "words": list(text), "timestamps": [[i * 100, (i + 1) * 100] for i in range(len(text))]}

    async def punctuate(piece, state, final):
        words = list(piece.strip())
        marks = [""] * len(words)
        if marks:
            marks[-1] = "。"
        return {"text": piece + "。" if words else "", "words": words, "marks": marks, "state": ""}

    async def embed(window):
        return np.zeros(192, np.float32)

    async def itn(texts):
        return [normalize(t) for t in texts]

    return Backend(recognize=recognize, punctuate=punctuate, embed=embed, itn=itn)


def _speech_with_pauses(n: int) -> np.ndarray:
    from tests.synth import SENTENCES, compose

    parts = [0.3]
    for i in range(n):
        parts += [SENTENCES[i % len(SENTENCES)], 1.5]
    return compose(*parts)


@pytest.mark.parametrize("punctuation", [True, False])
def test_job_with_itn_keeps_sentences_words_and_text_events_consistent(repository, normalizers, punctuation):
    from funasr_triton_models.fsmn_vad import FsmnVad

    _, JobOptions, LongFileJob = _job_module()
    wav = _speech_with_pauses(3)
    vad = FsmnVad(repository / "vad" / "1")
    n = len(vad.segments(wav))
    spoken = ["明天下午三点开会", "百分之六点三", "电话幺三五零幺二三四五六七", "一心一意", "三点一四"] * 4
    options = JobOptions.parse({"itn": True, "punctuation": punctuation}, 8, 10)
    assert options.itn

    async def run():
        job = LongFileJob(vad, options, _fake_backend(normalizers[CHOSEN], spoken))
        events = []
        for i in range(0, wav.shape[0], 16000):
            await job.feed(wav[i:i + 16000])
            events += await job.take()
        await job.finish()
        while not job.done:
            events += await job.take(1.0)
        events += await job.take()
        return job.result, events

    result, events = asyncio.run(run())
    sentences = result["sentences"]
    assert sentences and len(sentences) == len(result["vad_segments"]) == n
    texts = [e["text"] for e in events if e["type"] == "text"]
    assert "".join(texts) == result["text"]
    assert "".join(s["text"] for s in sentences) == result["text"]
    mark = "。" if punctuation else ""
    wanted = ["明天下午三点开会", "6.3%", "电话13501234567", "一心一意", "3.14"]
    assert [s["text"] for s in sentences] == [w + mark for w in wanted[:len(sentences)]]
    for s in sentences:
        assert "".join(s["words"]) == s["text"].rstrip("。")
        assert s["timestamps"][0][0] == s["start_ms"] and s["timestamps"][-1][1] == s["end_ms"]
        assert all(b <= e for b, e in s["timestamps"])
        assert all(e1 <= b2 for (_, e1), (b2, _) in zip(s["timestamps"], s["timestamps"][1:]))
    assert "三" in result["raw_text"]  # the raw recognition stays as it was


def test_job_asking_for_itn_without_an_itn_backend_is_an_input_error(repository):
    from funasr_triton_models.fsmn_vad import FsmnVad

    Backend, JobOptions, LongFileJob = _job_module()
    from funasr_triton_models.longfile import JobInputError

    backend = Backend(recognize=None, punctuate=None, embed=None)
    with pytest.raises(JobInputError, match="itn"):
        LongFileJob(FsmnVad(repository / "vad" / "1"), JobOptions(itn=True), backend)
    with pytest.raises(JobInputError, match="itn"):
        JobOptions.parse({"itn": "yes"}, 8, 10)


# ---------------------------------------------------------------- the served model and the jobs

def test_served_itn_model(client):
    texts = ["百分之六点三", "一心一意", "  三点一四 ", "", "幺三五零幺二三四五六七", "hello 世界"]
    assert client.normalize(texts) == ["6.3%", "一心一意", "  3.14 ", "", "13501234567", "hello 世界"]


def test_served_itn_model_answers_each_request_of_a_batch(triton):
    from concurrent.futures import ThreadPoolExecutor

    from funasr_triton.errors import AsrError
    from funasr_triton.triton_client import TritonAsrClient

    def one(i):
        c = TritonAsrClient(triton.grpc_url, timeout_s=60)
        try:
            if i % 4 == 3:
                with pytest.raises(AsrError) as e:
                    c.normalize(["三" * 5000])
                return e.value.status
            return c.normalize([f"百分之{'一二三四五六七八九'[i % 9]}十"])[0]
        finally:
            c.close()

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(16)))
    for i, g in enumerate(got):
        assert g == (400 if i % 4 == 3 else f"{i % 9 + 1}0%")


def test_pipeline_and_transcribe_with_itn(client, triton):
    samples = _speech_with_pauses(3)
    before = _itn_count(client)
    result = client.transcribe(samples, TranscribeOptions(itn=True))
    assert _itn_count(client) > before
    assert result["sentences"]
    for s in result["sentences"]:
        assert s["timestamps"][0][0] >= s["start_ms"] and s["timestamps"][-1][1] <= s["end_ms"]
    plain = client.transcribe(samples, TranscribeOptions())
    assert result["raw_text"] == plain["raw_text"]
    # the text is the punctuated text's sentences, each ITN'd (the sentences' own texts are built from the
    # ASR words, as without ITN, so with this random-weight model they may differ from it around <unk>)
    assert result["text"] == "".join(client.normalize(_split_all(plain["text"])))
    assert len(result["sentences"]) == len(plain["sentences"])

    events = job_events(triton, samples, TranscribeOptions(itn=True))
    final = next(e["result"] for e in events if e["type"] == "result")
    assert "".join(e["text"] for e in events if e["type"] == "text") == final["text"] == result["text"]
    assert final["sentences"] == result["sentences"]


def job_events(triton, wav: np.ndarray, options: TranscribeOptions, piece: int = 32000) -> list[dict]:
    """Every event of one `transcribe` job fed `piece` samples at a time, up to its result."""
    from funasr_triton.triton_client import AsyncTritonAsrClient

    async def main():
        c = AsyncTritonAsrClient(triton.grpc_url, timeout_s=300)
        try:
            job = c.open_job(options)
            events = []
            for i in range(0, wav.shape[0], piece):
                events += await job.send(wav[i:i + piece], final=i + piece >= wav.shape[0])
            while not any(e["type"] == "result" for e in events):
                events += await job.poll()
            await job.close()
            return events
        finally:
            await c.close()
    return asyncio.run(main())


def _split_all(text: str) -> list[str]:
    done, rest = split_sentences(text)
    return done + ([rest] if rest else [])


def _itn_count(client) -> int:
    return int(client.statistics("itn")["model_stats"][0].get("inference_count", 0))


# ---------------------------------------------------------------- each API's flag

def test_job_config_and_pipeline_inputs_carry_the_flag():
    from funasr_triton.triton_client import build_inputs

    assert "itn" not in TranscribeOptions().job_config()  # off: the CONFIG is what it was
    assert TranscribeOptions(itn=True).job_config()["itn"] is True
    names = [i.name() for i in build_inputs(np.zeros(160, np.float32), TranscribeOptions(itn=True))]
    assert "ENABLE_ITN" in names
    assert "ENABLE_ITN" not in [i.name() for i in build_inputs(np.zeros(160, np.float32), TranscribeOptions())]


def _asks_itn(client, send) -> bool:
    before = _itn_count(client)
    send()
    return _itn_count(client) > before


def test_each_api_flag_reaches_triton(frontend, client, speech_wav):
    import httpx
    import websockets

    data = speech_wav.read_bytes()
    base = frontend.base_url

    def aliyun(on):
        r = httpx.post(f"{base}/stream/v1/asr", params={"format": "wav", "enable_punctuation_prediction": "true",
                                                         "enable_inverse_text_normalization": str(on).lower()},
                       content=data, timeout=120)
        assert r.status_code == 200, r.text

    def openai(on):
        fields = {"model": "whisper-1"} | ({"itn": str(on).lower()} if on is not None else {})
        r = httpx.post(f"{base}/v1/audio/transcriptions", data=fields, files={"file": ("s.wav", data)}, timeout=120)
        assert r.status_code == 200, r.text

    def seed(on):
        r = httpx.post(f"{base}/api", data={"itn": str(on).lower(), "enable_speaker_diarization": "false"},
                       files={"audio": ("s.wav", data)}, timeout=120)
        assert r.status_code == 200, r.text

    def funasr_ws(on):
        async def main():
            url = base.replace("http://", "ws://") + "/ws/v1/funasr"
            async with websockets.connect(url, subprotocols=["binary"], max_size=None) as ws:
                await ws.send(json.dumps({"mode": "offline", "wav_name": "s", "wav_format": "wav", "audio_fs": 16000,
                                          "is_speaking": True, **({"itn": on} if on is not None else {})}))
                await ws.send(data)
                await ws.send(json.dumps({"is_speaking": False}))
                while not json.loads(await asyncio.wait_for(ws.recv(), 120)).get("is_final"):
                    pass
        asyncio.run(main())

    for name, send in (("aliyun", aliyun), ("openai", openai), ("seed", seed), ("funasr_ws", funasr_ws)):
        assert _asks_itn(client, lambda: send(True)), name
        assert not _asks_itn(client, lambda: send(False)), name
    assert not _asks_itn(client, lambda: openai(None))  # settings.itn.default is off
    assert _asks_itn(client, lambda: funasr_ws(None))  # FunASR's default is on
