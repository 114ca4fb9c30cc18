"""The only module that talks to Triton over gRPC.

- `AsyncTritonAsrClient.open_job`: a long recording on the `transcribe` sequence model, audio sent in
  pieces, events read as segments are recognised (what every HTTP surface uses);
- `open_stream`: a real-time stream on `streaming_asr`;
- `TritonAsrClient.transcribe`: a whole file on `pipeline` (tools, tests), plus stage-level calls.

Maps Triton failures onto AsrError: unreachable -> 503 (+Retry-After), deadline -> 504,
INVALID_ARG -> 400, a model whose python-backend stub died -> 503 model_unavailable (+Retry-After; Triton
2.51 neither restarts the stub nor marks the model unready: the async client remembers the model for /ready),
anything else -> 502.
"""
from __future__ import annotations

import asyncio
import json
import re
import secrets
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException

from .contract import TranscribeOptions, TritonResult
from .errors import AsrError

PIPELINE = "pipeline"
TRANSCRIBE = "transcribe"
STREAMING = "streaming_asr"
REQUIRED_MODELS = ("pipeline", "transcribe", "vad", "asr", "feature_extractor", "paraformer", "asr_decode", "punc",
                   "itn", "streaming_asr", "speaker_embedding")
# what the frontend calls: `transcribe` and the stages it calls (asr = feature_extractor -> paraformer -> asr_decode)
OFFLINE_MODELS = ("transcribe", "vad", "asr", "feature_extractor", "paraformer", "asr_decode", "punc", "itn")


def required_models(streaming: bool, diarization: bool) -> tuple[str, ...]:
    """The models a frontend with these settings uses: `streaming_asr` only when the real-time routes are
    served, `speaker_embedding` only when diarization can be asked for."""
    return (*OFFLINE_MODELS, *((STREAMING,) if streaming else ()), *(("speaker_embedding",) if diarization else ()))
__all__ = ["TranscribeOptions", "TritonAsrClient", "AsyncTritonAsrClient", "AsrJob", "map_error"]


def build_inputs(samples: np.ndarray, options: TranscribeOptions) -> list:
    """Pipeline inputs: WAV [1, samples] FP32, HOTWORDS [1, n] BYTES, ENABLE_* [1, 1] BOOL."""
    wav = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
    inputs = [grpcclient.InferInput("WAV", list(wav.shape), "FP32")]
    inputs[0].set_data_from_numpy(wav)
    words = [w for w in options.hotwords if w.strip()]
    if words:
        hot = np.array([[w.encode("utf-8") for w in words]], dtype=object)
        inputs.append(grpcclient.InferInput("HOTWORDS", list(hot.shape), "BYTES"))
        inputs[-1].set_data_from_numpy(hot)
    flags = [("ENABLE_PUNC", options.punctuation), ("ENABLE_TIMESTAMPS", options.timestamps)]
    if options.diarize:
        flags.append(("ENABLE_DIARIZATION", True))
    if options.itn:
        flags.append(("ENABLE_ITN", True))
    if options.logprobs:
        flags.append(("ENABLE_LOGPROBS", True))
    for name, value in flags:
        flag = np.array([[value]], dtype=bool)
        inputs.append(grpcclient.InferInput(name, [1, 1], "BOOL"))
        inputs[-1].set_data_from_numpy(flag)
    if options.model != "paraformer":  # the second model (sensevoice)
        for name, value in (("MODEL", options.model), ("LANGUAGE", options.language or "auto")):
            inputs.append(grpcclient.InferInput(name, [1, 1], "BYTES"))
            inputs[-1].set_data_from_numpy(np.array([[value.encode("utf-8")]], dtype=object))
    if options.diarize:
        for name, value in (("NUM_SPEAKERS", options.num_speakers), ("MIN_SPEAKERS", options.min_speakers),
                            ("MAX_SPEAKERS", options.max_speakers)):
            if value is not None:
                inputs.append(grpcclient.InferInput(name, [1, 1], "INT32"))
                inputs[-1].set_data_from_numpy(np.array([[value]], dtype=np.int32))
    return inputs


def stream_inputs(samples: np.ndarray, config: str | None, final: bool = False, abort: bool = False) -> list:
    """Inputs of the sequence models `streaming_asr` and `transcribe`: WAV [1, samples] FP32 (16 kHz),
    CONFIG [1, 1] BYTES on the first request only, FINAL / ABORT [1, 1] BOOL when set (streaming_asr reads
    ABORT only)."""
    wav = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
    inputs = [grpcclient.InferInput("WAV", list(wav.shape), "FP32")]
    inputs[0].set_data_from_numpy(wav)
    if config is not None:
        inputs.append(grpcclient.InferInput("CONFIG", [1, 1], "BYTES"))
        inputs[-1].set_data_from_numpy(np.array([[config.encode("utf-8")]], dtype=object))
    for name, value in (("FINAL", final), ("ABORT", abort)):
        if value:
            inputs.append(grpcclient.InferInput(name, [1, 1], "BOOL"))
            inputs[-1].set_data_from_numpy(np.array([[True]]))
    return inputs


def _events(result) -> list[dict]:
    raw = result.as_numpy("EVENTS").reshape(-1)[0]
    return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)


def new_sequence_id() -> int:
    """A random non-zero uint64 correlation id (unique across frontend replicas without coordination)."""
    return secrets.randbits(63) | 1


def _result_json(result) -> dict:
    raw = result.as_numpy("RESULT").reshape(-1)[0]
    return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)


# the python backend's answer once a model instance's stub process is gone: "Stub process 'punc_0_0' is not
# healthy." (instance name = <model>_<group>_<index>); the model stays READY in Triton and every later request
# to that instance fails the same way
UNHEALTHY_STUB = re.compile(r"Stub process '(?P<model>.+?)_\d+_\d+' is not healthy")
BROKEN_MODEL_TTL_S = 30.0  # a model seen with a dead stub counts as unready this long after the last failure


def map_error(exc: InferenceServerException) -> AsrError:
    status = (exc.status() or "").upper()
    msg = exc.message() or str(exc)
    stub = UNHEALTHY_STUB.search(msg)
    if stub:
        return AsrError(f"the model {stub['model']!r} is unavailable (its Triton backend process died); retry later",
                        503, "model_unavailable", retry_after_s=5)
    if "UNAVAILABLE" in status or "failed to connect" in msg.lower() or "connection refused" in msg.lower():
        return AsrError("the recognition backend (Triton) is unavailable", 503, "backend_unavailable", retry_after_s=5)
    if "DEADLINE" in status:
        return AsrError("recognition did not finish within the deadline", 504, "deadline_exceeded")
    if "NOT_FOUND" in status and "not exported" in msg:  # an optional model (sensevoice) without weights
        return AsrError(msg, 404, "model_not_found")
    if "INVALID_ARG" in status or "INVALID_ARGUMENT" in status:
        return AsrError(msg, 400, "invalid_audio")
    return AsrError(f"recognition failed: {msg}", 502, "backend_error")


class TritonAsrClient:
    def __init__(self, url: str = "127.0.0.1:8001", timeout_s: float = 600.0):
        self.url = url
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url=url)

    def close(self) -> None:
        self._client.close()

    def ready(self, models: tuple[str, ...] = REQUIRED_MODELS) -> bool:
        try:
            return self._client.is_server_ready() and all(self._client.is_model_ready(m) for m in models)
        except InferenceServerException:
            return False

    def transcribe(self, samples: np.ndarray, options: TranscribeOptions | None = None) -> dict:
        options = options or TranscribeOptions()
        try:
            result = self._client.infer(PIPELINE, build_inputs(samples, options),
                                        outputs=[grpcclient.InferRequestedOutput("RESULT")],
                                        client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise map_error(exc) from exc
        return _result_json(result)

    def open_stream(self, config: dict | None = None) -> "TritonAsrStream":
        """A real-time stream on the `streaming_asr` sequence model (see AsyncTritonAsrClient.open_stream)."""
        return TritonAsrStream(self, config or {})

    def statistics(self, model: str = "") -> dict:
        return self._client.get_inference_statistics(model_name=model, as_json=True)

    # -- stage-level calls (used by `funasr-triton verify` and diagnostics) --------------------

    def _infer(self, model: str, arrays: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        inputs = []
        for name, array in arrays.items():
            dtype = "BYTES" if array.dtype == object else {np.float32: "FP32", np.int32: "INT32", np.bool_: "BOOL"}[array.dtype.type]
            inputs.append(grpcclient.InferInput(name, list(array.shape), dtype))
            inputs[-1].set_data_from_numpy(array)
        try:
            result = self._client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
                                        client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise map_error(exc) from exc
        return {o: result.as_numpy(o) for o in outputs}

    def vad_segments(self, samples: np.ndarray) -> list[list[int]]:
        out = self._infer("vad", {"WAV": np.asarray(samples, dtype=np.float32)}, ["SEGMENTS"])
        return out["SEGMENTS"].reshape(-1, 2).tolist()

    def recognize_segment(self, samples: np.ndarray, hotwords: list[str] | None = None) -> dict:
        hot = np.array([[w.encode("utf-8") for w in (hotwords or [""])]], dtype=object)
        out = self._infer("asr", {"WAV": np.asarray(samples, dtype=np.float32)[None], "HOTWORDS": hot},
                          ["TEXT", "WORDS", "TIMESTAMPS", "WORD_LOGPROBS"])
        return {"text": _str(out["TEXT"].reshape(-1)[0]), "words": [_str(w) for w in out["WORDS"].reshape(-1)],
                "timestamps": out["TIMESTAMPS"].reshape(-1, 2).tolist(),
                "logprobs": [float(x) for x in out["WORD_LOGPROBS"].reshape(-1)]}

    def sensevoice_segment(self, samples: np.ndarray, language: str = "auto", use_itn: bool = False,
                           timestamps: bool = False) -> dict:
        """One segment on the `sensevoice` model: text (tags removed), language, emotion, events, token ids;
        with `timestamps` also its words and their [start, end] ms (CTC forced alignment, as FunASR's)."""
        out = self._infer("sensevoice", {"WAV": np.asarray(samples, dtype=np.float32)[None],
                                         "LANGUAGE": np.array([[language.encode("utf-8")]], dtype=object),
                                         "USE_ITN": np.array([[use_itn]], dtype=bool)},
                          ["TEXT", "DETECTED_LANGUAGE", "EMOTION", "EVENTS", "TOKEN_IDS",
                           *(["WORDS", "TIMESTAMPS"] if timestamps else [])])
        result = {"text": _str(out["TEXT"].reshape(-1)[0]), "language": _str(out["DETECTED_LANGUAGE"].reshape(-1)[0]),
                  "emotion": _str(out["EMOTION"].reshape(-1)[0]), "events": [_str(e) for e in out["EVENTS"].reshape(-1)],
                  "token_ids": out["TOKEN_IDS"].reshape(-1).tolist()}
        if timestamps:
            result["words"] = [_str(w) for w in out["WORDS"].reshape(-1)]
            result["timestamps"] = out["TIMESTAMPS"].reshape(-1, 2).tolist()
        return result

    def punctuate(self, text: str) -> str:
        out = self._infer("punc", {"TEXT": np.array([text.encode("utf-8")], dtype=object)}, ["PUNC_TEXT"])
        return _str(out["PUNC_TEXT"].reshape(-1)[0])

    def normalize(self, texts: list[str]) -> list[str]:
        """Inverse text normalization of each text (the `itn` model; one batch)."""
        if not texts:
            return []
        out = self._infer("itn", {"TEXT": np.array([[t.encode("utf-8")] for t in texts], dtype=object)}, ["TEXT"])
        return [_str(t) for t in out["TEXT"].reshape(-1)]

    def speaker_embedding(self, samples: np.ndarray) -> np.ndarray:
        out = self._infer("speaker_embedding", {"WAV": np.asarray(samples, dtype=np.float32)[None]}, ["EMBEDDING"])
        return out["EMBEDDING"].reshape(-1)


class StreamSequence:
    """What both stream clients share: one real-time stream is a Triton sequence (random correlation id) on
    the `streaming_asr` model; the first request starts it and carries the config, `end=True` ends it, and
    no request follows the end (nor an error: the client then counts the stream as ended)."""

    def __init__(self, client: "TritonAsrClient | AsyncTritonAsrClient", config: dict):
        self._client = client
        self.sequence_id = new_sequence_id()
        self._config: str | None = json.dumps(config)
        self.ended = False  # no more requests from this object

    @property
    def started(self) -> bool:
        return self._config is None

    def _request(self, samples: np.ndarray, end: bool) -> dict:
        """The next request, as keyword arguments of `infer` (the same for the sync and the asyncio client)."""
        if self.ended:
            raise AsrError("the stream has already ended", 400, "stream_ended")
        start, config = self._config is not None, self._config
        self._config = None
        self.ended = end
        return dict(model_name=STREAMING, inputs=stream_inputs(samples, config),
                    outputs=[grpcclient.InferRequestedOutput("EVENTS")], sequence_id=self.sequence_id,
                    sequence_start=start, sequence_end=end, client_timeout=self._client.timeout_s)


class TritonAsrStream(StreamSequence):
    """Synchronous twin of AsyncTritonAsrStream (the `listen` command, tests)."""

    def send(self, samples: np.ndarray, end: bool = False) -> list[dict]:
        request = self._request(samples, end)
        try:
            result = self._client._client.infer(**request)
        except InferenceServerException as exc:
            self.ended = True
            raise map_error(exc) from exc
        return _events(result)


def _str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class AsyncTritonAsrClient:
    """asyncio twin of TritonAsrClient for the HTTP frontend (tritonclient.grpc.aio)."""

    def __init__(self, url: str = "127.0.0.1:8001", timeout_s: float = 600.0, ready_timeout_s: float = 2.0):
        self.url = url
        self.timeout_s = timeout_s
        self.ready_timeout_s = ready_timeout_s
        # reconnect quickly after a Triton restart instead of gRPC's default backoff of up to 120 s
        # (passing channel_args replaces tritonclient's defaults, so its message-size limits are restated)
        self._client = grpcclient_aio.InferenceServerClient(url=url, channel_args=[
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.initial_reconnect_backoff_ms", 500), ("grpc.min_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 3000)])
        self.broken: dict[str, float] = {}  # model -> monotonic time of its last dead-stub failure
        self._late_aborts: set[asyncio.Task] = set()

    def map_error(self, exc: InferenceServerException) -> AsrError:
        """map_error, remembering a model whose stub died (unready for BROKEN_MODEL_TTL_S after the last failure)."""
        err = map_error(exc)
        stub = UNHEALTHY_STUB.search(exc.message() or str(exc)) if err.code == "model_unavailable" else None
        if stub:
            self.broken[stub["model"]] = time.monotonic()
        return err

    def broken_models(self) -> list[str]:
        now = time.monotonic()
        for model in [m for m, t in self.broken.items() if now - t > BROKEN_MODEL_TTL_S]:
            del self.broken[model]
        return list(self.broken)

    async def close(self) -> None:
        for task in list(self._late_aborts):
            task.cancel()
        await self._client.close()

    def abort_late(self, model: str, sequence_id: int, within_s: float = 300.0) -> None:
        """End a sequence whose request ran past the deadline, in the background: Triton may still run that
        request later (a stalled Triton does, once it resumes) and open state for it that no client would end.
        ABORT+END is retried while Triton keeps missing the deadline, up to within_s; any answer ends it."""
        async def run() -> None:
            inputs = stream_inputs(np.zeros(0, np.float32), None, abort=True)
            t0, delay = time.monotonic(), 1.0
            while time.monotonic() - t0 < within_s:
                try:
                    await self._client.infer(model, inputs, sequence_id=sequence_id, sequence_end=True,
                                             client_timeout=self.ready_timeout_s * 5)
                    return
                except InferenceServerException as exc:
                    if "DEADLINE" not in (exc.status() or "").upper():
                        return  # answered (e.g. no such sequence) or Triton gone with its state: nothing to end
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        task = asyncio.ensure_future(run())
        self._late_aborts.add(task)
        task.add_done_callback(self._late_aborts.discard)

    async def ready(self, models: tuple[str, ...] = REQUIRED_MODELS) -> bool:
        return not await self.unready(models)

    async def unready(self, models: tuple[str, ...] = REQUIRED_MODELS) -> list[str]:
        """The models of `models` that are not ready (all of them when Triton is unreachable or not ready)."""
        try:
            if not await self._client.is_server_ready(client_timeout=self.ready_timeout_s):
                self.broken.clear()  # a Triton that restarts gets new stubs
                return list(models)
            unready = [m for m in models
                       if not await self._client.is_model_ready(m, client_timeout=self.ready_timeout_s)]
        except InferenceServerException:
            self.broken.clear()
            return list(models)
        broken = self.broken_models()
        return unready + [m for m in models if m in broken and m not in unready]

    async def sensevoice_available(self) -> bool:
        """Whether `sensevoice` is loaded and exported: one 0.1 s silent segment answered (NOT_FOUND when the
        repository has no export; not ready when the repository predates the model)."""
        try:
            if not await self._client.is_model_ready("sensevoice", client_timeout=self.ready_timeout_s):
                return False
            wav = grpcclient.InferInput("WAV", [1, 1600], "FP32")
            wav.set_data_from_numpy(np.zeros((1, 1600), np.float32))
            await self._client.infer("sensevoice", [wav], outputs=[grpcclient_aio.InferRequestedOutput("TEXT")],
                                     client_timeout=self.ready_timeout_s * 5)
            return True
        except InferenceServerException:
            return False

    def open_job(self, options: TranscribeOptions | None = None) -> "AsrJob":
        """A long recording on `transcribe`: see AsrJob."""
        return AsrJob(self, options or TranscribeOptions())

    def open_stream(self, config: dict | None = None) -> "AsyncTritonAsrStream":
        """A real-time stream. config (JSON, read when the sequence starts): chunk_size [0,10,5],
        partial (bool: online partial results), two_pass (bool: re-decode each sentence offline),
        punctuation (bool), max_sentence_silence_ms (int; omitted or None: FunASR's dynamic end silence),
        encoder_chunk_look_back / decoder_chunk_look_back (int, FunASR's), hotwords (list[str], 2-pass only),
        itn (bool: inverse text normalization of the finals through the `itn` model)."""
        return AsyncTritonAsrStream(self, config or {})


class AsyncTritonAsrStream(StreamSequence):
    """One real-time stream: a Triton sequence (random correlation id) on the `streaming_asr` model.

    `send(samples)` passes 16 kHz float samples (any length; the model buffers partial chunks) and
    returns the events they produced: `sentence_begin`, `partial`, `sentence_end` dicts (see
    model_repository/streaming_asr/config.pbtxt). The first call starts the sequence and carries the
    stream's config; `send(..., end=True)` flushes and ends it. `abort()` ends it without waiting
    for results, freeing the model's state at once (otherwise the model evicts it when idle).
    """

    def __init__(self, client: "AsyncTritonAsrClient", config: dict):
        super().__init__(client, config)
        self._closed = False  # the model has let go of the stream (END answered or ABORT sent)

    async def send(self, samples: np.ndarray, end: bool = False) -> list[dict]:
        request = self._request(samples, end)
        try:
            result = await self._client._client.infer(**request)
        except InferenceServerException as exc:
            self.ended = True
            err = self._client.map_error(exc)
            if err.status == 504:  # Triton may still run it later: end the stream then, in the background
                self._closed = True
                self._client.abort_late(STREAMING, self.sequence_id)
            raise err from exc
        self._closed = end
        return _events(result)

    async def abort(self) -> None:
        """End the sequence now (state freed in the model); errors are ignored: this is cleanup."""
        self.ended = True
        if self._closed or not self.started:
            return
        self._closed = True
        inputs = stream_inputs(np.zeros(0, np.float32), None, abort=True)
        try:
            await self._client._client.infer(STREAMING, inputs, sequence_id=self.sequence_id, sequence_end=True,
                                             client_timeout=self._client.ready_timeout_s * 5)
        except InferenceServerException as exc:
            if "DEADLINE" in (exc.status() or "").upper():
                self._client.abort_late(STREAMING, self.sequence_id)


class AsrJob:
    """One recording on the `transcribe` sequence model (contract: model_repository/transcribe/config.pbtxt).

    `send(samples)` passes the next 16 kHz samples and returns the events recognised so far (it returns
    later while Triton's backlog for this recording is full: back-pressure); `send(samples, final=True)`
    marks the end of the audio; after it, `poll()` until `result` is set. `abort()` stops the
    recording's remaining work in Triton at once (client gone); `close()` releases the sequence.
    """

    def __init__(self, client: AsyncTritonAsrClient, options: TranscribeOptions):
        self._client = client
        self.sequence_id = new_sequence_id()
        self._config: str | None = json.dumps(options.job_config(), ensure_ascii=False)
        self.result: TritonResult | None = None
        self.progress: dict = {}
        self._open = False  # Triton holds the sequence (started, not yet ended)

    async def _infer(self, samples: np.ndarray, final: bool = False, end: bool = False,
                     abort: bool = False) -> list[dict]:
        start, config = self._config is not None, self._config
        self._config = None
        self._open = self._open or start
        try:
            result = await self._client._client.infer(
                TRANSCRIBE, stream_inputs(samples, config, final, abort),
                outputs=[grpcclient_aio.InferRequestedOutput("EVENTS")], sequence_id=self.sequence_id,
                sequence_start=start, sequence_end=end, client_timeout=self._client.timeout_s)
        except InferenceServerException as exc:
            err = self._client.map_error(exc)
            if err.status == 504 and self._open:  # Triton may still run it later: end it then, in the background
                self._client.abort_late(TRANSCRIBE, self.sequence_id)
            self._open = False  # a request the model failed ends the recording there
            raise err from exc
        if end:
            self._open = False
        events = _events(result)
        for e in events:
            if e.get("type") == "progress":
                self.progress = e
            elif e.get("type") == "result":
                self.result = TritonResult.model_validate(e["result"])
        return [e for e in events if e.get("type") != "progress"]

    async def send(self, samples: np.ndarray, final: bool = False) -> list[dict]:
        return await self._infer(samples, final=final)

    async def poll(self) -> list[dict]:
        return await self._infer(np.zeros(0, np.float32))

    async def close(self) -> None:
        """Release the sequence (after the result, or to give up quietly)."""
        if self._open:
            await self._infer(np.zeros(0, np.float32), end=True)

    async def abort(self) -> None:
        """Stop the recording's work in Triton now; errors are ignored: this is cleanup."""
        if not self._open:
            return
        try:
            await asyncio.wait_for(self._infer(np.zeros(0, np.float32), end=True, abort=True),
                                   self._client.ready_timeout_s * 5)
        except (AsrError, asyncio.TimeoutError):
            self._open = False
