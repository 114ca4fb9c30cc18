"""Locust users for funasr-triton: the OpenAI route, the Alibaba NLS REST route and Triton gRPC directly.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000          # web UI
    python -m loadtest.run --users 4 --run-time 60s ...                     # headless + summary (preferred)

Audio: a realistic mix of clip lengths, generated once with espeak-ng + ffmpeg into a cache directory
(Mandarin sentences with short pauses), or every audio file in LOADTEST_AUDIO_DIR.

Environment:
  LOADTEST_TRITON_URL     Triton gRPC host:port for TritonGrpcUser (default 127.0.0.1:8001)
  LOADTEST_AUDIO_DIR      use these files (wav/mp3/flac/...) instead of generated clips, equal weights
  LOADTEST_CLIPS          generated clip lengths and weights, "SECONDS:WEIGHT,..." (default "3:5,10:3,30:1")
  LOADTEST_CACHE_DIR      where generated clips are kept (default .cache/loadtest-audio)
  LOADTEST_WAIT           "MIN,MAX" think time in seconds between a user's requests (default "0,0.2")
  LOADTEST_TIMEOUT_S      per-request timeout (default 600)
  LOADTEST_AUDIO_STATS    where to write per-user-class audio statistics at the end
                          (default: <--csv prefix>_audio.json when --csv is given)

Every request is named after its route and records the audio seconds it carried; at the end the per-class
requests, failures, response times and successfully transcribed audio seconds are written to
LOADTEST_AUDIO_STATS, from which loadtest/run.py computes audio-seconds per second and the real-time factor.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from locust import HttpUser, User, between, events, task

# gRPC's C core must cooperate with gevent (locust monkey-patches on import) or one blocking call stalls every
# simulated user; this has to run before any channel is created. Only the sync tritonclient.grpc is used here.
import grpc.experimental.gevent as grpc_gevent  # noqa: E402

grpc_gevent.init_gevent()

import tritonclient.grpc as grpcclient  # noqa: E402
from funasr_triton_tools.speech import SENTENCES, espeak  # noqa: E402  (the clips the tests use too)

SR = 16000
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = float(os.environ.get("LOADTEST_TIMEOUT_S", "600"))


# -- audio -------------------------------------------------------------------------------------------------

@dataclass
class Clip:
    name: str
    data: bytes            # the file as uploaded over HTTP
    samples: np.ndarray    # 16 kHz mono float32 for gRPC
    seconds: float
    weight: float


def _decode(data: bytes) -> np.ndarray:
    pcm = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-ac", "1", "-ar", str(SR),
                          "-f", "s16le", "pipe:1"], input=data, check=True, capture_output=True).stdout
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


def _write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1.0, 1.0 - 1.0 / 32768) * 32768.0).astype("<i2")
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())
    tmp.replace(path)


def make_clip(seconds: float, path: Path) -> None:
    """Sentences separated by 0.3-0.8 s pauses until `seconds`, cut/padded to exactly that length."""
    rng = random.Random(int(seconds * 1000))
    parts, total, i = [np.zeros(int(0.2 * SR), np.float32)], 0.2, rng.randrange(len(SENTENCES))
    while total < seconds:
        speech = espeak(SENTENCES[i % len(SENTENCES)])
        pause = np.zeros(int(rng.uniform(0.3, 0.8) * SR), np.float32)
        parts += [speech, pause]
        total += (len(speech) + len(pause)) / SR
        i += 1
    samples = np.concatenate(parts)[: int(seconds * SR)]
    _write_wav(path, samples)


def parse_clips(spec: str) -> list[tuple[float, float]]:
    out = []
    for item in spec.split(","):
        if item.strip():
            sec, _, weight = item.partition(":")
            out.append((float(sec), float(weight or 1)))
    return out


def load_clips() -> list[Clip]:
    audio_dir = os.environ.get("LOADTEST_AUDIO_DIR")
    clips = []
    if audio_dir:
        for path in sorted(Path(audio_dir).iterdir()):
            if path.is_file() and not path.name.startswith("."):
                data = path.read_bytes()
                samples = _decode(data)
                clips.append(Clip(path.name, data, samples, len(samples) / SR, 1.0))
        if not clips:
            raise RuntimeError(f"LOADTEST_AUDIO_DIR={audio_dir} holds no audio files")
        return clips
    cache = Path(os.environ.get("LOADTEST_CACHE_DIR", ROOT / ".cache" / "loadtest-audio"))
    cache.mkdir(parents=True, exist_ok=True)
    for seconds, weight in parse_clips(os.environ.get("LOADTEST_CLIPS", "3:5,10:3,30:1")):
        path = cache / f"clip-{seconds:g}s.wav"
        if not path.exists():
            make_clip(seconds, path)
        data = path.read_bytes()
        with wave.open(str(path), "rb") as w:
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        clips.append(Clip(path.name, data, samples, len(samples) / SR, weight))
    return clips


CLIPS = load_clips()
_WEIGHTS = [c.weight for c in CLIPS]


def pick_clip() -> Clip:
    return random.choices(CLIPS, weights=_WEIGHTS, k=1)[0]


# -- per-class statistics (audio seconds are not something locust's own CSV knows about) -------------------

STATS: dict[str, dict] = {}
_T = {"start": None, "stop": None}


def record(user_class: str, ok: bool, response_ms: float, audio_s: float) -> None:
    s = STATS.setdefault(user_class, {"requests": 0, "failures": 0, "audio_s": 0.0, "audio_s_sent": 0.0,
                                      "response_ms": []})
    s["requests"] += 1
    s["audio_s_sent"] += audio_s
    if ok:
        s["audio_s"] += audio_s
        s["response_ms"].append(round(response_ms, 2))
    else:
        s["failures"] += 1


@events.test_start.add_listener
def _on_start(environment, **_kw):
    _T["start"] = time.time()


def _stats_path(environment) -> Path | None:
    explicit = os.environ.get("LOADTEST_AUDIO_STATS")
    if explicit:
        return Path(explicit)
    prefix = getattr(environment.parsed_options, "csv_prefix", None) if environment.parsed_options else None
    return Path(f"{prefix}_audio.json") if prefix else None


@events.quitting.add_listener
def _on_quit(environment, **_kw):
    path = _stats_path(environment)
    if path is None:
        return
    _T["stop"] = _T["stop"] or time.time()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"started": _T["start"], "stopped": _T["stop"],
                                "clips": [{"name": c.name, "seconds": c.seconds, "weight": c.weight} for c in CLIPS],
                                "classes": STATS}))


@events.test_stop.add_listener
def _on_stop(environment, **_kw):
    _T["stop"] = time.time()


def _wait():
    lo, _, hi = os.environ.get("LOADTEST_WAIT", "0,0.2").partition(",")
    return between(float(lo), float(hi or lo))


def _judge(r, check) -> bool:
    """Mark a catch_response request: failed on a non-200 or on a JSON body `check` rejects (ValueError)."""
    if r.status_code != 200:
        r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
        return False
    try:
        check(r.json())
    except ValueError as exc:
        r.failure(f"bad body: {exc}")
        return False
    r.success()
    return True


def _has_text(body: dict) -> None:
    if not isinstance(body.get("text"), str):
        raise ValueError("no text")


def _nls_success(body: dict) -> None:
    if body.get("status") != 20000000:
        raise ValueError(f"status {body.get('status')}")


# -- users -------------------------------------------------------------------------------------------------

class OpenAIUser(HttpUser):
    """`POST /v1/audio/transcriptions` (multipart, model=whisper-1, response_format=json)."""
    wait_time = _wait()

    @task
    def transcribe(self):
        clip = pick_clip()
        t0 = time.perf_counter()
        with self.client.post("/v1/audio/transcriptions", name="POST /v1/audio/transcriptions",
                              files={"file": (clip.name, clip.data, "audio/wav")},
                              data={"model": "whisper-1", "response_format": "json"},
                              timeout=TIMEOUT_S, catch_response=True) as r:
            ok = _judge(r, _has_text)
        record(type(self).__name__, ok, (time.perf_counter() - t0) * 1000, clip.seconds)


class AliyunUser(HttpUser):
    """`POST /stream/v1/asr` (Alibaba NLS REST: the wav as body, format=wav, punctuation on)."""
    wait_time = _wait()

    @task
    def recognize(self):
        clip = pick_clip()
        t0 = time.perf_counter()
        fmt = Path(clip.name).suffix.lstrip(".").lower() or "wav"
        with self.client.post("/stream/v1/asr", name="POST /stream/v1/asr",
                              params={"appkey": "loadtest", "format": fmt, "sample_rate": 16000,
                                      "enable_punctuation_prediction": "true"},
                              data=clip.data, headers={"Content-Type": "application/octet-stream"},
                              timeout=TIMEOUT_S, catch_response=True) as r:
            ok = _judge(r, _nls_success)
        record(type(self).__name__, ok, (time.perf_counter() - t0) * 1000, clip.seconds)


class TritonGrpcUser(User):
    """The `pipeline` model over Triton gRPC (sync tritonclient under gevent), bypassing the frontend."""
    wait_time = _wait()

    def on_start(self):
        self.url = os.environ.get("LOADTEST_TRITON_URL", "127.0.0.1:8001")
        self.grpc = grpcclient.InferenceServerClient(url=self.url)

    def on_stop(self):
        self.grpc.close()

    @staticmethod
    def inputs(samples: np.ndarray) -> list:
        wav = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
        inputs = [grpcclient.InferInput("WAV", list(wav.shape), "FP32")]
        inputs[0].set_data_from_numpy(wav)
        for name in ("ENABLE_PUNC", "ENABLE_TIMESTAMPS"):
            inputs.append(grpcclient.InferInput(name, [1, 1], "BOOL"))
            inputs[-1].set_data_from_numpy(np.array([[True]], dtype=bool))
        return inputs

    @task
    def pipeline(self):
        clip = pick_clip()
        t0 = time.perf_counter()
        exc, length = None, 0
        try:
            result = self.grpc.infer("pipeline", self.inputs(clip.samples),
                                     outputs=[grpcclient.InferRequestedOutput("RESULT")], client_timeout=TIMEOUT_S)
            raw = result.as_numpy("RESULT").reshape(-1)[0]
            length = len(raw)
            json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except Exception as e:  # noqa: BLE001 - every failure is reported to locust
            exc = e
        elapsed_ms = (time.perf_counter() - t0) * 1000
        self.environment.events.request.fire(
            request_type="grpc", name="pipeline", response_time=elapsed_ms, response_length=length,
            exception=exc, context={"audio_s": clip.seconds, "clip": clip.name})
        record(type(self).__name__, exc is None, elapsed_ms, clip.seconds)
