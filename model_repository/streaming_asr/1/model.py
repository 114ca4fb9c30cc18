"""Triton python backend for `streaming_asr`: real-time streams under the sequence batcher.

Each request is one piece of one stream (Triton sequence = stream, CORRID = its id). Python
models have no implicit state, so the streams live here (funasr_triton_models.streams), keyed by correlation id,
evicted when idle. The streaming Paraformer and the streaming FSMN-VAD run in-process
(onnxruntime); sentence finals are re-decoded by the offline `asr` ensemble, punctuated by
`punc` and, when the stream's CONFIG asks (`itn`), normalized by `itn`, all through BLS. Output
EVENTS is a JSON list of the events the request produced.
"""
from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from funasr_triton_models.bls import StreamingBls
from funasr_triton_models.fsmn_vad import FsmnVad
from funasr_triton_models.hotwords import MAX_HOTWORDS
from funasr_triton_models.paraformer_online import ParaformerOnline
from funasr_triton_models.stage import (BlsError, StageInputError, bls_error_response, error_response, input_array,
                                        int_param, loading, model_config, param, strings)
from funasr_triton_models.streams import ChunkRequest, StreamInputError, StreamManager

INPUTS = {"WAV": "TYPE_FP32", "CONFIG": "TYPE_STRING", "ABORT": "TYPE_BOOL"}
CONTROLS = {"CONTROL_SEQUENCE_START": "START", "CONTROL_SEQUENCE_END": "END", "CONTROL_SEQUENCE_CORRID": "CORRID"}
OUTPUTS = {"EVENTS": "TYPE_STRING"}
def _scalar(request, name: str, default=0):
    value = input_array(request, name, required=False)
    return default if value is None or value.size == 0 else value.reshape(-1)[0]


class TritonPythonModel:
    def initialize(self, args):
        config, version_dir = model_config(args, INPUTS, OUTPUTS)
        controls = {c.get("kind"): ci["name"] for ci in config.get("sequence_batching", {}).get("control_input", [])
                    for c in ci.get("control", [])}
        wrong = {kind: name for kind, name in CONTROLS.items() if controls.get(kind) != name}
        if wrong:
            raise pb_utils.TritonModelException(
                f"streaming_asr: config.pbtxt needs sequence_batching with control inputs {wrong} (one per stream)")
        for sub, hint in (("paraformer", "streaming"), ("vad", "vad")):
            if not (version_dir / sub).is_dir():
                raise pb_utils.TritonModelException(
                    f"streaming_asr: {version_dir / sub} is missing: run `funasr-triton export` (stage {hint})")
        threads = int_param(config, "intra_op_threads", 1)
        providers = [p.strip() for p in param(config, "providers", "CPUExecutionProvider").split(",") if p.strip()]
        quantized = param(config, "quantized", "false").strip().lower() == "true"
        with loading("streaming_asr", f"models from {version_dir}"):
            asr = ParaformerOnline(version_dir / "paraformer", intra_op_threads=threads, providers=providers,
                                   quantized=quantized)
            vad = FsmnVad(version_dir / "vad", intra_op_threads=1)
        self.manager = StreamManager(
            asr, vad, StreamingBls(),
            max_streams=int_param(config, "max_streams", 256, minimum=1),
            idle_s=float(int_param(config, "idle_seconds", 30, minimum=1)),
            retain_ms=int_param(config, "retain_ms", 10000, minimum=1000),
            max_hotwords=int_param(config, "max_hotwords", MAX_HOTWORDS),
            max_request_samples=int_param(config, "max_request_seconds", 60, minimum=1) * 16000)
        labels = {"model": args["model_name"], "instance": args["model_instance_name"]}
        # the families must outlive their metrics: keep both
        self.metric_families = [
            pb_utils.MetricFamily(name="funasr_streaming_open_streams", description="streams held by a "
                                  "streaming_asr instance", kind=pb_utils.MetricFamily.GAUGE),
            pb_utils.MetricFamily(name="funasr_streaming_evicted_total", description="streams dropped after "
                                  "idle_seconds without END", kind=pb_utils.MetricFamily.COUNTER)]
        self.open_gauge = self.metric_families[0].Metric(labels=labels)
        self.evicted_counter = self.metric_families[1].Metric(labels=labels)
        self._evicted_seen = 0

    def _chunk_request(self, request) -> ChunkRequest:
        wav = input_array(request, "WAV", np.float32)
        config = input_array(request, "CONFIG", required=False)
        return ChunkRequest(
            corrid=int(_scalar(request, "CORRID")), wav=wav.reshape(-1) if wav.ndim > 1 and wav.shape[0] == 1 else wav,
            start=bool(_scalar(request, "START")), end=bool(_scalar(request, "END")),
            abort=bool(_scalar(request, "ABORT", False)),
            config=strings(config)[0] if config is not None and config.size else None)

    async def execute(self, requests):
        parsed: list[ChunkRequest | BaseException] = []
        for request in requests:
            try:
                parsed.append(self._chunk_request(request))
            except Exception as exc:  # noqa: BLE001
                parsed.append(exc)
        valid = [p for p in parsed if isinstance(p, ChunkRequest)]
        outcomes = iter(await self.manager.run(valid))
        responses = []
        for p in parsed:
            outcome = next(outcomes) if isinstance(p, ChunkRequest) else p
            if isinstance(outcome, BlsError):
                responses.append(bls_error_response(outcome))
            elif isinstance(outcome, StreamInputError):
                responses.append(error_response("streaming_asr", StageInputError(str(outcome))))
            elif isinstance(outcome, BaseException):
                responses.append(error_response("streaming_asr", outcome))
            else:
                payload = json.dumps(outcome, ensure_ascii=False).encode("utf-8")
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("EVENTS", np.array([[payload]], dtype=object))]))
        self.open_gauge.set(len(self.manager.streams))
        if self.manager.evicted > self._evicted_seen:
            self.evicted_counter.increment(self.manager.evicted - self._evicted_seen)
            self._evicted_seen = self.manager.evicted
        return responses

    def finalize(self):
        self.manager = None
        self.open_gauge = self.evicted_counter = None  # metrics before their families
        self.metric_families = None
