"""The OpenAI Audio API through the official `openai` SDK against the real frontend + embedded Triton."""
from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
import srt
import webvtt
from openai import AsyncOpenAI, OpenAI
from openai.types.audio import Transcription, TranscriptionDiarized, TranscriptionVerbose

from funasr_triton.errors import AsrError
from tests.conftest import start_frontend
from tests.synth import SENTENCES, compose, convert, write_wav

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
       b"\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


def sdk(base_url: str, key: str = "x") -> OpenAI:
    # no retries: a 5xx must show up as a failure, not be retried away
    return OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def oai(frontend) -> OpenAI:
    client = sdk(frontend.base_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def speech(speech_wav) -> bytes:
    return speech_wav.read_bytes()


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory):
    """~2 s of speech: the cheap good request made after every bad one."""
    return write_wav(tmp_path_factory.mktemp("short") / "short.wav", compose(0.2, SENTENCES[0], 0.2))


@pytest.fixture(scope="module")
def plain(oai, speech) -> Transcription:
    return oai.audio.transcriptions.create(model="whisper-1", file=("speech.wav", speech))


def error_of(exc: openai.APIStatusError) -> dict:
    body = exc.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}, body
    return body


# ---------------------------------------------------------------- formats

def test_json(plain, speech_wav):
    import wave

    with wave.open(str(speech_wav)) as w:
        seconds = w.getnframes() / w.getframerate()
    assert isinstance(plain, Transcription)
    assert plain.text
    assert plain.usage is not None and plain.usage.type == "duration"
    assert abs(plain.usage.seconds - seconds) < 0.01


@pytest.fixture(scope="module")
def verbose(oai, speech) -> TranscriptionVerbose:
    return oai.audio.transcriptions.create(model="paraformer-zh", file=("speech.wav", speech), language="zh",
                                           response_format="verbose_json", timestamp_granularities=["word", "segment"])


def test_verbose_json_segments_and_words(oai, speech, plain, verbose):
    v = verbose
    assert isinstance(v, TranscriptionVerbose)
    raw = v.model_dump()
    assert v.model_extra.get("task") == "transcribe" and v.language == "chinese"
    assert v.text == plain.text and abs(v.duration - plain.usage.seconds) < 1e-6
    assert v.segments and [s.id for s in v.segments] == list(range(len(v.segments)))
    for s in v.segments:
        assert isinstance(s.id, int) and s.text and 0 <= s.start <= s.end <= v.duration + 0.1
        assert s.tokens == [] and s.temperature == 0.0 and s.compression_ratio > 0
    assert v.words and all(w.word and w.start <= w.end for w in v.words)
    assert [w.start for w in v.words] == sorted(w.start for w in v.words)
    assert v.usage is not None and v.usage.type == "duration"
    assert "speaker" not in raw["segments"][0] or raw["segments"][0]["speaker"] is None
    # words are only sent when asked for; segment is the default granularity
    r = httpx.post(str(oai.base_url) + "audio/transcriptions", files={"file": ("s.wav", speech)},
                   data={"model": "whisper-1", "response_format": "verbose_json"}, timeout=120)
    assert r.status_code == 200 and "words" not in r.json() and r.json()["segments"]
    assert list(r.json()) == ["task", "language", "duration", "text", "segments", "usage"]


def test_word_timestamps_only_when_the_format_needs_them(oai, speech, plain, verbose):
    """json, text, diarized_json and verbose_json by segment ask Triton for no word timestamps (a transcript's
    words are its O(length) part); their sentences, text and word count are the same as with words."""
    from types import SimpleNamespace

    from funasr_triton.app.config import Settings
    from funasr_triton.openai_api import serving
    from funasr_triton.openai_api.protocol import TranscriptionRequest

    app = SimpleNamespace(state=SimpleNamespace(settings=Settings()))
    for fmt, granularities, words in (("json", ["segment"], False), ("text", ["segment"], False),
                                      ("diarized_json", ["segment"], False), ("verbose_json", ["segment"], False),
                                      ("verbose_json", ["word", "segment"], True), ("srt", ["segment"], True),
                                      ("vtt", ["segment"], True)):
        req = TranscriptionRequest(response_format=fmt, timestamp_granularities=granularities)
        assert serving.needs_words(req) is words, fmt
        options = asyncio.run(serving.options_of(app, req, words=serving.needs_words(req)))
        assert options.timestamps is words and options.job_config()["timestamps"] is words, fmt

    r = httpx.post(str(oai.base_url) + "audio/transcriptions", files={"file": ("s.wav", speech)},
                   data={"model": "whisper-1", "response_format": "verbose_json"}, timeout=120)
    by_segment = r.json()["segments"]
    assert [(s["start"], s["end"], s["text"]) for s in by_segment] == [(s.start, s.end, s.text) for s in verbose.segments]
    done = list(oai.audio.transcriptions.create(model="whisper-1", file=("speech.wav", speech), stream=True))[-1]
    assert done.text == plain.text and done.usage.output_tokens == len(verbose.words)


def test_text_srt_vtt(oai, speech, plain, verbose):
    text = oai.audio.transcriptions.create(model="whisper-1", file=("speech.wav", speech), response_format="text")
    assert isinstance(text, str) and text.strip() == plain.text

    out = oai.audio.transcriptions.create(model="whisper-1", file=("speech.wav", speech), response_format="srt")
    subs = list(srt.parse(out))
    assert subs and [s.index for s in subs] == list(range(1, len(subs) + 1))
    assert all(s.content.strip() and s.start < s.end for s in subs)
    assert all(a.end <= b.start for a, b in zip(subs, subs[1:]))
    # cues are the segments' text, split or merged
    assert "".join(s.content for s in subs).replace(" ", "") == "".join(s.text for s in verbose.segments).replace(" ", "")

    out = oai.audio.transcriptions.create(model="whisper-1", file=("speech.wav", speech), response_format="vtt")
    assert out.startswith("WEBVTT\n\n")
    caps = webvtt.from_string(out).captions
    assert len(caps) == len(subs)
    assert [(c.start.replace(".", ","), c.end.replace(".", ","), c.text) for c in caps] == [
        (srt.timedelta_to_srt_timestamp(s.start), srt.timedelta_to_srt_timestamp(s.end), s.content) for s in subs]


def test_diarized_json(oai, speech, plain):
    d = oai.audio.transcriptions.create(model="gpt-4o-transcribe-diarize", file=("speech.wav", speech),
                                        response_format="diarized_json", known_speaker_names=["alice"],
                                        chunking_strategy="auto")
    assert isinstance(d, TranscriptionDiarized)
    assert d.task == "transcribe" and d.text == plain.text
    assert d.segments and [s.id for s in d.segments] == [f"seg_{i}" for i in range(len(d.segments))]
    assert all(s.type == "transcript.text.segment" and s.speaker == "alice" and s.text for s in d.segments)


def test_stream_deltas_then_done(oai, speech, plain):
    events = list(oai.audio.transcriptions.create(model="gpt-4o-transcribe", file=("speech.wav", speech),
                                                  stream=True, chunking_strategy={"type": "server_vad"}))
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and set(types[:-1]) == {"transcript.text.delta"}
    assert len(types) >= 3  # several sentences in the test speech
    done = events[-1]
    assert "".join(e.delta for e in events[:-1]) == done.text == plain.text
    assert done.usage is not None and done.usage.output_tokens > 0
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens


def test_async_client_json_and_stream(frontend, speech, plain):
    async def main():
        async with AsyncOpenAI(base_url=frontend.base_url + "/v1", api_key="x", max_retries=0) as client:
            r, stream = await asyncio.gather(
                client.audio.transcriptions.create(model="whisper-1", file=("a.wav", speech)),
                client.audio.transcriptions.create(model="whisper-1", file=("a.wav", speech), stream=True,
                                                   response_format="diarized_json"))
            events = [e async for e in stream]
            models = await client.models.list()
            return r, events, models

    r, events, models = asyncio.run(main())
    assert r.text == plain.text
    assert events[-1].type == "transcript.text.done" and events[-1].text == plain.text
    assert {e.type for e in events[:-1]} == {"transcript.text.delta", "transcript.text.segment"}
    assert "".join(e.delta for e in events if e.type == "transcript.text.delta") == plain.text
    assert "whisper-1" in [m.id for m in models.data]


def test_hotwords_via_prompt_and_extra_body(oai, speech, plain):
    by_prompt = oai.audio.transcriptions.create(model="whisper-1", file=("a.wav", speech), prompt="今天 阿里巴巴")
    by_field = oai.audio.transcriptions.create(model="whisper-1", file=("a.wav", speech),
                                               extra_body={"hotwords": "今天,阿里巴巴"})
    # random-weight SeACo: the bias branch changes tokens, so hotwords show up as a different text
    assert by_prompt.text != plain.text
    assert by_field.text == by_prompt.text


def test_models_list_and_retrieve(oai):
    ids = [m.id for m in oai.models.list().data]
    assert ids[0] == "paraformer-zh" and {"whisper-1", "gpt-4o-transcribe"} <= set(ids)
    m = oai.models.retrieve("whisper-1")
    assert m.id == "whisper-1" and m.object == "model" and isinstance(m.created, int)
    with pytest.raises(openai.NotFoundError) as e:
        oai.models.retrieve("no-such-model")
    assert error_of(e.value)["code"] == "model_not_found"
    # only the served model and the OpenAI names clients send are listed: no other model's name
    assert set(ids) == {"paraformer-zh", "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                        "gpt-4o-transcribe-diarize"}
    with pytest.raises(openai.NotFoundError) as e:
        oai.models.retrieve("sensevoice")
    assert error_of(e.value)["code"] == "model_not_found"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_translations_refused(oai, speech):
    with pytest.raises(openai.BadRequestError) as e:
        oai.audio.translations.create(model="whisper-1", file=("a.wav", speech))
    err = error_of(e.value)
    assert err["type"] == "invalid_request_error" and "translat" in err["message"]


# ---------------------------------------------------------------- bad input: exact 4xx, OpenAI envelope, server unharmed

@pytest.fixture(scope="module")
def limited(triton, tmp_path_factory):
    """A frontend with a 50000-byte upload limit and a 3 s audio limit."""
    handle = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("limited"),
                            FUNASR_TRITON_LIMITS__MAX_UPLOAD_BYTES="50000", FUNASR_TRITON_LIMITS__MAX_AUDIO_SECONDS="3")
    yield handle
    handle.stop()


def _header_only_wav() -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    return buf.getvalue()


BAD_SDK = {
    # name: (create() kwargs except model unless given, status, param or None)
    "empty file": (dict(file=("a.wav", b"")), 400, "file"),
    "truncated wav": ("truncated", 400, None),
    "text file": (dict(file=("notes.txt", b"this is not audio\n" * 20)), 400, None),
    "png image": (dict(file=("a.wav", PNG)), 400, None),
    "header-only wav": (dict(file=("a.wav", _header_only_wav())), 400, None),
    "broken m4a": (dict(file=("a.m4a", b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isomiso2" + bytes(200))), 400, None),
    "hls playlist": (dict(file=("a.m3u8", b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n"
                                          b"#EXT-X-ENDLIST\n")), 400, None),
    "concat script": (dict(file=("a.txt", b"ffconcat version 1.0\nfile '/etc/passwd'\n")), 400, None),
    "bad response_format": (dict(response_format="xml"), 400, "response_format"),
    "bad temperature": (dict(temperature=1.5), 400, "temperature"),
    "unknown model": (dict(model="whisper-2"), 404, "model"),
    # names of models this service does not serve are not silently answered by Paraformer
    "sensevoice is not served": (dict(model="sensevoice"), 404, "model"),
    "sensevoice-small is not served": (dict(model="iic/SenseVoiceSmall"), 404, "model"),
    "bad language": (dict(language="fr"), 400, "language"),
    "too many hotwords": (dict(prompt=" ".join(f"词{i}" for i in range(60))), 400, "hotwords"),
    "hotword too long": (dict(extra_body={"hotwords": "很" * 40}), 400, "hotwords"),
    "prompt sentence too long": (dict(prompt="以下是一段关于语音识别模型部署的普通话会议录音请准确转写其中的专有名词和数字"), 400, "prompt"),
    "bad granularity": (dict(response_format="verbose_json", timestamp_granularities=["char"]), 400,
                        "timestamp_granularities"),
    "bad include": (dict(include=["tokens"]), 400, "include"),
    "five speaker names": (dict(known_speaker_names=list("abcde"), response_format="diarized_json"), 400,
                           "known_speaker_names"),
    "bad chunking_strategy": (dict(chunking_strategy={"type": "client_vad"}), 400, "chunking_strategy"),
    "stream of a text file": (dict(file=("notes.txt", b"not audio at all"), stream=True), 400, None),
}


def _assert_still_serves(oai: OpenAI, short_wav) -> None:
    assert oai.audio.transcriptions.create(model="whisper-1", file=short_wav).text


@pytest.mark.parametrize("case", list(BAD_SDK))
def test_bad_input_via_sdk(oai, speech, short_wav, case):
    kwargs, status, param = BAD_SDK[case]
    if kwargs == "truncated":
        kwargs = dict(file=("a.wav", speech[:30]))  # cut inside the RIFF header
    kwargs = {"model": "whisper-1", "file": ("a.wav", speech), **kwargs}
    with pytest.raises(openai.APIStatusError) as e:
        result = oai.audio.transcriptions.create(**kwargs)
        if kwargs.get("stream"):
            list(result)
    assert e.value.status_code == status, e.value.body
    err = error_of(e.value)
    assert err["type"] == "invalid_request_error" and err["message"]
    if param:
        assert err["param"] == param
    assert e.value.response.headers["content-type"].startswith("application/json")
    _assert_still_serves(oai, short_wav)


def _raw_post(base_url: str, **kwargs) -> httpx.Response:
    return httpx.post(base_url + "/v1/audio/transcriptions", timeout=60, **kwargs)


def test_malformed_multipart_and_missing_file(frontend, oai, short_wav, speech):
    wav = short_wav.read_bytes()
    good = (b"--real\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n" + wav
            + b"\r\n--real--\r\n")
    cases = [
        ({"content": good, "headers": {"content-type": "multipart/form-data; boundary=other"}}, None),
        ({"content": good[:200], "headers": {"content-type": "multipart/form-data; boundary=real"}}, None),
        ({"content": good, "headers": {"content-type": "multipart/form-data"}}, None),
        ({"data": {"model": "whisper-1"}, "files": {"other": ("x.bin", b"abc")}}, "file"),
        ({"data": {"model": "whisper-1", "file": "not-a-file"}}, "file"),
        ({"json": {"model": "whisper-1", "file": "abc"}}, "file"),
    ]
    for kwargs, param in cases:
        r = _raw_post(frontend.base_url, **kwargs)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
        if param:
            assert err["param"] == param
    # bare list names and bracketed dicts are accepted too; unknown fields are ignored
    r = _raw_post(frontend.base_url, files={"file": ("a.wav", wav)},
                  data={"model": "whisper-1", "response_format": "verbose_json", "timestamp_granularities": "word",
                        "chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "0.5",
                        "include[]": "logprobs", "no_such_field": "x", "stream": "false", "language": "zh-CN"})
    assert r.status_code == 200 and r.json()["words"]
    _assert_still_serves(oai, short_wav)


def test_upload_and_duration_limits(limited, speech_wav, tmp_path):
    client = sdk(limited.base_url)
    with pytest.raises(openai.APIStatusError) as e:
        client.audio.transcriptions.create(model="whisper-1", file=speech_wav)  # ~290 KB > 50000 bytes
    assert e.value.status_code == 413 and error_of(e.value)["param"] == "file"
    # a body far over the limit is refused from its Content-Length, before it is read
    r = _raw_post(limited.base_url, files={"file": ("a.wav", bytes(3 * 1024 * 1024))}, data={"model": "whisper-1"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    small = convert(speech_wav, tmp_path / "speech.ogg", "-c:a", "libopus", "-b:a", "16k")  # ~9 s in < 50000 bytes
    assert small.stat().st_size < 50000
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="whisper-1", file=small)
    assert "3 s" in error_of(e.value)["message"]
    short = write_wav(tmp_path / "short.wav", compose(0.1, SENTENCES[1][:4], 0.1)[::2], sr=8000)  # ~1.7 s, ~27 KB
    assert short.stat().st_size < 50000, "the under-the-limit case must be under the limit"
    assert client.audio.transcriptions.create(model="whisper-1", file=short).text is not None
    client.close()


def test_no_temp_files_left(frontend, limited):
    """Every frontend under test has a private TMPDIR: after all the bad requests above, nothing is left in it."""
    for fe in (frontend, limited):
        assert fe.tmpdir.is_dir() and list(fe.tmpdir.iterdir()) == []


def test_stream_error_after_start_is_a_final_error_event():
    from funasr_triton.openai_api.protocol import TranscriptTextDelta
    from funasr_triton.openai_api.serving import sse

    def events():
        yield TranscriptTextDelta(delta="你好")
        raise AsrError("recognition failed", 503, "triton_unavailable")

    async def collect():
        return [chunk async for chunk in sse(events())]

    chunks = asyncio.run(collect())
    assert chunks[0] == 'data: {"type":"transcript.text.delta","delta":"你好"}\n\n'
    assert json.loads(chunks[-1].removeprefix("data: ")) == {"error": {
        "message": "recognition failed", "type": "server_error", "param": None, "code": "triton_unavailable"}}


def _count(base_url: str, status: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    line = f'funasr_requests_total{{route="/v1/audio/transcriptions",status="{status}"}} '
    return sum(float(x[len(line):]) for x in text.splitlines() if x.startswith(line))


def test_client_disconnect_cancels_the_work(frontend, oai, speech, short_wav):
    """A client gone mid-upload or mid-recognition is logged as 499 (never 500) and frees its slot."""
    import socket
    import time

    import numpy as np

    from tests.synth import write_wav

    port = int(frontend.base_url.rsplit(":", 1)[1])
    before = _count(frontend.base_url, "499"), _count(frontend.base_url, "500")
    head = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
    # 1. gone during the upload: the body stops half-way
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; "
                     b"boundary=b\r\nContent-Length: 1000000\r\n\r\n" + head + speech[:50000])
        time.sleep(0.3)
    # 2. gone during recognition of ~10x the test speech
    samples = np.frombuffer(speech[44:], dtype="<i2").astype(np.float32) / 32768
    long_wav = write_wav(short_wav.parent / "long.wav", np.tile(samples, 10)).read_bytes()
    body = head + long_wav + b"\r\n--b--\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; "
                     b"boundary=b\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.5)
    deadline = time.monotonic() + 30
    while _count(frontend.base_url, "499") < before[0] + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _count(frontend.base_url, "499") == before[0] + 2
    assert _count(frontend.base_url, "500") == before[1]
    _assert_still_serves(oai, short_wav)


def test_render_error_types_and_retry_after():
    from funasr_triton.openai_api.router import render_error

    for status, kind in ((400, "invalid_request_error"), (401, "authentication_error"), (404, "invalid_request_error"),
                         (413, "invalid_request_error"), (429, "rate_limit_error"), (500, "server_error"),
                         (503, "server_error")):
        r = render_error(None, AsrError("m", status, "c", "p"))
        assert r.status_code == status and "retry-after" not in r.headers
        assert json.loads(r.body) == {"error": {"message": "m", "type": kind, "param": "p", "code": "c"}}
    r = render_error(None, AsrError("busy", 429, "rate_limited", retry_after_s=3))
    assert r.headers["retry-after"] == "3" and json.loads(r.body)["error"]["param"] is None


def test_diarized_speaker_labels():
    from funasr_triton.contract import Sentence, Transcript
    from funasr_triton.openai_api.serving import _speaker_labels

    def t(*speakers):
        return Transcript(text="", duration_ms=0, sentences=[Sentence(start_ms=0, end_ms=0, text="x", speaker=sp)
                                                             for sp in speakers])

    assert _speaker_labels(t(None, None), ["alice"]) == ["A", "A"]
    assert _speaker_labels(t("spk1", "spk0", "spk1"), []) == ["A", "B", "A"]
    assert _speaker_labels(t("s0", "s1", "s2"), ["alice", "bob"]) == ["alice", "bob", "A"]
    assert _speaker_labels(t(*[f"s{i}" for i in range(28)]), [])[25:] == ["Z", "AA", "AB"]


# ---------------------------------------------------------------- auth

@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_api_keys(triton, tmp_path, short_wav):
    handle = start_frontend(triton.grpc_url, tmp_path, FUNASR_TRITON_AUTH__API_KEYS='["k1"]')
    try:
        r = httpx.get(handle.base_url + "/v1/models", timeout=10)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = _raw_post(handle.base_url, files={"file": ("a.wav", short_wav.read_bytes())}, data={"model": "whisper-1"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        wrong = sdk(handle.base_url, key="k2")
        with pytest.raises(openai.AuthenticationError) as e:
            wrong.audio.transcriptions.create(model="whisper-1", file=short_wav)
        assert e.value.status_code == 401 and error_of(e.value)["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            wrong.audio.translations.create(model="whisper-1", file=short_wav)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        good = sdk(handle.base_url, key="k1")
        assert good.audio.transcriptions.create(model="whisper-1", file=short_wav).text
        assert good.models.retrieve("paraformer-zh").id == "paraformer-zh"
        wrong.close()
        good.close()
    finally:
        handle.stop()
