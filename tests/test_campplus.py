"""The `speaker_embedding` stage: numpy CAM++ features + exported ONNX vs funasr's AutoModel.

A tiny random-weight CAM++ (funasr_triton_export.testmodels.campplus) is built and exported with
export_campplus; ORT(campplus_features(wav)) must match AutoModel.generate()'s `spk_embedding`
on espeak-ng speech from 0.5 s to 20 s. (model.py is exercised through the real Triton in test_serving.py.)
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from funasr_triton_models import speaker_features as speaker_features_mod
from tests.synth import SENTENCES, SR, compose

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

CLIP_SECONDS = (0.5, 1.5, 2.0, 3.7, 6.0, 10.0, 20.0)
MIN_COSINE = 0.999

campplus_features = speaker_features_mod.speaker_features


def _clip(seconds: float, index: int) -> np.ndarray:
    """`seconds` of speech (+ short pauses), cut or zero-padded to exactly that length."""
    parts: list = []
    n = 0
    i = index
    while n < seconds * SR:
        parts += [SENTENCES[i % len(SENTENCES)], 0.3]
        n += int(2.5 * SR)  # an espeak sentence is > 2.5 s; compose() below gives the true length
        i += 1
    wav = compose(*parts)
    while wav.shape[0] < seconds * SR:  # in case the estimate was short
        wav = np.concatenate([wav, compose(SENTENCES[i % len(SENTENCES)])])
        i += 1
    return np.ascontiguousarray(wav[: int(seconds * SR)], dtype=np.float32)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    import onnxruntime as ort
    from funasr import AutoModel
    from funasr_triton_export.exporters.campplus import export_campplus
    from funasr_triton_export.testmodels.campplus import build

    base = tmp_path_factory.mktemp("campplus")
    model_dir = build(base / "hub", seed=0)
    out_dir = base / "1"
    info = export_campplus(model_dir, out_dir)
    conf = json.loads((out_dir / "embedding.json").read_text(encoding="utf-8"))
    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    auto = AutoModel(model=str(model_dir), disable_update=True, disable_pbar=True, device="cpu")
    clips = {s: _clip(s, k) for k, s in enumerate(CLIP_SECONDS)}
    return types.SimpleNamespace(model_dir=model_dir, out_dir=out_dir, info=info, conf=conf,
                                 session=session, auto=auto, clips=clips)


def _ort(env, feats: np.ndarray) -> np.ndarray:
    return env.session.run(["embedding"], {"feats": feats})[0]


def _reference(env, wav: np.ndarray) -> np.ndarray:
    return env.auto.generate(input=wav)[0]["spk_embedding"].detach().numpy().reshape(-1)


# ----------------------------------------------------------------------------------- export


def test_export_files_and_contract(env):
    assert sorted(env.info["files"]) == ["embedding.json", "model.onnx"]
    assert sorted(p.name for p in env.out_dir.iterdir()) == ["embedding.json", "model.onnx"]
    assert env.conf["embedding_size"] == 64 and env.conf["feat_dim"] == 80
    assert env.conf["features"]["dither"] == 0.0 and env.conf["features"]["waveform_scale"] == 1.0
    # the exporters' SPEAKER_FBANK_DEFAULTS and the served DEFAULT_OPTIONS are kept in step
    assert env.conf["features"] == speaker_features_mod.DEFAULT_OPTIONS
    assert env.info["opset"] == 19 and env.info["max_rel_diff"] < 1e-4
    ins, outs = env.session.get_inputs(), env.session.get_outputs()
    assert [(i.name, i.type, len(i.shape)) for i in ins] == [("feats", "tensor(float)", 3)]
    assert [(o.name, o.type, len(o.shape)) for o in outs] == [("embedding", "tensor(float)", 2)]
    assert all(isinstance(d, str) for d in ins[0].shape[:2]), "batch and frames must be dynamic"
    assert ins[0].shape[2] == 80


def test_tiny_model_loads_with_all_keys(env):
    import torch

    from funasr_triton_export.testmodels.campplus import CONFIGURATION_JSON, WEIGHTS

    assert CONFIGURATION_JSON["file_path_metas"]["init_param"] == WEIGHTS == "campplus_cn_common.bin"
    assert env.auto.kwargs["init_param"] == str(env.model_dir / WEIGHTS)
    state = torch.load(env.model_dir / WEIGHTS, map_location="cpu")
    assert set(state) == set(env.auto.model.state_dict())


# --------------------------------------------------------------------- features and embeddings


def test_features_match_funasr(env):
    import torch
    from funasr.models.campplus.utils import extract_feature

    for wav in env.clips.values():
        ours = campplus_features(wav, env.conf)
        ref, lengths, _ = extract_feature([torch.from_numpy(wav)])
        assert ours.shape == (lengths[0], 80) == tuple(ref.shape[1:])
        np.testing.assert_allclose(ours, ref[0].numpy(), atol=1e-4)


def test_embeddings_match_funasr(env):
    cosines = {}
    for seconds, wav in env.clips.items():
        emb = _ort(env, campplus_features(wav, env.conf)[None])[0]
        ref = _reference(env, wav)
        assert emb.shape == ref.shape == (64,)
        cosines[seconds] = _cos(emb, ref)
    print(f"\nCAM++ ORT vs funasr cosine per clip length: {cosines}; min {min(cosines.values()):.8f}")
    assert min(cosines.values()) >= MIN_COSINE, cosines


def test_equal_length_batch_matches_single_runs(env):
    """Three 1.5 s diarization windows (one zero-padded like sv_chunk) batched = run one by one."""
    win = int(1.5 * SR)
    long = env.clips[6.0]
    short = env.clips[1.5][: SR]
    windows = [long[:win], long[win // 2: win // 2 + win], np.pad(short, (0, win - short.shape[0]))]
    feats = np.stack([campplus_features(w, env.conf) for w in windows])
    batched = _ort(env, feats)
    single = np.concatenate([_ort(env, f[None]) for f in feats])
    assert np.abs(batched - single).max() < 1e-4
    for w, e in zip(windows, batched):
        assert _cos(e, _reference(env, w)) >= MIN_COSINE
