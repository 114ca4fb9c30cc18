"""Log-probabilities and confidence: the Paraformer graph's `token_logprobs` against FunASR's own decoder,
`asr`'s WORD_LOGPROBS, LongFileJob's `logprobs` option (segments, sentences, ITN merging), OpenAI
`include[]=logprobs` / `avg_logprob` through the official SDK (json, verbose_json, stream deltas) and the
Aliyun REST result's `confidence`."""
from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest
from openai.types.audio import Transcription, TranscriptionVerbose

from funasr_triton.contract import TranscribeOptions
from tests.test_itn import job_events
from tests.test_openai_api import sdk
from tests.synth import SENTENCES, compose

from funasr_triton_models.asr_text import word_logprobs
from funasr_triton_models.features import AsrFrontend
from funasr_triton_models.hotwords import HotwordTokenizer
from funasr_triton_models.sentences import itn_sentence


# ---------------------------------------------------------------- pure parts

def test_word_logprobs_sum_each_words_tokens():
    assert word_logprobs(["今", "天"], ["今", "天"], [-0.1, -0.2]) == pytest.approx([-0.1, -0.2])
    # subword pieces ("@@" continues) add up into their word; abbreviations are upper-cased words
    assert word_logprobs(["hello", "world"], ["hel@@", "lo", "world"], [-1.0, -2.0, -0.5]) == pytest.approx([-3.0, -0.5])
    assert word_logprobs(["ABC", "好"], ["a", "b", "c", "好"], [-1.0, -1.0, -1.0, -0.25]) == pytest.approx([-3.0, -0.25])
    assert word_logprobs([], [], []) == []
    # a token that made no word adds to none
    assert word_logprobs(["好"], ["</s>", "好"], [-5.0, -1.0]) == pytest.approx([-1.0])


def test_itn_merges_the_logprobs_of_a_rewritten_run():
    words = list("涨了三点一四")
    s = {"start_ms": 0, "end_ms": 600, "text": "涨了三点一四。", "words": words,
         "timestamps": [[i * 100, (i + 1) * 100] for i in range(6)],
         "logprobs": [{"token": w, "logprob": -0.5 * (i + 1)} for i, w in enumerate(words)]}
    out = itn_sentence(s, "涨了3.14。")
    assert out["words"] == ["涨", "了", "3.14"]
    assert out["logprobs"] == [{"token": "涨", "logprob": -0.5}, {"token": "了", "logprob": -1.0},
                               {"token": "3.14", "logprob": -9.0}]


# ---------------------------------------------------------------- the graph against FunASR's decoder

@pytest.fixture(scope="module")
def automodel(repository):
    from funasr_triton_export.verify import _automodel, _silence_funasr, _source_dirs

    model = _automodel(_source_dirs(repository, {})["asr"])
    _silence_funasr()
    return model


def _graph_run(repository, feats: np.ndarray):
    import onnxruntime as ort

    fe_dir = repository / "feature_extractor" / "1"
    session = ort.InferenceSession(str(repository / "paraformer" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids, lengths = HotwordTokenizer.from_dir(fe_dir)([])
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {
        "speech": feats[None], "speech_lengths": np.array([len(feats)], np.int32),
        "hotword_ids": ids[None], "hotword_lengths": lengths[None]})))
    num = int(out["token_num"][0])
    return out["token_ids"][0, :num], out["token_logprobs"][0, :num]


def test_graph_token_logprobs_are_funasrs_decoder_probabilities(repository, automodel):
    """Without hotwords: FunASR's SeACo-Paraformer inference (encode -> CIF -> `_seaco_decode_with_ASF`,
    which is the decoder's log-softmax when there are no hotwords): the graph's token is its argmax and
    the graph's token log-probability its maximum."""
    import torch

    frontend = AsrFrontend.from_dir(repository / "feature_extractor" / "1")
    m = automodel.model
    for i in (0, 3):
        feats = frontend(compose(0.2, SENTENCES[i], 0.3))
        ids, logprobs = _graph_run(repository, feats)
        assert len(ids) > 0
        with torch.no_grad():
            batch = torch.from_numpy(feats[None].astype(np.float32))
            enc, enc_lens = m.encode(batch, torch.tensor([len(feats)]))
            embeds, token_num = m.calc_predictor(enc, enc_lens)[:2]
            pred = m._seaco_decode_with_ASF(enc, enc_lens, embeds, token_num.round().long(), hw_list=None)
        ref = pred[0, :len(ids)]
        assert np.array_equal(ref.argmax(-1).numpy(), ids)
        assert np.allclose(ref.max(-1).values.numpy(), logprobs, atol=1e-3)


def test_an_asr_export_made_before_token_logprobs_is_exported_again(repository, tmp_path):
    """`export` reuses weights only when their MANIFEST entry records the graph outputs the exporter writes
    now: a repository exported before `token_logprobs` existed gets the asr stage exported again."""
    from funasr_triton_export.repository import STAGE_GRAPH_OUTPUTS, reusable_stages

    outputs = STAGE_GRAPH_OUTPUTS["asr"]
    assert "token_logprobs" in outputs
    assert json.loads((repository / "MANIFEST.json").read_text())["stages"]["asr"]["graph_outputs"] == outputs
    request = {"source": "test", "model": "", "model_dir": None, "quantize": False}
    weight = tmp_path / "paraformer" / "1" / "model.onnx"
    weight.parent.mkdir(parents=True)
    weight.write_bytes(b"0" * 10)
    for recorded, reused in ((None, []), (outputs[:-1], []), (outputs, ["asr"])):
        entry = {"files": {"paraformer/1/model.onnx": {"bytes": 10}}, "request": request}
        if recorded is not None:
            entry["graph_outputs"] = recorded
        (tmp_path / "MANIFEST.json").write_text(json.dumps({"stages": {"asr": entry}}))
        assert reusable_stages(tmp_path, {"asr": request}) == reused


# ---------------------------------------------------------------- served: asr and LongFileJob

def test_asr_word_logprobs(client, repository):
    wav = compose(0.2, SENTENCES[1], 0.3)
    r = client.recognize_segment(wav)
    assert r["words"] and len(r["logprobs"]) == len(r["words"])
    assert all(lp <= 0 and math.isfinite(lp) for lp in r["logprobs"])
    # the words' sum is the sum of the graph's token log-probabilities (the special tokens aside)
    ids, logprobs = _graph_run(repository, AsrFrontend.from_dir(repository / "feature_extractor" / "1")(wav))
    keep = [lp for i, lp in zip(ids, logprobs) if int(i) not in (0, 1, 2)]
    assert sum(r["logprobs"]) == pytest.approx(sum(keep), abs=1e-3)


def test_transcribe_job_carries_word_logprobs(triton, client):
    wav = compose(0.3, SENTENCES[0], 1.5, SENTENCES[2], 1.0)
    events = job_events(triton, wav, TranscribeOptions(logprobs=True))
    segments = [e for e in events if e["type"] == "segment"]
    result = next(e["result"] for e in events if e["type"] == "result")
    assert segments and all("logprobs" in s for s in segments)
    for seg in segments:  # each segment's logprobs are asr's for that segment
        r = client.recognize_segment(wav[seg["start_ms"] * 16:seg["end_ms"] * 16])
        assert [x["token"] for x in seg["logprobs"]] == r["words"]
        assert [x["logprob"] for x in seg["logprobs"]] == pytest.approx(r["logprobs"], abs=1e-4)
    # the sentences split the same words, each with its own
    flat = [x for s in segments for x in s["logprobs"]]
    assert [x for s in result["sentences"] for x in s["logprobs"]] == flat
    for s in result["sentences"]:
        assert [x["token"] for x in s["logprobs"]] == s["words"]
    # the whole-file `pipeline` (input ENABLE_LOGPROBS) gives the same
    whole = client.transcribe(wav, TranscribeOptions(logprobs=True))
    assert [[x["token"] for x in s["logprobs"]] for s in whole["sentences"]] == \
        [[x["token"] for x in s["logprobs"]] for s in result["sentences"]]
    assert [x["logprob"] for s in whole["sentences"] for x in s["logprobs"]] == \
        pytest.approx([x["logprob"] for x in flat], abs=1e-4)
    # off: no logprobs anywhere, the result is what it was
    plain = job_events(triton, wav, TranscribeOptions())
    assert not any("logprobs" in e for e in plain if e["type"] == "segment")
    plain_result = next(e["result"] for e in plain if e["type"] == "result")
    assert plain_result == {**result, "sentences": [{k: v for k, v in s.items() if k != "logprobs"}
                                                    for s in result["sentences"]]}


# ---------------------------------------------------------------- OpenAI SDK and Aliyun REST

@pytest.fixture(scope="module")
def oai(frontend):
    with sdk(frontend.base_url) as client:
        yield client


@pytest.fixture(scope="module")
def speech(speech_wav) -> tuple[str, bytes]:
    return "s.wav", speech_wav.read_bytes()


@pytest.fixture(scope="module")
def with_logprobs(oai, speech) -> Transcription:
    return oai.audio.transcriptions.create(model="whisper-1", file=speech, include=["logprobs"])


def test_openai_json_logprobs(oai, speech, with_logprobs):
    t = with_logprobs
    assert isinstance(t, Transcription) and t.logprobs
    for lp in t.logprobs:
        assert lp.token and lp.logprob <= 0 and bytes(int(b) for b in lp.bytes) == lp.token.encode("utf-8")
    # the tokens are the recognised words, in order: those of verbose_json's words
    verbose = oai.audio.transcriptions.create(model="whisper-1", file=speech, response_format="verbose_json",
                                              timestamp_granularities=["word", "segment"])
    assert [lp.token for lp in t.logprobs] == [w.word for w in verbose.words]
    # not asked: none
    plain = oai.audio.transcriptions.create(model="whisper-1", file=speech)
    assert plain.logprobs is None and plain.text == t.text


def test_openai_verbose_avg_logprob(oai, speech, with_logprobs):
    v = oai.audio.transcriptions.create(model="whisper-1", file=speech, response_format="verbose_json",
                                        include=["logprobs"], timestamp_granularities=["word", "segment"])
    assert isinstance(v, TranscriptionVerbose) and v.segments
    values = [x["logprob"] for x in (v.model_extra or {})["logprobs"]]
    assert len(values) == len(v.words)
    # each segment's avg_logprob is the mean over its words (the words inside its time span, in order)
    pos = 0
    for seg in v.segments:
        n = sum(1 for w in v.words if seg.start <= w.start < seg.end)
        assert n and seg.avg_logprob < 0
        assert seg.avg_logprob == pytest.approx(sum(values[pos:pos + n]) / n, abs=1e-5)
        pos += n
    assert pos == len(values)
    # include[]=logprobs also gives verbose_json the list (a field the SDK keeps as an extra)
    assert [x["token"] for x in (v.model_extra or {})["logprobs"]] == [lp.token for lp in with_logprobs.logprobs]


def test_openai_stream_delta_logprobs(oai, speech, with_logprobs):
    events = list(oai.audio.transcriptions.create(model="gpt-4o-transcribe", file=speech, stream=True,
                                                  include=["logprobs"]))
    deltas, done = events[:-1], events[-1]
    assert done.type == "transcript.text.done" and done.logprobs
    # the same words as the json answer (another request: batching may move a log-probability by float rounding)
    assert [x.token for x in done.logprobs] == [x.token for x in with_logprobs.logprobs]
    assert [x.logprob for x in done.logprobs] == pytest.approx([x.logprob for x in with_logprobs.logprobs], abs=1e-4)
    # the deltas' logprobs are the words recognised since the previous delta: together, the done event's
    assert any(d.logprobs for d in deltas)
    assert [(x.token, x.logprob) for d in deltas for x in d.logprobs or []] == [(x.token, x.logprob) for x in done.logprobs]


def test_aliyun_rest_confidence(frontend, speech, with_logprobs):
    r = httpx.post(f"{frontend.base_url}/stream/v1/asr", params={"format": "wav", "enable_punctuation_prediction": "true"},
                   content=speech[1], timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    values = [lp.logprob for lp in with_logprobs.logprobs]
    assert body["confidence"] == pytest.approx(math.exp(sum(values) / len(values)), abs=2e-4)
    assert 0 < body["confidence"] <= 1
    assert body["sentences"] and all(0 < s["confidence"] <= 1 for s in body["sentences"])
    assert json.dumps(body, ensure_ascii=False)
