"""SeACo-Paraformer → one ONNX graph with hotword biasing and timestamp outputs.

FunASR's own export (`funasr/models/seaco_paraformer/export_meta.py`) differs from AutoModel:
it floors the token count (AutoModel rounds), always applies the SeACo branch (AutoModel skips it
without hotwords) and needs a second graph for hotword embeddings. This wrapper reuses FunASR's
Export modules but wires them as AutoModel does, so served tokens equal AutoModel's tokens.

It is also padding-invariant, which FunASR's batched inference is not: a segment padded in a batch
decodes exactly as alone. Two places leak padding in FunASR: the CIF predictor's convolution reads
the encoder output just past a row's end (so it is zeroed here), and the timestamp head's
bidirectional LSTM runs its backward pass through the padding (so the backward direction runs on
each row reversed within its own length).

A segment whose CIF never fires (noise, a click, a one-frame segment) answers token_num 0, as FunASR
answers no tokens, instead of failing the whole batch inside FunASR's exported CIF.

  inputs   speech f32 [B,T,560], speech_lengths i32 [B],
           hotword_ids i32 [B,N,K] (0-padded token ids; entry N-1 is <s>, the no-bias entry),
           hotword_lengths i32 [B,N]
With more than 50 entries (N > 50) SeACo's attention-score filter keeps the 50 best hotwords per row,
as FunASR's `nfilter=50` does.

  outputs  token_ids i32 [B,L] (argmax; SeACo-merged when N > 1), token_num i32 [B] (rounded),
           us_alphas f32 [B,3T], us_cif_peak f32 [B,3T] (upsampled CIF for timestamps),
           token_logprobs f32 [B,L] (the decoder's log-probability of each token in token_ids: its
           log-softmax maximum, from the SeACo-merged distribution when N > 1)
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

from ..onnx_utils import legacy_onnx_export, quantize_int8

log = logging.getLogger(__name__)

INPUTS = ["speech", "speech_lengths", "hotword_ids", "hotword_lengths"]
OUTPUTS = ["token_ids", "token_num", "us_alphas", "us_cif_peak", "token_logprobs"]
OPSET = 14
# FunASR SeacoParaformer._seaco_decode_with_ASF(nfilter=50): more entries than this are filtered by score
NFILTER = 50


def _split_bidirectional(blstm):
    """Two unidirectional LSTMs carrying a one-layer bidirectional LSTM's weights."""
    import torch

    if blstm.num_layers != 1 or not blstm.bidirectional or not blstm.batch_first:
        raise ValueError("expected a one-layer, bidirectional, batch-first LSTM in the timestamp head")
    out = []
    for suffix in ("", "_reverse"):
        lstm = torch.nn.LSTM(blstm.input_size, blstm.hidden_size, 1, bias=blstm.bias, batch_first=True)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                if hasattr(blstm, f"{name}_l0{suffix}"):
                    getattr(lstm, f"{name}_l0").copy_(getattr(blstm, f"{name}_l0{suffix}"))
        out.append(lstm.eval())
    return out


def _wrapper_class():
    import torch
    from funasr.models.bicif_paraformer.cif_predictor import cif_export, cif_wo_hidden_export

    class WidthMask(torch.nn.Module):
        """FunASR's sequence_mask, but as wide as the padded time axis of the tensor the lengths
        describe (registered per call) instead of max(lengths): inputs may then be padded beyond
        their longest row, e.g. to length buckets so equal-shape batchers can merge them."""

        def __init__(self):
            super().__init__()
            self.widths: dict[int, object] = {}

        def forward(self, lengths, max_seq_len=None, dtype=torch.float32, device=None):
            width = self.widths.get(id(lengths))
            if width is None:
                width = lengths.max()
            row = torch.arange(width, device=lengths.device)
            return (row[None, :] < lengths[:, None]).type(dtype)

    class SeacoParaformerGraph(torch.nn.Module):
        def __init__(self, model, kwargs: dict):
            super().__init__()
            backbone, embedder = model.export(**kwargs)  # FunASR's Export modules
            self.encoder = backbone.encoder
            self.predictor = backbone.predictor
            self.decoder = backbone.decoder
            self.seaco_decoder = backbone.seaco_decoder
            self.hotword_output_layer = model.hotword_output_layer
            self.make_pad_mask = WidthMask()
            self.encoder.make_pad_mask = self.make_pad_mask
            self.decoder.make_pad_mask = self.make_pad_mask
            self.embedding = embedder.embedding
            self.bias_encoder = embedder.bias_encoder  # time-major LSTM
            self.lstm_proj = getattr(model, "lstm_proj", None)
            self.no_bias = int(model.NO_BIAS)
            self.upsample_times = int(model.predictor.upsample_times)
            blstm = getattr(model.predictor, "blstm", None)
            if getattr(model.predictor, "upsample_type", "cnn_blstm") != "cnn_blstm" or blstm is None \
                    or getattr(model.predictor, "use_cif1_cnn", False):
                raise ValueError("only CifPredictorV3 with upsample_type=cnn_blstm, use_cif1_cnn=false "
                                 "(as in paraformer-zh) is supported")
            self.lstm_fwd, self.lstm_bwd = _split_bidirectional(blstm)

        def _cif(self, enc, mask):
            """CifPredictorV3Export.forward, robust to rows that never fire.

            FunASR's exported CIF (`cif_export`) copies each row's fired frames into place; for a
            row with none that copy is over an empty tensor, which the ONNX graph cannot do
            (onnxruntime fails a Reshape of {0, d}). Here every row gets one extra step at its
            end with a full threshold of weight, so it fires at least once; that forced fire
            comes after all real ones (CIF only looks back) and is dropped by `fired`.
            Returns (fired embeddings [b, max(fired)+1, d], real fires per row, token count)."""
            p = self.predictor
            conv = torch.relu(p.cif_conv1d(p.pad(enc.transpose(1, 2)))).transpose(1, 2)
            alphas = torch.sigmoid(p.cif_output(conv))
            alphas = torch.nn.functional.relu(alphas * p.smooth_factor - p.noise_threshold)
            frame_mask = mask.transpose(-1, -2).float()
            alphas = (alphas * frame_mask).squeeze(-1)
            hidden, alphas, token_length = p.tail_process_fn(enc, alphas, mask=frame_mask.squeeze(-1))
            b, d = hidden.shape[0], hidden.shape[2]
            hidden = torch.cat([hidden, torch.zeros((b, 1, d), dtype=hidden.dtype, device=hidden.device)], dim=1)
            alphas = torch.cat([alphas, torch.full((b, 1), p.threshold, dtype=alphas.dtype, device=alphas.device)], dim=1)
            fire_embeds, fires = cif_export(hidden, alphas, p.threshold)
            fired = (fires[:, :-1] >= p.threshold).sum(-1)
            return fire_embeds, fired, token_length

        def _hotword_filter(self, selected, ctx_len, dec_hidden, dec_num, n):
            """SeACo's attention-score filter (FunASR `_seaco_decode_with_ASF`, nfilter=50): with more
            than NFILTER entries (hotwords + the trailing <s>), score each entry by the attention of the
            sixth SeACo decoder block (`forward_asf6`, summed over heads and tokens), keep the NFILTER
            best and append <s> again (so <s> is there twice when it is among the best, as in FunASR).
            With NFILTER entries or fewer every entry is kept, in score order (attention over a set is
            order-free). FunASR scores the first row of a batch for all rows; here each row is scored
            on its own tokens, so a segment decodes the same alone or padded in a batch (AutoModel
            decodes one segment per call in `verify`, where the two are equal)."""
            b, d = selected.shape[0], selected.shape[2]
            att = self.seaco_decoder.forward_asf6(selected, ctx_len, dec_hidden, dec_num)  # [b, h, L, n]
            tokens = torch.arange(dec_hidden.shape[1], device=selected.device)
            real = (tokens[None, :] < dec_num[:, None]).type(att.dtype)  # padded token rows do not vote
            scores = (att * real[:, None, :, None]).sum(1).sum(1)  # [b, n]
            n_t = torch.tensor(n, device=selected.device)
            entry = torch.arange(n, device=selected.device)
            filter_on = n_t > NFILTER
            # filter off: rank the hotwords only; the single <s> is appended below
            ranked = torch.where(filter_on | (entry != n_t - 1)[None, :], scores, torch.full_like(scores, -1e30))
            order = torch.argsort(ranked, dim=-1, descending=True)
            keep = torch.clamp(n_t - 1, min=1, max=NFILTER)
            index = torch.cat([order[:, :keep], (n_t - 1).expand(b, 1)], dim=1)
            selected = torch.gather(selected, 1, index[:, :, None].expand(-1, -1, d))
            return selected, torch.ones_like(ctx_len) * (keep + 1).type(ctx_len.dtype)

        def _timestamp_alphas(self, enc, enc_len, mask, token_num):
            """CifPredictorV3.get_upsample_timestamp with a length-aware BLSTM."""
            p = self.predictor
            b = enc.shape[0]
            x = p.upsample_cnn(enc.transpose(1, 2)).transpose(1, 2)  # [b, up*T, d]; frames do not overlap
            lengths = enc_len.long() * self.upsample_times
            t = torch.arange(x.shape[1], device=x.device)[None, :]
            rev = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # per-row reversal
            rev_index = rev[:, :, None].expand(-1, -1, x.shape[2])
            fwd, _ = self.lstm_fwd(x)
            bwd_rev, _ = self.lstm_bwd(torch.gather(x, 1, rev_index))
            bwd = torch.gather(bwd_rev, 1, rev[:, :, None].expand(-1, -1, bwd_rev.shape[2]))
            h = torch.cat([fwd, bwd], dim=-1)
            alphas2 = torch.sigmoid(p.cif_output2(h))
            alphas2 = torch.nn.functional.relu(alphas2 * p.smooth_factor2 - p.noise_threshold2)
            mask2 = mask.repeat(1, self.upsample_times, 1).transpose(-1, -2).reshape(b, -1).unsqueeze(-1)
            alphas2 = (alphas2 * mask2).squeeze(-1)
            alphas2 = alphas2 * (token_num / alphas2.sum(-1))[:, None]
            return alphas2, cif_wo_hidden_export(alphas2, p.threshold - 1e-4)

        def forward(self, speech, speech_lengths, hotword_ids, hotword_lengths):
            widths = self.make_pad_mask.widths
            widths.clear()
            widths[id(speech_lengths)] = speech.shape[1]
            enc, enc_len = self.encoder(speech, speech_lengths)
            widths[id(enc_len)] = enc.shape[1]
            mask = self.make_pad_mask(enc_len)[:, None, :]
            enc = enc * mask.transpose(1, 2)  # nothing past a row's end may reach the predictor convs
            fire_embeds, fired, token_length = self._cif(enc, mask)
            token_num = torch.round(token_length).type(torch.int32)
            # A segment whose CIF never fires (noise, a click, a frame or two) has token_num 0: its
            # row answers no tokens. The decoders still get at least one (zero) position per row, so
            # no tensor in them is ever empty; rows keep their own results.
            dec_num = token_num.clamp(min=1)
            # The decoder masks to max(dec_num) while CIF emitted `fired` embeddings per row; rounding
            # can exceed the fire count by one (FunASR then fails on the shape mismatch). Pad with
            # zero embeddings to max(dec_num): a no-op whenever the two agree.
            pos = torch.arange(dec_num.max(), device=speech.device)
            keep = (pos[None, :] < fired[:, None]).type(fire_embeds.dtype)
            pos = torch.minimum(pos, torch.tensor(fire_embeds.shape[1] - 1, device=speech.device))
            acoustic_embeds = fire_embeds[:, pos] * keep[:, :, None]
            dec_out, dec_hidden, _ = self.decoder(
                enc, enc_len, acoustic_embeds, dec_num, return_hidden=True, return_both=True
            )
            dec_pred = torch.log_softmax(dec_out, dim=-1)
            plain_ids = dec_pred.argmax(-1)

            # hotword representations: LSTM over each hotword's tokens, output at its last token
            b, n, k = hotword_ids.shape
            emb = self.embedding(hotword_ids.reshape(b * n, k).long()).transpose(0, 1)
            hidden, _ = self.bias_encoder(emb)
            if self.lstm_proj is not None:
                hidden = self.lstm_proj(hidden)
            hidden = hidden.transpose(0, 1)  # [b*n, k, d]
            last = (hotword_lengths.reshape(b * n).long() - 1).clamp(min=0)
            index = last[:, None, None].expand(-1, 1, hidden.shape[-1])
            selected = torch.gather(hidden, 1, index).reshape(b, n, hidden.shape[-1])
            ctx_len = torch.ones(b, dtype=torch.int32, device=speech.device) * n
            selected, ctx_len = self._hotword_filter(selected, ctx_len, dec_hidden, dec_num, n)

            cif_att, _ = self.seaco_decoder(selected, ctx_len, acoustic_embeds, dec_num)
            dec_att, _ = self.seaco_decoder(selected, ctx_len, dec_hidden, dec_num)
            dha_pred = torch.log_softmax(self.hotword_output_layer(cif_att + dec_att), dim=-1)
            keep_decoder = (dha_pred.argmax(-1) == self.no_bias).unsqueeze(-1)
            merged = torch.where(keep_decoder, dec_pred, dha_pred)
            bias_ids = merged.argmax(-1)
            use_bias = torch.tensor(n, device=speech.device) > 1
            token_ids = torch.where(use_bias, bias_ids, plain_ids).type(torch.int32)
            token_logprobs = torch.where(use_bias, merged.max(-1).values, dec_pred.max(-1).values)

            us_alphas, us_cif_peak = self._timestamp_alphas(enc, enc_len, mask, token_num.type(torch.float32))
            return token_ids, token_num, us_alphas, us_cif_peak, token_logprobs

    return SeacoParaformerGraph


def _dummy_inputs():
    import torch

    speech = torch.randn(2, 30, 560)
    speech_lengths = torch.tensor([15, 30], dtype=torch.int32)
    hotword_ids = torch.tensor([[[10, 11, 0], [1, 0, 0]], [[12, 13, 14], [1, 0, 0]]], dtype=torch.int32)
    hotword_lengths = torch.tensor([[2, 1], [3, 1]], dtype=torch.int32)
    return speech, speech_lengths, hotword_ids, hotword_lengths


def export_paraformer(model_dir: Path, out_dir: Path, quantize: bool = False) -> dict:
    """Export a SeACo-Paraformer hub directory into `out_dir` (a Triton model version dir)."""
    import torch
    from funasr import AutoModel

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    auto = AutoModel(model=str(model_dir), disable_update=True, device="cpu")
    if type(auto.model).__name__ != "SeacoParaformer":
        raise ValueError(
            f"{model_dir} holds a {type(auto.model).__name__}; the served ASR stage needs a "
            "SeACo-Paraformer (e.g. paraformer-zh = iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-"
            "common-vocab8404-pytorch)"
        )
    model = copy.deepcopy(auto.model).eval()
    kwargs = {k: v for k, v in copy.deepcopy(auto.kwargs).items() if k != "model"}
    kwargs.update(max_seq_len=512, device="cpu", type="onnx")
    graph = _wrapper_class()(model, kwargs).eval()

    onnx_path = out_dir / "model.onnx"
    dynamic_axes = {
        "speech": {0: "batch", 1: "frames"},
        "speech_lengths": {0: "batch"},
        "hotword_ids": {0: "batch", 1: "hotwords", 2: "hotword_tokens"},
        "hotword_lengths": {0: "batch", 1: "hotwords"},
        "token_ids": {0: "batch", 1: "tokens"},
        "token_num": {0: "batch"},
        "us_alphas": {0: "batch", 1: "upsampled_frames"},
        "us_cif_peak": {0: "batch", 1: "upsampled_frames"},
        "token_logprobs": {0: "batch", 1: "tokens"},
    }
    with legacy_onnx_export(), torch.no_grad():
        torch.onnx.export(
            graph, _dummy_inputs(), str(onnx_path), input_names=INPUTS, output_names=OUTPUTS,
            dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True,
        )
    files = ["model.onnx"]
    if quantize:
        quantize_int8(onnx_path, out_dir / "model_quant.onnx", exclude_substrings=("output", "bias_encoder"))
        files.append("model_quant.onnx")
    log.info("exported %s", onnx_path)
    return {"files": files, "opset": OPSET, "inputs": INPUTS, "outputs": OUTPUTS}


def export_asr_assets(model_dir: Path, out_dir: Path) -> dict:
    """What feature extraction and decoding need: CMVN, token list, hotword segmentation, options."""
    import yaml

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    files = []
    for name in ("am.mvn", "seg_dict"):
        if (model_dir / name).exists():
            shutil.copyfile(model_dir / name, out_dir / name)
            files.append(name)
    tokens = _token_list(model_dir, conf)
    (out_dir / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
    files.append("tokens.json")
    fe = conf.get("frontend_conf", {})
    model_conf = conf.get("model_conf", {})
    options = {
        "frontend": {k: fe.get(k, d) for k, d in (
            ("fs", 16000), ("window", "hamming"), ("n_mels", 80), ("frame_length", 25),
            ("frame_shift", 10), ("lfr_m", 7), ("lfr_n", 6), ("dither", 0.0))},
        "sos": 1, "eos": 2, "blank_id": 0,
        "predictor_bias": model_conf.get("predictor_bias", 0),
        "upsample_rate": conf.get("predictor_conf", {}).get("upsample_times", 3),
        "vocab_size": len(tokens),
    }
    options["frontend"]["dither"] = 0.0  # served features are deterministic
    (out_dir / "asr.json").write_text(json.dumps(options, indent=2), encoding="utf-8")
    files.append("asr.json")
    return {"files": files}


def _token_list(model_dir: Path, conf: dict) -> list[str]:
    token_list = conf.get("tokenizer_conf", {}).get("token_list")
    candidates = [model_dir / "tokens.json", model_dir / "tokens.txt"]
    if isinstance(token_list, str):
        candidates.insert(0, model_dir / Path(token_list).name)
    elif isinstance(token_list, list):
        return token_list
    for path in candidates:
        if path.exists():
            if path.suffix == ".json":
                return json.loads(path.read_text(encoding="utf-8"))
            return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise FileNotFoundError(f"no token list (tokens.json / tokens.txt) in {model_dir}")
