"""The browser demo (`/`, `/demo`) in Debian's Chromium through Playwright, against the real frontend + embedded Triton.

Chromium's fake capture device plays synthetic Mandarin (espeak-ng) as the microphone, so the page's whole path
runs for real: getUserMedia -> AudioWorklet (16 kHz Int16) -> WebSocket /ws/v1/funasr (2pass) -> live partial and
final sentences; the upload form posts to /v1/audio/transcriptions and downloads SRT. The models have random
weights, so the checks are on structure (non-empty texts, DOM rows, wire frames), never on words.
"""
from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest
import srt

from tests.conftest import start_frontend
from tests.synth import SENTENCES, compose, write_wav

START_MESSAGE = {"mode": "2pass", "wav_name": "mic", "wav_format": "pcm", "audio_fs": 16000, "is_speaking": True,
                 "chunk_size": [5, 10, 5], "chunk_interval": 10, "hotwords": "", "itn": True}
BYTES_PER_100_MS = 3200  # 16 kHz mono Int16


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:  # `make setup` (doctor) and .ci/run install it
        pytest.fail("chromium missing: apt-get install chromium (the demo page test drives it with Playwright)")
    return path


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory):
    """What the fake microphone plays (looped by Chromium): two sentences 1.5 s apart, then silence."""
    return write_wav(tmp_path_factory.mktemp("mic") / "mic.wav",
                     compose(0.5, SENTENCES[0], 1.5, SENTENCES[1], 2.5))


@pytest.fixture(scope="module")
def browser(chromium, mic_wav):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic_wav}", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


class Page:
    """A fresh browser context on the frontend, with every console error and uncaught exception collected."""

    def __init__(self, browser, base_url: str):
        self.context = browser.new_context(base_url=base_url, accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))


@pytest.fixture()
def demo(browser, frontend):
    p = Page(browser, frontend.base_url)
    yield p
    p.context.close()


def test_page_served_without_errors(demo, frontend):
    for path in ("/", "/demo"):
        r = httpx.get(frontend.base_url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), (path, r.status_code)
    for asset, media in (("app.js", "text/javascript"), ("recorder-worklet.js", "text/javascript"),
                         ("style.css", "text/css")):
        r = httpx.get(f"{frontend.base_url}/demo/static/{asset}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media), asset
    assert httpx.get(f"{frontend.base_url}/demo/static/demo.py").status_code == 404  # only the listed assets

    failed: list[str] = []
    demo.page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    response = demo.page.goto("/")
    assert response.status == 200 and response.headers["content-type"].startswith("text/html")
    demo.page.wait_for_load_state("networkidle")
    assert demo.page.locator("#record").is_enabled() and demo.page.locator("#stop").is_disabled()
    assert demo.page.locator("#upload-form input[type=file]").count() == 1
    # the worklet module compiles and registers in this browser
    assert demo.page.evaluate("""async () => {
        const ctx = new OfflineAudioContext(1, 128, 48000);
        await ctx.audioWorklet.addModule('/demo/static/recorder-worklet.js');
        new AudioWorkletNode(ctx, 'recorder-worklet');
        return true; }""")
    assert not failed, failed
    assert not demo.errors, demo.errors


def test_microphone_streams_2pass(demo):
    page = demo.page
    sent: list[str | bytes] = []
    received: list[dict] = []

    def on_websocket(ws):
        ws.on("framesent", lambda f: sent.append(f))
        ws.on("framereceived", lambda f: received.append(json.loads(f)) if isinstance(f, str) else None)

    page.on("websocket", on_websocket)
    page.goto("/demo")
    page.evaluate("""() => {
        window.partialsSeen = [];
        const el = document.getElementById('partial');
        new MutationObserver(() => { if (el.textContent) window.partialsSeen.push(el.textContent); })
            .observe(el, {childList: true, characterData: true, subtree: true});
    }""")
    page.click("#record")
    page.wait_for_selector("#mic-status[data-state=listening]", timeout=15_000)
    t0 = time.monotonic()

    # live partial text (2pass-online deltas) shows while the first sentence is spoken
    page.wait_for_function("window.partialsSeen.length > 0", timeout=30_000)
    # the first sentence (~6 s) ends at its 1.5 s pause: a final row replaces the partial text
    page.wait_for_selector("#sentences tbody tr", timeout=30_000)
    # Stop while the second one is being spoken: its final comes from the flush after {"is_speaking": false}
    page.wait_for_function("document.getElementById('partial').textContent.length >= 3", timeout=30_000)
    page.click("#stop")
    elapsed = time.monotonic() - t0
    page.wait_for_selector("#mic-status[data-state=done]", timeout=30_000)

    # wire: the 2pass start message, ~100 ms PCM frames at 16 kHz, then is_speaking false
    assert json.loads(sent[0]) == START_MESSAGE
    audio = [f for f in sent if isinstance(f, bytes)]
    assert len(audio) >= 10 and all(len(f) == BYTES_PER_100_MS for f in audio[:-1]), [len(f) for f in audio[:5]]
    assert 0.75 * elapsed <= sum(map(len, audio)) / 32000 <= 1.25 * elapsed + 0.5  # 16 kHz, whatever the device rate
    assert json.loads(sent[-1]) == {"is_speaking": False}
    online = [m for m in received if m.get("mode") == "2pass-online"]
    offline = [m for m in received if m.get("mode") == "2pass-offline" and m.get("text")]
    assert online and offline, received

    # DOM: the final sentences (text + times), the partial text cleared, no errors
    rows = page.locator("#sentences tbody tr")
    assert rows.count() == len(offline) >= 2
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td").all_text_contents()
        assert cells[0] == str(i + 1) and cells[1] and cells[2] and cells[3].strip(), cells  # times from stamp_sents
    final = page.locator("#final-text").text_content()
    assert final.strip() and final == "".join(m["text"] for m in offline)
    assert page.locator("#partial").text_content() == ""
    assert page.locator("#mic-status").text_content().startswith("完成")
    assert not demo.errors, demo.errors


def test_upload_progress_text_and_srt(demo, frontend, speech_wav, tmp_path):
    page = demo.page
    page.goto("/demo")

    # a file that is not audio: the OpenAI error envelope's message is shown as is
    bogus = tmp_path / "notes.wav"
    bogus.write_bytes(b"this is not audio at all " * 40)
    expected = httpx.post(frontend.base_url + "/v1/audio/transcriptions", data={"model": "paraformer-zh"},
                          files={"file": ("notes.wav", bogus.read_bytes())}).json()["error"]["message"]
    page.set_input_files("#file", str(bogus))
    page.click("#transcribe")
    page.wait_for_selector("#upload-status[data-state=error]", timeout=30_000)
    assert page.locator("#upload-error").is_visible()
    assert page.locator("#upload-error").text_content() == expected
    assert page.locator("#download-srt").is_disabled()
    assert all("status of 400" in e for e in demo.errors), demo.errors  # Chromium logs the failed request
    demo.errors.clear()

    # real speech: upload progress, then recognition, then text and segments
    page.set_input_files("#file", str(speech_wav))
    page.fill("#hotwords", "公园 会议")
    page.click("#transcribe")
    page.wait_for_selector("#upload-status[data-state=done]", timeout=60_000)
    assert page.locator("#upload-progress").evaluate("p => p.value") == 100
    assert page.locator("#upload-status").text_content().startswith("100 %")
    assert page.locator("#upload-error").is_hidden()
    assert page.locator("#upload-text").text_content().strip()
    segments = page.locator("#segments tbody tr")
    assert segments.count() >= 1
    for i in range(segments.count()):
        cells = segments.nth(i).locator("td").all_text_contents()
        assert cells[0] == str(i) and cells[1] and cells[2] and cells[3].strip(), cells

    # the SRT of the same file, saved through a Blob download link
    with page.expect_download(timeout=60_000) as info:
        page.click("#download-srt")
    download = info.value
    assert download.suggested_filename == speech_wav.stem + ".srt"
    cues = list(srt.parse(open(download.path(), encoding="utf-8").read()))
    assert cues and all(c.content.strip() and c.end > c.start for c in cues)
    page.wait_for_selector("#upload-status[data-state=done]", timeout=10_000)
    assert page.locator("#upload-progress").evaluate("p => p.value") == 100
    assert not demo.errors, demo.errors


def test_api_key_errors_shown(browser, triton, tmp_path_factory, speech_wav):
    """With API keys configured, a wrong key in the page's field: both the WebSocket and the upload show the
    server's own error message; the key is kept in localStorage."""
    keyed = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("demo-keyed"),
                           FUNASR_TRITON_AUTH__API_KEYS='["demo-key"]')
    p = Page(browser, keyed.base_url)
    try:
        page = p.page
        page.goto("/demo")
        page.fill("#api-key", "wrong-key")
        page.click("#record")
        page.wait_for_selector("#mic-status[data-state=error]", timeout=20_000)
        assert "token" in page.locator("#mic-status").text_content()
        assert page.locator("#record").is_enabled() and page.locator("#stop").is_disabled()

        page.set_input_files("#file", str(speech_wav))
        page.click("#transcribe")
        page.wait_for_selector("#upload-status[data-state=error]", timeout=20_000)
        assert "API key" in page.locator("#upload-error").text_content()

        page.reload()
        assert page.locator("#api-key").input_value() == "wrong-key"
        assert all("status of 401" in e for e in p.errors), p.errors
    finally:
        p.context.close()
        keyed.stop()
