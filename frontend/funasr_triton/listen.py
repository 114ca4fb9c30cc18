"""`funasr-triton listen`: seed 002's event stream over Triton's `streaming_asr` sequence (gRPC, no frontend).

stdout carries one JSON object per line and nothing else (logs go to stderr):

    {"type":"voice.asr_text.partial","ts":1697634534123,"trace_id":"…","source":"funasr.streaming.paraformer-zh","text":"你好","confidence":0.0}
    {"type":"voice.asr_text.final","ts":…,"trace_id":"…","source":"…","text":"你好，世界","confidence":0.95}
    {"type":"core.error_event","ts":…,"trace_id":"…","source":"voice.asr","error_code":"infer_partial_failed","message":"…"}

`ts` is epoch ms when the line is written; one `trace_id` per utterance (from its first partial to its
final). A partial's text is the whole utterance so far; its confidence is 0.0 (streaming_asr reports a
confidence with finals only). A final is the 2-pass result (offline Paraformer + punctuation); with
`--itn` streaming_asr also applies the `itn` model to it (CONFIG `itn`), per sentence after punctuation.
A failure (Triton unreachable, a failed request, unreadable audio) is a `core.error_event` line and exit
status 1, never a traceback.

Audio: a file (any format ffmpeg reads; as fast as possible, or paced in real time with --realtime), raw
s16le mono PCM on stdin (`-`), or the microphone through ffmpeg (`--mic`: PulseAudio `default`, or e.g.
`--mic alsa:hw:0`).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid
from typing import IO, Callable, Iterator

import numpy as np

from .errors import AsrError

log = logging.getLogger("funasr_triton.listen")

SAMPLE_RATE = 16000
FRAME_MS = 60  # one LFR frame of the streaming Paraformer: chunk sizes count these
ERROR_SOURCE = "voice.asr"


def now_ms() -> int:
    return int(time.time() * 1000)


class EventWriter:
    """Seed 002's JSON lines on `out`, one trace_id per utterance."""

    def __init__(self, out: IO[str], source: str, clock: Callable[[], int] = now_ms):
        self.out, self.source, self.clock = out, source, clock
        self.trace_id: str | None = None

    def _write(self, record: dict) -> None:
        self.out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.out.flush()

    def _trace(self) -> str:
        if self.trace_id is None:
            self.trace_id = uuid.uuid4().hex
        return self.trace_id

    def partial(self, text: str) -> None:
        self._write({"type": "voice.asr_text.partial", "ts": self.clock(), "trace_id": self._trace(),
                     "source": self.source, "text": text, "confidence": 0.0})

    def final(self, text: str, confidence: float) -> None:
        self._write({"type": "voice.asr_text.final", "ts": self.clock(), "trace_id": self._trace(),
                     "source": self.source, "text": text, "confidence": round(float(confidence), 4)})
        self.trace_id = None

    def error(self, code: str, message: str) -> None:
        self._write({"type": "core.error_event", "ts": self.clock(), "trace_id": self.trace_id or uuid.uuid4().hex,
                     "source": ERROR_SOURCE, "error_code": code, "message": message})


class InputError(Exception):
    """The audio could not be read (ffmpeg missing or failing, an unreadable file)."""


def ffmpeg_command(args) -> list[str] | None:
    """ffmpeg reading the input as 16 kHz mono s16le on its stdout; None for raw PCM on stdin at 16 kHz."""
    base = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    out = ["-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    if args.mic is not None:
        kind, _, device = args.mic.partition(":") if ":" in args.mic else ("pulse", "", args.mic)
        return [*base, "-f", kind, "-i", device or "default", *out]
    if args.input == "-":
        if args.sample_rate == SAMPLE_RATE:
            return None
        return [*base[:1], "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ac", "1",
                "-ar", str(args.sample_rate), "-i", "pipe:0", *out]
    return [*base, "-i", args.input, *out]


def pcm_chunks(stream: IO[bytes], chunk_samples: int) -> Iterator[np.ndarray]:
    """Whole chunks of float32 samples from s16le bytes, the last one possibly shorter."""
    want = chunk_samples * 2
    pending = b""
    while True:
        data = stream.read(want - len(pending))
        if not data:
            break
        pending += data
        if len(pending) >= want:
            yield np.frombuffer(pending[:want], dtype="<i2").astype(np.float32) / 32768.0
            pending = pending[want:]
    pending = pending[:len(pending) // 2 * 2]
    if pending:
        yield np.frombuffer(pending, dtype="<i2").astype(np.float32) / 32768.0


def stream_config(args) -> tuple[dict, int]:
    """The streaming_asr CONFIG and the samples per chunk from --chunk-ms / --endpoint-silence-ms / --hotwords."""
    if args.chunk_ms <= 0 or args.chunk_ms % FRAME_MS or args.chunk_ms > 30 * FRAME_MS:
        raise ValueError(f"--chunk-ms must be a multiple of {FRAME_MS} between {FRAME_MS} and {30 * FRAME_MS}")
    frames = args.chunk_ms // FRAME_MS
    config = {"chunk_size": [0, frames, max(1, frames // 2) if frames > 1 else 0], "partial": True,
              "two_pass": True, "punctuation": not args.no_punc,
              "max_sentence_silence_ms": args.endpoint_silence_ms,
              "hotwords": [w for w in (args.hotwords or "").replace(",", " ").split() if w]}
    if args.itn:  # off is the model's default
        config["itn"] = True
    return config, frames * FRAME_MS * SAMPLE_RATE // 1000


def run(args, out: IO[str] = sys.stdout) -> int:
    from .triton_client import TritonAsrClient

    writer = EventWriter(out, args.source)
    try:
        config, chunk_samples = stream_config(args)
    except ValueError as e:
        writer.error("invalid_argument", str(e))
        return 2
    client = proc = None
    try:
        client = TritonAsrClient(args.url, timeout_s=args.timeout)
        needed = ("streaming_asr", "itn") if args.itn else ("streaming_asr",)  # streaming_asr calls itn
        if not client.ready(needed):
            writer.error("backend_unavailable", f"Triton at {args.url} is not reachable or {', '.join(needed)} "
                                                "is not ready")
            return 1
        command = ffmpeg_command(args)
        if command is None:
            source = sys.stdin.buffer
        else:
            try:
                proc = subprocess.Popen(command, stdin=sys.stdin.buffer if args.input == "-" else subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            except OSError as e:
                writer.error("audio_input_failed", f"cannot start ffmpeg: {e}")
                return 1
            source = proc.stdout
        log.info("listening: %s, chunk %d ms, endpoint silence %d ms", "microphone" if args.mic is not None
                 else ("stdin" if args.input == "-" else args.input), args.chunk_ms, args.endpoint_silence_ms)
        stream = client.open_stream(config)
        pacer = _Pacer(args.realtime and args.mic is None)
        code = "infer_partial_failed"
        try:
            for chunk in pcm_chunks(source, chunk_samples):
                pacer.wait(chunk.size)
                _emit(writer, stream.send(chunk))
            code = "infer_final_failed"
            _emit(writer, stream.send(np.zeros(0, np.float32), end=True))
        except KeyboardInterrupt:
            log.info("interrupted: closing the stream")
            if not stream.ended:
                _emit(writer, stream.send(np.zeros(0, np.float32), end=True))
        except AsrError as e:
            writer.error(code if e.code != "backend_unavailable" else "backend_unavailable", e.message)
            return 1
        if proc is not None:
            proc.stdout.close()
            err = proc.stderr.read().decode("utf-8", "replace").strip()
            if proc.wait() != 0:
                writer.error("audio_input_failed", f"ffmpeg failed: {err[-500:] or f'exit status {proc.returncode}'}")
                return 1
        return 0
    except AsrError as e:
        writer.error(e.code, e.message)
        return 1
    except Exception as e:  # noqa: BLE001 - the product is the JSON lines: an error event, never a traceback
        log.debug("listen failed", exc_info=True)
        writer.error("internal_error", f"{type(e).__name__}: {e}")
        return 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if client is not None:
            client.close()


class _Pacer:
    """With --realtime, sends no faster than the audio plays."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.sent = 0

    def wait(self, samples: int) -> None:
        if self.enabled:
            delay = self.t0 + self.sent / SAMPLE_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.sent += samples


def _emit(writer: EventWriter, events: list[dict]) -> None:
    for e in events:
        kind = e.get("event")
        if kind == "partial" and e.get("text"):
            writer.partial(e["text"])
        elif kind == "sentence_end":
            text = e.get("text", "")
            if text:
                writer.final(text, e.get("confidence", 0.0))
            else:
                writer.trace_id = None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "listen", help="seed 002's event stream: real-time recognition over Triton's streaming_asr (gRPC), JSON "
        "lines on stdout", description=__doc__.split("\n\n")[0] + " JSON lines on stdout "
        "(voice.asr_text.partial / voice.asr_text.final / core.error_event), logs on stderr.")
    p.add_argument("input", nargs="?", default=None,
                   help="an audio file (any format ffmpeg reads), or - for raw s16le mono PCM on stdin")
    p.add_argument("--mic", nargs="?", const="default", default=None, metavar="DEVICE",
                   help="record from the microphone through ffmpeg: a PulseAudio source (default: `default`) or "
                        "KIND:DEVICE for another ffmpeg input device, e.g. alsa:hw:0")
    p.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address")
    p.add_argument("--realtime", action="store_true", help="pace a file or stdin in real time (default: as fast as "
                   "Triton answers)")
    p.add_argument("--sample-rate", type=int, default=SAMPLE_RATE, help="sample rate of raw PCM on stdin")
    p.add_argument("--chunk-ms", type=int, default=600, help="audio per streaming request, a multiple of 60 ms "
                   "(latency of partials)")
    p.add_argument("--endpoint-silence-ms", type=int, default=800, help="silence that ends an utterance (a final)")
    p.add_argument("--hotwords", default="", help="hotwords for the 2-pass finals, space or comma separated")
    p.add_argument("--itn", action="store_true", help="inverse text normalization of finals (三点一四 -> 3.14), "
                   "applied by streaming_asr through the `itn` model; partials stay as recognised")
    p.add_argument("--no-punc", action="store_true", help="finals without punctuation")
    p.add_argument("--source", default="funasr.streaming.paraformer-zh", help="the `source` of result lines")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one Triton request may take")
    p.set_defaults(func=cmd_listen)


def cmd_listen(args) -> int:
    if args.mic is None and args.input is None:
        EventWriter(sys.stdout, args.source).error("invalid_argument", "give an audio file, - (stdin) or --mic")
        return 2
    return run(args)
