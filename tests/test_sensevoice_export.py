"""`funasr-triton export --stages sensevoice`: the tiny random-weight SenseVoiceSmall (funasr's classes, a
sentencepiece BPE trained at build time) through the real export path; the ONNX graph against funasr's own
torch model and AutoModel on the same input."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import BIN, CACHE, ROOT
from tests.synth import SENTENCES, compose

from funasr_triton_models.features import AsrFrontend, FrontendOptions, load_cmvn
from funasr_triton_models.sensevoice_text import Detokenizer, ctc_greedy, parse_tags

SOURCE = CACHE / "test" / "sensevoice"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    repo = tmp_path_factory.mktemp("sv") / "repo"
    subprocess.run([str(BIN / "funasr-triton"), "--log-level", "WARNING", "export", "--source", "test", "--quantize",
                    "--stages", "sensevoice", "--repository", str(repo), "--cache-dir", str(CACHE)],
                   check=True, cwd=ROOT)
    return repo


@pytest.fixture(scope="module")
def auto(exported):
    from funasr_triton_export.exporters.sensevoice import reference_model

    return reference_model(SOURCE)  # AutoModel without fbank dither (the served features have none)


@pytest.fixture(scope="module")
def served(exported):
    d = exported / "sensevoice" / "1"
    meta = json.loads((d / "sensevoice.json").read_text())
    return {"dir": d, "meta": meta, "frontend": AsrFrontend(FrontendOptions(**meta["frontend"]), load_cmvn(d / "am.mvn")),
            "detok": Detokenizer(d / meta["bpemodel"]),
            "fp32": ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"]),
            "int8": ort.InferenceSession(str(d / "model_quant.onnx"), providers=["CPUExecutionProvider"])}


def audio(seed: int = 0) -> np.ndarray:
    return compose(0.2, SENTENCES[seed % len(SENTENCES)], 0.2).astype(np.float32)


def run(served, feats_list, language="auto", itn=False, session="fp32"):
    t = max(len(f) for f in feats_list)
    speech = np.zeros((len(feats_list), t, 560), np.float32)
    for i, f in enumerate(feats_list):
        speech[i, :len(f)] = f
    meta = served["meta"]
    n = len(feats_list)
    return served[session].run(None, {
        "speech": speech, "speech_lengths": np.array([len(f) for f in feats_list], np.int32),
        "language": np.full(n, meta["language_ids"][language], np.int32),
        "textnorm": np.full(n, meta["textnorm_ids"]["withitn" if itn else "woitn"], np.int32)})


def test_export_writes_graph_assets_and_manifest(exported, served):
    files = sorted(p.name for p in served["dir"].iterdir() if p.suffix not in (".py",))
    assert files == ["am.mvn", "chn_jpn_yue_eng_ko_spectok.bpe.model", "model.onnx", "model_quant.onnx", "sensevoice.json"]
    names = ([i.name for i in served["fp32"].get_inputs()], [o.name for o in served["fp32"].get_outputs()])
    # FunASR's export metadata (funasr/models/sense_voice/export_meta.py)
    assert names == (["speech", "speech_lengths", "language", "textnorm"], ["ctc_logits", "encoder_out_lens"])
    meta = served["meta"]
    assert meta["language_ids"] == {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
    assert meta["textnorm_ids"] == {"withitn": 14, "woitn": 15}
    assert meta["vocab_size"] == served["detok"].size() == served["fp32"].get_outputs()[0].shape[-1]
    manifest = json.loads((exported / "MANIFEST.json").read_text())["stages"]["sensevoice"]
    assert manifest["origin"] == "test:sensevoice" and manifest["model"] == "sensevoice-small"
    assert "sensevoice/1/model.onnx" in manifest["files"]


def test_bpe_has_sensevoice_tags():
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(SOURCE / "chn_jpn_yue_eng_ko_spectok.bpe.model"))
    ids = sp.EncodeAsIds("<|en|><|HAPPY|><|Laughter|><|withitn|>hello world")
    pieces = [sp.IdToPiece(i) for i in ids if sp.IdToPiece(i) != "\u2581"]
    assert pieces[:4] == ["<|en|>", "<|HAPPY|>", "<|Laughter|>", "<|withitn|>"]


@pytest.mark.parametrize("language,itn", [("auto", False), ("en", True), ("zh", False)])
def test_onnx_equals_torch_model(auto, served, language, itn):
    """The graph's CTC logits equal funasr's SenseVoiceSmall on the same features and queries."""
    import torch

    model = auto.model
    feats = served["frontend"](audio(1))
    logits, lengths = run(served, [feats], language, itn)
    with torch.no_grad():
        speech = torch.from_numpy(feats)[None]
        lid = torch.LongTensor([[model.lid_dict[language]]])
        tn = torch.LongTensor([[model.textnorm_dict["withitn" if itn else "woitn"]]])
        x = torch.cat((model.embed(lid), model.embed(torch.LongTensor([[1, 2]])), model.embed(tn), speech), dim=1)
        enc, enc_len = model.encoder(x, torch.tensor([feats.shape[0] + 4]))
        ref = model.ctc.ctc_lo(enc).numpy()
    assert int(lengths[0]) == int(enc_len[0]) == feats.shape[0] + 4
    np.testing.assert_allclose(logits[0], ref[0], atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("language,itn", [("auto", False), ("ja", True)])
def test_served_decode_equals_automodel(auto, served, language, itn):
    """Our features + graph + greedy CTC + detokenisation give AutoModel(SenseVoiceSmall).generate's text."""
    wav = audio(2)
    ref = auto.generate(input=wav, language=language, use_itn=itn, disable_pbar=True)[0]["text"]
    logits, lengths = run(served, [served["frontend"](wav)], language, itn)
    ids = ctc_greedy(logits[0], int(lengths[0]), served["meta"]["blank_id"])
    rich = served["detok"](ids)
    assert rich.raw == ref
    assert rich.text == parse_tags(ref).text and "<|" not in rich.text


def test_queries_change_the_output(served):
    feats = served["frontend"](audio(0))
    a, _ = run(served, [feats], "auto", False)
    b, _ = run(served, [feats], "en", False)
    c, _ = run(served, [feats], "auto", True)
    assert not np.allclose(a, b) and not np.allclose(a, c)


def test_padding_invariant_batch(served):
    f1, f2 = served["frontend"](audio(0)), served["frontend"](audio(3))
    short, long_ = sorted([f1, f2], key=len)
    alone, alone_len = run(served, [short])
    batched, batched_len = run(served, [short, long_])
    assert int(batched_len[0]) == int(alone_len[0])
    n = int(alone_len[0])
    np.testing.assert_allclose(batched[0, :n], alone[0, :n], atol=2e-3, rtol=1e-3)
    blank = served["meta"]["blank_id"]
    assert ctc_greedy(batched[0], n, blank) == ctc_greedy(alone[0], n, blank)


def test_int8_graph_tracks_fp32(served):
    feats = served["frontend"](audio(1))
    fp32, _ = run(served, [feats])
    int8, _ = run(served, [feats], session="int8")
    assert fp32.shape == int8.shape
    assert np.corrcoef(fp32.reshape(-1), int8.reshape(-1))[0, 1] > 0.95


def test_parse_tags():
    r = parse_tags("<|en|><|HAPPY|><|Laughter|><|withitn|>Hello there.<|BGM|>")
    assert (r.text, r.language, r.emotion, r.events) == ("Hello there.", "en", "HAPPY", ["Laughter", "BGM"])
    assert parse_tags("plain").language == "" and parse_tags("").text == ""
    assert ctc_greedy(np.eye(4)[[1, 1, 0, 1, 2, 2, 3]], 6, 0) == [1, 1, 2]


def test_model_dir_source(tmp_path):
    """--model-dir sensevoice=DIR exports a local hub directory (origin `local`)."""
    repo = tmp_path / "repo"
    subprocess.run([str(BIN / "funasr-triton"), "--log-level", "WARNING", "export", "--stages", "sensevoice",
                    "--model-dir", f"sensevoice-small={SOURCE}", "--repository", str(repo)], check=True, cwd=ROOT)
    entry = json.loads((repo / "MANIFEST.json").read_text())["stages"]["sensevoice"]
    assert entry["origin"] == "local" and entry["source_dir"] == str(SOURCE)
    assert (repo / "sensevoice" / "1" / "model.onnx").is_file() and not (repo / "sensevoice" / "1" / "model_quant.onnx").exists()


def test_job_options_model_keys():
    """CONFIG.model / language / use_itn of the long-file job (funasr_triton_models.longfile)."""
    from funasr_triton_models.longfile import JobInputError, JobOptions, _sensevoice_fields

    default = JobOptions.parse({}, 8, 50)
    assert (default.model, default.punctuation, default.sensevoice) == ("paraformer", True, False)
    sv = JobOptions.parse({"model": "sensevoice", "language": "EN"}, 8, 50)
    assert (sv.model, sv.language, sv.use_itn, sv.punctuation) == ("sensevoice", "en", True, False)
    assert JobOptions.parse({"model": "sensevoice", "punctuation": False}, 8, 50).use_itn is False
    assert JobOptions.parse({"model": "sensevoice", "use_itn": False}, 8, 50).use_itn is False
    for raw, words in (({"model": "whisper"}, "CONFIG.model"), ({"model": "sensevoice", "language": "fr"}, "language"),
                       ({"model": "sensevoice", "hotwords": ["阿里"]}, "hotwords"),
                       ({"language": "en"}, "sensevoice only"), ({"model": "sensevoice", "use_itn": "yes"}, "use_itn")):
        with pytest.raises(JobInputError, match=words):
            JobOptions.parse(raw, 8, 50)
    result = {"sentences": [{"start_ms": 0, "text": "a"}, {"start_ms": 5000, "text": "b"}]}
    asr = [{"start_ms": 0, "end_ms": 1000, "text": "a", "language": "en", "emotion": "HAPPY", "events": ["Speech"]},
           {"start_ms": 5000, "end_ms": 9000, "text": "b", "language": "zh", "emotion": "SAD", "events": ["BGM"]}]
    _sensevoice_fields(result, asr)
    assert [s["language"] for s in result["sentences"]] == ["en", "zh"] and result["language"] == "zh"
    assert result["sentences"][1]["events"] == ["BGM"] and result["model"] == "sensevoice"
