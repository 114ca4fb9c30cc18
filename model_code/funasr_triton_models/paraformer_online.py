"""Streaming Paraformer in numpy + onnxruntime: a port of funasr 1.4.16 ``ParaformerStreaming``.

Parity target: ``AutoModel(model=<paraformer-zh-streaming dir>).generate(input=chunk, cache=cache,
is_final=..., chunk_size=[0, 10, 5], encoder_chunk_look_back=E, decoder_chunk_look_back=D)`` called
chunk by chunk (``funasr/models/paraformer_streaming/model.py``: ``inference`` →
``generate_chunk`` → ``encode_chunk`` / ``calc_predictor_chunk`` / ``cal_decoder_with_predictor_chunk``,
with ``funasr/frontends/wav_frontend.py: WavFrontendOnline`` as the frontend). The graphs are
funasr's own ONNX export (``export_meta.py``), written with ``paraformer_streaming.json`` by
``funasr_triton_export.exporters.paraformer_streaming``. Imports only numpy, onnxruntime,
kaldi_native_fbank and the standard library.

One step of one stream (``chunk_size = (c0, c1, c2)``, ``c1 * 960`` samples = ``c1`` LFR frames):

1. frontend: fbank (kaldi_native_fbank) over the leftover samples + the chunk, LFR 7/6 with the
   splice cache, CMVN;
2. feats × sqrt(d) + streaming sinusoidal position encoding (positions continue across chunks);
3. the last ``c0 + c2`` frames of the previous step are prepended (overlap / look-ahead);
4. encoder.onnx → ``enc`` and CIF weights ``alphas``; with ``encoder_chunk_look_back`` E > 0,
   encoder_lookback.onnx instead, whose every layer also attends to the keys/values it kept from
   earlier steps: funasr keeps, per layer, all frames but the look-ahead (``[:-c2]``) of each step
   appended to the cache, then the last ``E * c1`` frames;
5. CIF (continuous integrate-and-fire) over ``alphas[c0:c0+c1]`` (all frames when final, plus a
   ``tail_threshold`` frame), carrying the unfired remainder to the next step;
6. decoder.onnx on the fired embeddings with the carried FSMN caches; argmax → tokens. With
   ``decoder_chunk_look_back`` D > 0 funasr's cross-attention also attends to the keys/values of
   the last ``D * c1`` memory frames it saw (kept only on steps where the decoder ran); keys and
   values are per-frame linear maps of ``enc``, so the runtime keeps those ``enc`` frames and
   prepends them to the decoder's memory, which is the same attention.

funasr behaviours reproduced on purpose (they change results):

* A final chunk of exactly ``c1 * 960`` samples is processed as a normal (non-final) chunk followed
  by an empty final step (funasr's ``n = len // stride + is_final``).
* A final step with fewer than 960 samples (the "tail chunk") skips the frontend: the encoder runs
  on the cached overlap feats, and those are multiplied by sqrt(d) a second time (funasr scales the
  encoder input in place, and on this path the input tensor *is* the cache). Samples of such a tail
  are never featurised.
* The decoder runs only when CIF fired at least once; its caches are untouched otherwise.

Batching: :meth:`ParaformerOnline.decode` runs several independent streams in one call. Encoder
rows are grouped by equal input length (no padding at all). Decoder rows are grouped by equal
(token count, encoder length): the exported decoder's FSMN cache is the last ``kernel - 1`` frames
of the *padded* token axis, so a row padded on the token axis would carry padding into its next
step; with equal shapes no row is padded, and every stream decodes exactly as it would alone.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .features import FrontendState, OnlineFrontend, load_cmvn

SAMPLES_PER_FRAME = 960  # funasr: chunk_stride_samples = chunk_size[1] * 960 (60 ms at 16 kHz)
CONFIG_FILE = "paraformer_streaming.json"


class StreamFinishedError(RuntimeError):
    """A step was requested for a stream that already received its final chunk."""


# --------------------------------------------------------------------------------------------
# Streams and the model
# --------------------------------------------------------------------------------------------


def check_chunk_size(chunk_size: Sequence[int]) -> tuple[int, int, int]:
    """(left context, chunk, look-ahead) in 60 ms LFR frames, as funasr's ``chunk_size``."""
    try:
        values = tuple(chunk_size)
    except TypeError:
        raise ValueError(f"chunk_size must be 3 integers, got {chunk_size!r}") from None
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"chunk_size must be 3 integers, got {chunk_size!r}")
    c0, c1, c2 = (int(v) for v in values)
    if c0 < 0 or c1 < 1 or c2 < 0 or c0 + c2 < 1:
        raise ValueError(f"chunk_size {list(values)}: need c0 >= 0, c1 >= 1, c2 >= 0 and c0 + c2 >= 1 (e.g. [0, 10, 5])")
    return c0, c1, c2


MAX_LOOK_BACK = 64  # chunks; funasr's -1 (unbounded look-back, state growing with the audio) is refused


def check_look_back(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= int(value) <= MAX_LOOK_BACK:
        raise ValueError(f"{name} must be an integer in 0..{MAX_LOOK_BACK} (chunks), got {value!r}")
    return int(value)


class OnlineStream:
    """All state of one audio stream (funasr's ``cache`` dict of one ``generate`` loop)."""

    def __init__(self, model: "ParaformerOnline", chunk_size: tuple[int, int, int], encoder_look_back: int = 0,
                 decoder_look_back: int = 0):
        self.chunk_size = chunk_size
        self.encoder_look_back = encoder_look_back
        self.decoder_look_back = decoder_look_back
        # encoder look-back: per layer the kept keys and values [heads, frames, d_k] (cache["encoder"]["opt"])
        self.encoder_kv = [np.zeros((model.lookback_heads, 0, model.lookback_d_k), dtype=np.float32)
                           for _ in range(2 * model.lookback_layers)] if encoder_look_back else []
        # decoder look-back: the encoder frames whose keys/values the cross-attention keeps
        self.decoder_memory = np.zeros((0, model.encoder_output_size), dtype=np.float32)
        self.chunk_samples = chunk_size[1] * SAMPLES_PER_FRAME
        d = model.encoder_output_size
        self.frontend = FrontendState()
        self.start_idx = 0  # positions already encoded (streaming position encoding)
        self.feats = np.zeros((chunk_size[0] + chunk_size[2], model.feats_dim), dtype=np.float32)  # overlap
        self.cif_hidden = np.zeros(d, dtype=np.float32)
        self.cif_alphas = np.float32(0.0)
        self.decoder_caches = [np.zeros(model.decoder_cache_shape, dtype=np.float32)
                               for _ in range(model.decoder_blocks)]
        self.finished = False
        self.steps = 0  # decode() calls that included this stream
        self.num_tokens = 0  # tokens emitted so far
        self.token_probs: list[float] = []  # decoder probability of every emitted token, in order

    def __repr__(self) -> str:
        return (f"OnlineStream(chunk_size={list(self.chunk_size)}, look_back=({self.encoder_look_back}, "
                f"{self.decoder_look_back}), steps={self.steps}, "
                f"tokens={self.num_tokens}, finished={self.finished})")


class _Job:
    """One funasr ``generate_chunk`` call of one stream inside a decode() call."""

    __slots__ = ("item", "stream", "samples", "is_final", "tail", "speech", "enc", "alphas", "embeds", "memory")

    def __init__(self, item: int, stream: OnlineStream, samples: np.ndarray, is_final: bool):
        self.item, self.stream, self.samples, self.is_final = item, stream, samples, is_final
        self.tail = is_final and samples.shape[0] < SAMPLES_PER_FRAME
        self.speech = self.enc = self.alphas = self.embeds = self.memory = None


class ParaformerOnline:
    """Streaming Paraformer over funasr's exported encoder.onnx / decoder.onnx."""

    def __init__(self, model_dir: str | Path, intra_op_threads: int = 1, providers: list[str] | None = None,
                 quantized: bool = False):
        import onnxruntime as ort

        model_dir = Path(model_dir)
        cfg_path = model_dir / CONFIG_FILE
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} not found: run `funasr-triton export` (stage streaming)")
        self.config = cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        self.tokens: list[str] = json.loads((model_dir / "tokens.json").read_text(encoding="utf-8"))
        # the export writes dither 0.0 (deterministic features); without the key, no dither either
        self.frontend = OnlineFrontend({"dither": 0.0, **cfg["frontend_conf"]}, load_cmvn(model_dir / "am.mvn"))
        self.feats_dim = int(cfg["feats_dim"])
        if self.frontend.feats_dim != self.feats_dim:
            raise ValueError(f"feats_dim {self.feats_dim} != n_mels * lfr_m = {self.frontend.feats_dim}")
        self.encoder_output_size = int(cfg["encoder_output_size"])
        self.input_scale = np.float32(cfg.get("encoder_input_scale", math.sqrt(self.encoder_output_size)))
        self.tail_scale = np.float32(cfg.get("tail_chunk_extra_scale", 1.0))
        self.threshold = np.float32(cfg["predictor"]["threshold"])
        self.tail_threshold = np.float32(cfg["predictor"]["tail_threshold"])
        self.drop_ids = {int(cfg["sos"]), int(cfg["eos"]), int(cfg["blank_id"])}
        self.default_chunk_size = check_chunk_size(cfg.get("chunk_size", (0, 10, 5)))
        dec = cfg["decoder"]
        self.decoder_blocks = int(dec["num_blocks"])
        self.decoder_cache_shape = tuple(int(v) for v in dec["cache_shape"])
        self.in_cache_names = list(dec["in_cache_names"])
        self.out_cache_names = list(dec["out_cache_names"])
        if len(self.tokens) != int(cfg["vocab_size"]):
            raise ValueError(f"tokens.json has {len(self.tokens)} tokens, the model {cfg['vocab_size']}")
        # streaming position encoding (StreamSinusoidalPositionEncoder.encode, float32 as in torch)
        depth = self.feats_dim
        increment = np.log(np.array([10000], dtype=np.float32)) / np.float32(depth / 2 - 1)
        self._inv_timescales = np.exp(np.arange(depth // 2, dtype=np.float32) * -increment).astype(np.float32)
        self._first_position = int(cfg.get("position_encoding", {}).get("first_position", 1))

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        providers = providers or ["CPUExecutionProvider"]

        def session(part: dict) -> Any:
            name = part["quant_file"] if quantized else part["file"]
            if not name or not (model_dir / name).is_file():
                kind = "quantized " if quantized else ""
                raise FileNotFoundError(f"{model_dir}: no {kind}graph {name or part['file'].replace('.onnx', '_quant.onnx')}"
                                        + (" (export with --quantize)" if quantized else ""))
            return ort.InferenceSession(str(model_dir / name), opts, providers=providers)

        self.encoder = session(cfg["encoder"])
        self.decoder = session(dec)
        lookback = cfg.get("encoder_lookback")  # absent in exports older than look-back support
        self.encoder_lookback = None
        self.lookback_layers = self.lookback_heads = self.lookback_d_k = 0
        lookback_file = (lookback or {}).get("quant_file" if quantized else "file")
        if lookback_file and (model_dir / lookback_file).is_file():
            self.encoder_lookback = session(lookback)
            self.lookback_layers, self.lookback_heads = int(lookback["layers"]), int(lookback["heads"])
            self.lookback_d_k = int(lookback["d_k"])
            self.lookback_inputs, self.lookback_outputs = list(lookback["inputs"]), list(lookback["outputs"])
        self.quantized = quantized

    # -- streams --------------------------------------------------------------------------

    def new_stream(self, chunk_size: Sequence[int] = (0, 10, 5), encoder_chunk_look_back: int = 0,
                   decoder_chunk_look_back: int = 0) -> OnlineStream:
        """A stream; the look-backs are funasr's ``encoder_chunk_look_back`` / ``decoder_chunk_look_back``
        (chunks of earlier context the encoder's self-attention / the decoder's cross-attention sees)."""
        encoder_look_back = check_look_back("encoder_chunk_look_back", encoder_chunk_look_back)
        decoder_look_back = check_look_back("decoder_chunk_look_back", decoder_chunk_look_back)
        if encoder_look_back and self.encoder_lookback is None:
            raise ValueError("encoder_chunk_look_back > 0 needs encoder_lookback.onnx: re-export the streaming model "
                             "(`funasr-triton export`, stage streaming)")
        return OnlineStream(self, check_chunk_size(chunk_size), encoder_look_back, decoder_look_back)

    @staticmethod
    def chunk_samples(chunk_size: Sequence[int]) -> int:
        """Samples (16 kHz) per step for this chunk_size: chunk_size[1] * 960."""
        return check_chunk_size(chunk_size)[1] * SAMPLES_PER_FRAME

    # -- pieces ---------------------------------------------------------------------------

    def _position_encoding(self, start: int, length: int) -> np.ndarray:
        positions = np.arange(start + self._first_position, start + self._first_position + length,
                              dtype=np.float32)
        scaled = positions[:, None] * self._inv_timescales[None, :]
        return np.concatenate((np.sin(scaled), np.cos(scaled)), axis=1)

    def _encoder_input(self, job: _Job) -> np.ndarray | None:
        """``inference`` (frontend or tail) + ``SANMEncoderChunkOpt.forward_chunk`` up to the layers."""
        stream = job.stream
        if job.tail:
            # funasr feeds cache["feats"] itself, scaled in place by sqrt(d) once more
            return stream.feats * self.tail_scale
        feats = self.frontend.accept(stream.frontend, job.samples, job.is_final)
        if feats.shape[0] == 0:
            return None
        feats = feats * self.input_scale + self._position_encoding(stream.start_idx, feats.shape[0])
        stream.start_idx += feats.shape[0]
        speech = np.concatenate((stream.feats, feats), axis=0)
        c0, _, c2 = stream.chunk_size
        stream.feats = speech[-(c0 + c2):]
        return speech

    def _cif(self, job: _Job) -> np.ndarray:
        """``CifPredictorV2.forward_chunk`` (after the convolution, which is in encoder.onnx)."""
        stream = job.stream
        c0, c1, _ = stream.chunk_size
        alphas = job.alphas.astype(np.float32, copy=True)
        alphas[:c0] = 0.0
        if not job.is_final:
            alphas[c0 + c1:] = 0.0
        hidden_parts = [stream.cif_hidden[None, :], job.enc]
        alpha_parts = [np.array([stream.cif_alphas], dtype=np.float32), alphas]
        if job.is_final:
            hidden_parts.append(np.zeros((1, job.enc.shape[1]), dtype=np.float32))
            alpha_parts.append(np.array([self.tail_threshold], dtype=np.float32))
        hidden = np.concatenate(hidden_parts, axis=0)
        alphas = np.concatenate(alpha_parts)
        threshold = self.threshold
        integrate = np.float32(0.0)
        frames = np.zeros(hidden.shape[1], dtype=np.float32)
        fired = []
        for t in range(alphas.shape[0]):  # float32 scalar arithmetic, in funasr's order
            alpha = alphas[t]
            if alpha + integrate < threshold:
                integrate = integrate + alpha
                frames += alpha * hidden[t]
            else:
                frames += (threshold - integrate) * hidden[t]
                fired.append(frames)
                integrate = integrate + alpha
                integrate = integrate - threshold
                frames = integrate * hidden[t]
        stream.cif_alphas = np.float32(integrate)
        stream.cif_hidden = frames / integrate if integrate > 0.0 else frames
        if not fired:
            return np.zeros((0, hidden.shape[1]), dtype=np.float32)
        return np.stack(fired).astype(np.float32, copy=False)

    def _run_encoder(self, jobs: list[_Job]) -> None:
        # rows of one run have equal input length and (with look-back) equal cached frames: no padding
        groups: dict[tuple[int, int], list[_Job]] = {}
        for job in jobs:
            cached = job.stream.encoder_kv[0].shape[1] if job.stream.encoder_look_back else -1
            groups.setdefault((job.speech.shape[0], cached), []).append(job)
        for (length, cached), group in groups.items():
            feed = {"speech": np.stack([job.speech for job in group]),
                    "speech_lengths": np.full(len(group), length, dtype=np.int32)}
            if cached < 0:
                enc, _, alphas = self.encoder.run(["enc", "enc_len", "alphas"], feed)
            else:
                for k, name in enumerate(self.lookback_inputs[2:]):
                    feed[name] = np.stack([job.stream.encoder_kv[k] for job in group])
                enc, _, alphas, *kv = self.encoder_lookback.run(self.lookback_outputs, feed)
                for row, job in enumerate(group):
                    stream = job.stream
                    c2, keep = stream.chunk_size[2], stream.encoder_look_back * stream.chunk_size[1]
                    # funasr: cache = cat(cache, k_h[:, :, :-c2])[:, :, -(look_back * c1):]
                    # (python slicing: c2 = 0 keeps nothing of the step, as in funasr)
                    stream.encoder_kv = [np.ascontiguousarray(np.concatenate((old, new[row][:, :-c2]), axis=1)[:, -keep:])
                                         for old, new in zip(stream.encoder_kv, kv)]
            for i, job in enumerate(group):
                job.enc, job.alphas = enc[i], alphas[i]

    def _run_decoder(self, jobs: list[_Job], out: list[list[str]]) -> None:
        groups: dict[tuple[int, int], list[_Job]] = {}
        for job in jobs:
            stream = job.stream
            job.memory = job.enc
            if stream.decoder_look_back:
                # funasr: k_h = cat(cache, k_h); cache = k_h[-(look_back * c1):], k/v linear per frame
                job.memory = np.concatenate((stream.decoder_memory, job.enc), axis=0)
                stream.decoder_memory = job.memory[-(stream.decoder_look_back * stream.chunk_size[1]):]
            groups.setdefault((job.embeds.shape[0], job.memory.shape[0]), []).append(job)
        for (n_tokens, enc_len), group in groups.items():
            feed = {
                "enc": np.stack([job.memory for job in group]),
                "enc_len": np.full(len(group), enc_len, dtype=np.int32),
                "acoustic_embeds": np.stack([job.embeds for job in group]),
                "acoustic_embeds_len": np.full(len(group), n_tokens, dtype=np.int32),
            }
            for i, name in enumerate(self.in_cache_names):
                feed[name] = np.stack([job.stream.decoder_caches[i] for job in group])
            logits, sample_ids, *caches = self.decoder.run(["logits", "sample_ids", *self.out_cache_names], feed)
            # probability of each chosen token (softmax of the logits at the argmax): confidence
            top = logits.max(axis=-1, keepdims=True)
            chosen = 1.0 / np.exp(logits - top).sum(axis=-1)
            keep = self.decoder_cache_shape[1]
            for row, job in enumerate(group):
                job.stream.decoder_caches = [np.ascontiguousarray(c[row, :, -keep:]) for c in caches]
                kept = [(int(i), float(p)) for i, p in zip(sample_ids[row, :n_tokens], chosen[row, :n_tokens])
                        if int(i) not in self.drop_ids]
                tokens = [self.tokens[i] for i, _ in kept]
                job.stream.num_tokens += len(tokens)
                job.stream.token_probs.extend(p for _, p in kept)
                out[job.item].extend(tokens)

    # -- one step of several streams ------------------------------------------------------

    def decode(self, items: Sequence[tuple[OnlineStream, np.ndarray, bool]]) -> list[list[str]]:
        """One step for several independent streams: each item is (stream, float32 16 kHz samples
        in [-1, 1] of exactly ``chunk_samples`` (fewer only when is_final), is_final).

        Returns each item's NEW tokens (funasr token strings; blank/sos/eos removed). After an
        is_final step the stream is finished. Results do not depend on which streams share a call.
        """
        plans: list[list[_Job]] = []
        seen: set[int] = set()
        for index, item in enumerate(items):
            stream, samples, is_final = item
            if not isinstance(stream, OnlineStream):
                raise TypeError(f"item {index}: expected an OnlineStream, got {type(stream).__name__}")
            if id(stream) in seen:
                raise ValueError(f"item {index}: the same stream appears twice in one decode() call")
            seen.add(id(stream))
            if stream.finished:
                raise StreamFinishedError(f"item {index}: the stream already received its final chunk")
            samples = np.asarray(samples)
            if samples.ndim != 1:
                raise ValueError(f"item {index}: samples must be 1-D, got shape {samples.shape}")
            samples = samples.astype(np.float32, copy=False)
            n = samples.shape[0]
            stride = stream.chunk_samples
            if n > stride or (n != stride and not is_final):
                raise ValueError(f"item {index}: expected {stride} samples"
                                 f"{' (or fewer for the final chunk)' if n < stride else ''}, got {n}")
            # funasr's inference(): n_chunks = len // stride + is_final; a full final chunk is a
            # normal chunk followed by an empty (tail) final step
            count = n // stride + int(bool(is_final))
            plans.append([_Job(index, stream, samples[i * stride:(i + 1) * stride],
                               bool(is_final) and i == count - 1) for i in range(count)])
        out: list[list[str]] = [[] for _ in items]
        for step in range(max((len(p) for p in plans), default=0)):
            jobs = [plan[step] for plan in plans if step < len(plan)]
            ready = []
            for job in jobs:
                job.speech = self._encoder_input(job)
                if job.speech is not None:
                    ready.append(job)
            if not ready:
                continue
            self._run_encoder(ready)
            fired = []
            for job in ready:
                job.embeds = self._cif(job)
                if job.embeds.shape[0] > 0:
                    fired.append(job)
            if fired:
                self._run_decoder(fired, out)
        for stream, _, is_final in items:
            stream.steps += 1
            stream.finished = bool(is_final)
        return out


__all__ = ["ParaformerOnline", "OnlineStream", "OnlineFrontend", "StreamFinishedError", "check_chunk_size",
           "check_look_back", "MAX_LOOK_BACK",
           "load_cmvn", "SAMPLES_PER_FRAME"]
