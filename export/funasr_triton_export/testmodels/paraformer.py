"""Random-weight SeACo-Paraformer (hotwords + timestamps) in FunASR hub layout.

`tiny` keeps every module of `speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404`
(SANM encoder, SANM decoder, CifPredictorV3 with the upsampling timestamp head, LSTM bias encoder,
SeACo decoder, vocabulary 8404 with the no-bias id 8377) at toy sizes; `large` has the real sizes
(about 220M parameters) and exists for speed measurements only.

Random weights give a CIF that fires about every second frame whatever the input. `tiny` then gets a
predictor calibrated on synthetic signals (`calibrate_predictor`), as a trained one behaves: voiced,
speech-like frames fire about as often, silence and noise do not, so a noise-only segment has no
tokens. `large` keeps the uniform firing (its benchmarks measure speech-like decoding everywhere).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .vocab import ASR_VOCAB_SIZE, ENGLISH_PIECES, asr_tokens

# Bump when `build` makes different files from the same arguments: sources.build_test_model rebuilds
# a cached test model whose stamp differs.
VERSION = 2

# `seaco_blocks` is the SeACo decoder's num_blocks; its attention blocks (`decoders`) number att_layer_num,
# FunASR's default 6 as in the released model, whatever num_blocks is: so even `tiny` has the `decoders[5]`
# that SeACo's hotword filter (forward_asf6, more than 50 hotword entries) reads.
SIZES = {
    "tiny": dict(d=64, heads=4, enc_units=128, enc_blocks=2, dec_units=128, dec_blocks=2,
                 seaco_units=128, seaco_blocks=1),
    "large": dict(d=512, heads=4, enc_units=2048, enc_blocks=50, dec_units=2048, dec_blocks=16,
                  seaco_units=1024, seaco_blocks=4),
}


def config(size: str = "tiny") -> dict:
    s = SIZES[size]
    return {
        "model": "SeacoParaformer",
        "model_conf": {
            "ctc_weight": 0.0, "lsm_weight": 0.1, "length_normalized_loss": True,
            "predictor_weight": 1.0, "predictor_bias": 1, "sampling_ratio": 0.75,
            "inner_dim": s["d"], "bias_encoder_type": "lstm", "bias_encoder_bid": False,
            "seaco_lsm_weight": 0.1, "seaco_length_normalized_loss": True, "train_decoder": True,
            "NO_BIAS": 8377,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {
            "output_size": s["d"], "attention_heads": s["heads"], "linear_units": s["enc_units"],
            "num_blocks": s["enc_blocks"], "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1, "input_layer": "pe", "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True, "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm",
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {
            "attention_heads": s["heads"], "linear_units": s["dec_units"], "num_blocks": s["dec_blocks"],
            "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1, "att_layer_num": s["dec_blocks"], "kernel_size": 11,
            "sanm_shfit": 0,
        },
        "seaco_decoder": "ParaformerSANMDecoder",
        "seaco_decoder_conf": {
            "attention_heads": s["heads"], "linear_units": s["seaco_units"], "num_blocks": s["seaco_blocks"],
            "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1, "kernel_size": 21, "sanm_shfit": 0,
            "use_output_layer": False, "wo_input_layer": True,
        },
        "predictor": "CifPredictorV3",
        "predictor_conf": {
            "idim": s["d"], "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45,
            "smooth_factor2": 0.25, "noise_threshold2": 0.01, "upsample_times": 3,
            "use_cif1_cnn": False, "upsample_type": "cnn_blstm",
        },
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
            "lfr_m": 7, "lfr_n": 6, "dither": 0.0,
        },
        "specaug": None,
        "normalize": None,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        "input_size": 560,
    }


def write_cmvn(path: Path, dim: int = 560, seed: int = 0) -> None:
    """am.mvn in Kaldi nnet text form: <AddShift> = -mean, <Rescale> = 1/std."""
    rng = np.random.default_rng(seed)
    shift = -(8.0 + rng.normal(0.0, 1.5, dim))
    scale = 1.0 / (2.0 + rng.random(dim) * 2.0)
    fmt = lambda v: " ".join(f"{x:.6f}" for x in v)  # noqa: E731
    path.write_text(
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(shift)} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(scale)} ]\n"
        "</Nnet>\n"
    )


def save_random_model(conf: dict, path: Path, seed: int, tune=None) -> None:
    """Instantiate the registered FunASR class of `conf` (every `<part>` / `<part>_conf` pair it names)
    with seeded random weights, lift the CIF bias, call `tune(model)` if given, and save its
    state_dict to `path`."""
    import torch
    from funasr.register import tables

    parts = {}
    for part in ("encoder", "decoder", "seaco_decoder", "predictor"):
        if part in conf:
            parts.update({part: conf[part], f"{part}_conf": conf[f"{part}_conf"]})
    torch.manual_seed(seed)
    model = tables.model_classes.get(conf["model"])(
        **conf["model_conf"], **parts, input_size=conf["input_size"], vocab_size=ASR_VOCAB_SIZE)
    with torch.no_grad():  # random init gives near-silent CIF; lift the predictor so tokens fire
        for name, p in model.named_parameters():
            if name.endswith("predictor.cif_output.bias"):
                p.fill_(0.0)
    if tune is not None:
        tune(model.eval())
    torch.save(model.state_dict(), path)


# calibration: sigmoid(CIF_GAIN * (s - CIF_OFFSET)) per frame, where s is +1 at the mean speech-like
# frame and -1 at the mean silence/noise frame. Measured on espeak-ng sentences: about two tokens in
# three frames (one in two under white noise of std 0.01-0.03); none on silence, on 0.2 s noise bursts
# in silence, or on a single frame; at most one on a second of white noise of std 0.05.
CIF_GAIN = 10.0
CIF_OFFSET = 0.6
NOISY_SPEECH = (0.0, 0.01, 0.03)  # white-noise levels added to the speech-like calibration signal


def _speechlike(rng, seconds: float = 12.0, sr: int = 16000) -> np.ndarray:
    """Voiced syllables: harmonic tones with vibrato, random pitch and three formants, short pauses."""
    parts, total = [], 0
    while total < seconds * sr:
        f0 = rng.uniform(90, 250)
        formants = rng.uniform([300, 900, 2200], [900, 2200, 3200])
        t = np.arange(int(rng.uniform(0.1, 0.3) * sr)) / sr
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))) / sr
        x = sum(np.sin(k * phase) / k * np.exp(-(((k * f0 - formants) / 120.0) ** 2)).sum() for k in range(1, 40))
        x = 0.3 * x / np.abs(x).max() * np.minimum(1, np.minimum(t, t[-1] - t) / 0.03)
        parts += [x, np.zeros(int(rng.uniform(0.0, 0.08) * sr))]
        total += len(x) + len(parts[-1])
    return np.concatenate(parts)


def _nonspeech(rng, sr: int = 16000) -> list[np.ndarray]:
    """Silence, white noise and brown noise at several levels."""
    def brown(n, level):
        b = np.cumsum(rng.normal(0, 1, n))
        b -= np.convolve(b, np.ones(50) / 50, "same")
        return level * b / np.abs(b).max()

    return [np.zeros(sr), *(rng.normal(0, a, sr // 2) for a in (0.3, 0.1, 0.03, 0.01, 0.001)),
            *(brown(sr // 2, a) for a in (0.3, 0.03))]


def calibrate_predictor(model, cmvn: Path, frontend_conf: dict, seed: int) -> None:
    """Point the CIF output layer at the direction of the predictor's input that separates
    speech-like frames from silence and noise (difference of the class means), scaled so that
    alphas follow sigmoid(CIF_GAIN * (s - CIF_OFFSET)) on the normalised projection s."""
    import torch
    from funasr.frontends.wav_frontend import WavFrontend

    frontend = WavFrontend(cmvn_file=str(cmvn), **frontend_conf)
    predictor = model.predictor

    def predictor_input(wav: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(wav.astype(np.float32))[None]
        feats, lengths = frontend(x, torch.tensor([x.shape[1]]))
        enc, _ = model.encode(feats, lengths)
        return torch.relu(predictor.cif_conv1d(predictor.pad(enc.transpose(1, 2)))).transpose(1, 2)[0]

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        voiced = _speechlike(rng)
        # speech stays speech under light background noise
        speech = torch.cat([predictor_input(voiced + rng.normal(0, level, voiced.shape)) for level in NOISY_SPEECH])
        other = torch.cat([predictor_input(w) for w in _nonspeech(rng)])
        direction = speech.mean(0) - other.mean(0)
        ps, po = speech @ direction, other @ direction
        center, half_gap = (ps.mean() + po.mean()) / 2, (ps.mean() - po.mean()) / 2
        predictor.cif_output.weight.copy_((CIF_GAIN / half_gap * direction)[None])
        predictor.cif_output.bias.fill_(float(-CIF_GAIN * (center / half_gap + CIF_OFFSET)))


def build(out_dir: Path, size: str = "tiny", seed: int = 0) -> Path:
    import yaml

    import funasr.models.seaco_paraformer.model  # noqa: F401  (registers SeacoParaformer)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = config(size)
    write_cmvn(out_dir / "am.mvn", seed=seed)
    tune = None
    if size == "tiny":
        def tune(model):
            calibrate_predictor(model, out_dir / "am.mvn", conf["frontend_conf"], seed)
    save_random_model(conf, out_dir / "model.pt", seed, tune)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True, sort_keys=False))
    tokens = asr_tokens()
    (out_dir / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False))
    # seg_dict maps hotword words to model tokens, as in the released model directory
    seg_lines = [f"{t} {t}" for t in tokens[3:-1] if not t.endswith("@@")]
    seg_lines += ["aiapp ai@@ app", "hello hello", "a a@@"]
    (out_dir / "seg_dict").write_text("\n".join(seg_lines) + "\n", encoding="utf-8")
    (out_dir / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition",
        "model": {"type": "funasr"}, "file_path_metas": {
            "init_param": "model.pt", "config": "config.yaml", "tokenizer_conf": {"token_list": "tokens.json"},
            "frontend_conf": {"cmvn_file": "am.mvn"}},
    }, indent=2))
    return out_dir


__all__ = ["VERSION", "build", "config", "ENGLISH_PIECES"]
