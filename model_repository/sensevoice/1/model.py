"""Triton stage: one speech segment (16 kHz samples) -> SenseVoice-Small text, language, emotion, events.

Features (funasr_triton_models.features.AsrFrontend: the same fbank/LFR/CMVN as Paraformer's, with
SenseVoice's am.mvn), the exported graph under onnxruntime (features + language/textnorm query ids -> CTC
logits), greedy CTC and sentencepiece detokenisation with the tags parsed out
(funasr_triton_models.sensevoice_text).

Inputs: WAV [-1] FP32; LANGUAGE [1] STRING optional (auto, zh, en, yue, ja, ko; default auto);
USE_ITN [1] BOOL optional (SenseVoice's own punctuation + inverse text normalisation, `withitn`;
default false). Segments of different lengths are batched together (padded; rows keep their own
lengths). Outputs: TEXT (tags removed), DETECTED_LANGUAGE, EMOTION, EVENTS, TOKEN_IDS (the CTC
tokens, tags included: what `funasr-triton verify` compares with AutoModel), WORDS and TIMESTAMPS
([start, end] ms from the segment's start): FunASR's token timestamps by CTC forced alignment
(funasr_triton_models.ctc_align, as AutoModel's output_timestamp=True), computed only when a request asks for
WORDS or TIMESTAMPS (empty where there is nothing to align or FunASR's own alignment would fail).

The stage is optional: a repository exported without `--stages sensevoice` still loads it, and every
request then gets NOT_FOUND "sensevoice is not exported" (how the frontend tells whether it can
serve `model=sensevoice-small`).
"""
import json

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from funasr_triton_models.batching import length_batches
from funasr_triton_models.ctc_align import token_timestamps
from funasr_triton_models.features import AsrFrontend, FrontendOptions, load_cmvn
from funasr_triton_models.sensevoice_text import GRAPH_INPUTS, GRAPH_OUTPUTS, Detokenizer, run_batch
from funasr_triton_models.stage import (StageInputError, error_response, input_array, int_param, model_config,
                                        pad_fraction_param, param,
                                        require_files, scalar_input, session_options, strings)

STAGE = "sensevoice"
INPUTS = {"WAV": "TYPE_FP32", "LANGUAGE": "TYPE_STRING", "USE_ITN": "TYPE_BOOL"}
OUTPUTS = {"TEXT": "TYPE_STRING", "DETECTED_LANGUAGE": "TYPE_STRING", "EMOTION": "TYPE_STRING",
           "EVENTS": "TYPE_STRING", "TOKEN_IDS": "TYPE_INT32", "WORDS": "TYPE_STRING", "TIMESTAMPS": "TYPE_INT32"}
ALIGNED = ("WORDS", "TIMESTAMPS")  # asking for either runs the forced alignment
META_FILE = "sensevoice.json"
NOT_EXPORTED = "sensevoice is not exported in this repository (funasr-triton export --stages sensevoice)"


class TritonPythonModel:
    def initialize(self, args):
        config, model_dir = model_config(args, INPUTS, OUTPUTS)
        model_path = model_dir / param(config, "model_file", "model.onnx")
        self.min_samples = int_param(config, "min_samples", 400, minimum=1)
        self.max_samples = int_param(config, "max_samples", 961600, minimum=self.min_samples)
        self.max_batch_frames = int_param(config, "max_batch_frames", 12000, minimum=1)
        self.max_pad_fraction = pad_fraction_param(config)  # unset: batches padded to max_batch_frames only
        self.session = None
        if not (model_dir / META_FILE).exists() and not model_path.exists():
            pb_utils.Logger.log_warn(f"{STAGE}: {model_dir} holds no export; requests get: {NOT_EXPORTED}")
            return
        require_files((model_path, model_dir / META_FILE), "run `funasr-triton export --stages sensevoice`")
        meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
        try:
            self.frontend = AsrFrontend(FrontendOptions(**meta["frontend"]), load_cmvn(model_dir / "am.mvn"))
            self.detok = Detokenizer(model_dir / meta["bpemodel"])
            self.blank_id = int(meta["blank_id"])
            self.query_frames = int(meta.get("query_frames", 4))
            self.language_ids = {str(k): int(v) for k, v in meta["language_ids"].items()}
            self.textnorm_ids = {str(k): int(v) for k, v in meta["textnorm_ids"].items()}
            if "auto" not in self.language_ids or set(self.textnorm_ids) != {"withitn", "woitn"}:
                raise ValueError("language_ids needs 'auto', textnorm_ids 'withitn' and 'woitn'")
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise pb_utils.TritonModelException(f"{model_dir / META_FILE}: {exc}") from exc
        opts = session_options(config, default_threads=2)
        wanted = [p.strip() for p in param(config, "providers", "CPUExecutionProvider").split(",") if p.strip()]
        providers = [p for p in wanted if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(model_path), opts, providers=providers)
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != (GRAPH_INPUTS, GRAPH_OUTPUTS):
            raise pb_utils.TritonModelException(
                f"{model_path} has {names[0]} -> {names[1]}, expected {GRAPH_INPUTS} -> {GRAPH_OUTPUTS}")

    def _prepare(self, request) -> tuple[np.ndarray, int, int]:
        """(features, language id, textnorm id) of one request."""
        wav = input_array(request, "WAV", np.float32, ndim=2)
        if wav.shape[0] != 1:
            raise StageInputError(f"WAV must hold one segment, got {wav.shape[0]}")
        wav = wav[0]
        if not self.min_samples <= wav.shape[0] <= self.max_samples:
            raise StageInputError(f"WAV has {wav.shape[0]} samples; {self.min_samples}..{self.max_samples} are accepted")
        if not np.isfinite(wav).all():
            raise StageInputError("WAV contains NaN or infinite samples")
        lang = input_array(request, "LANGUAGE", required=False)
        language = strings(lang)[0].strip().lower() if lang is not None and lang.size else "auto"
        language = language or "auto"
        if language not in self.language_ids:
            raise StageInputError(f"LANGUAGE {language!r}: one of {', '.join(self.language_ids)}")
        use_itn = bool(scalar_input(request, "USE_ITN", np.bool_, False))
        feats = self.frontend(wav)
        if feats.shape[0] == 0:
            raise StageInputError("WAV is too short for one feature frame")
        return feats, self.language_ids[language], self.textnorm_ids["withitn" if use_itn else "woitn"]

    def _respond(self, request, ids: list[int], logits: np.ndarray, length: int):
        rich = self.detok(ids)
        text = lambda v: np.array([v.encode("utf-8")], dtype=object)  # noqa: E731
        words, stamps = [], []
        if any(name in ALIGNED for name in request.requested_output_names()):
            aligned = token_timestamps(logits, length, rich.raw, self.detok.sp, self.blank_id, self.query_frames)
            words, stamps = aligned or ([], [])
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("TEXT", text(rich.text)[None]),
            pb_utils.Tensor("DETECTED_LANGUAGE", text(rich.language)[None]),
            pb_utils.Tensor("EMOTION", text(rich.emotion)[None]),
            pb_utils.Tensor("EVENTS", np.array([[e.encode("utf-8") for e in rich.events]], dtype=object).reshape(1, -1)),
            pb_utils.Tensor("TOKEN_IDS", np.array(ids, dtype=np.int32).reshape(1, -1)),
            pb_utils.Tensor("WORDS", np.array([w.encode("utf-8") for w in words], dtype=object).reshape(1, -1)),
            pb_utils.Tensor("TIMESTAMPS", np.array(stamps, dtype=np.int32).reshape(1, -1, 2)),
        ])

    def execute(self, requests):
        if self.session is None:
            err = pb_utils.TritonError(f"{STAGE}: {NOT_EXPORTED}", pb_utils.TritonError.NOT_FOUND)
            return [pb_utils.InferenceResponse(error=err) for _ in requests]
        responses: list = [None] * len(requests)
        ready = []
        for i, request in enumerate(requests):
            try:
                ready.append((i, self._prepare(request)))
            except Exception as exc:  # noqa: BLE001 - this request's own error
                responses[i] = error_response(STAGE, exc)
        # similar lengths share a batch
        for batch in length_batches(ready, lambda item: item[1][0].shape[0], self.max_batch_frames,
                                    self.max_pad_fraction):
            try:
                results = run_batch(self.session, [row for _, row in batch], self.blank_id)
            except Exception as exc:  # noqa: BLE001 - the batch's requests each get the error
                results = [exc] * len(batch)
            for (i, _), result in zip(batch, results):
                try:
                    if isinstance(result, Exception):
                        raise result
                    responses[i] = self._respond(requests[i], *result)
                except Exception as exc:  # noqa: BLE001 - this request's own error
                    responses[i] = error_response(STAGE, exc)
        return responses
