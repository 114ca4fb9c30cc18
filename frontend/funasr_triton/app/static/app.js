// funasr-triton browser demo: plain JS, no dependencies.
//   Microphone -> AudioWorklet (16 kHz Int16) -> WebSocket /ws/v1/funasr (FunASR runtime protocol, mode 2pass)
//   File       -> XMLHttpRequest multipart -> POST /v1/audio/transcriptions (OpenAI audio API)
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------ API key (optional, kept in localStorage)

  const KEY_STORE = "funasr-triton.api-key";
  const keyInput = $("api-key");
  try {
    keyInput.value = localStorage.getItem(KEY_STORE) || "";
  } catch (_) { /* storage disabled: the field still works for this page */ }
  keyInput.addEventListener("input", () => {
    try {
      const v = keyInput.value.trim();
      if (v) localStorage.setItem(KEY_STORE, v);
      else localStorage.removeItem(KEY_STORE);
    } catch (_) { /* ignore */ }
  });
  const apiKey = () => keyInput.value.trim();

  // ------------------------------------------------------------ helpers

  function clock(seconds) {
    if (seconds == null || !isFinite(seconds)) return "";
    const total = Math.max(0, seconds);
    const m = Math.floor(total / 60);
    const s = total - 60 * m;
    return `${m}:${s.toFixed(2).padStart(5, "0")}`;
  }

  function setStatus(el, state, text) {
    el.dataset.state = state;
    el.textContent = text;
  }

  function addRow(tbody, cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c;
      tr.append(td);
    }
    tbody.append(tr);
  }

  // CJK punctuation anywhere; ASCII punctuation only where it ends a word (keeps "3.5", "e.g" intact)
  const stripPunctuation = (text) =>
    text.replace(/[，。？！、；：…]/g, "").replace(/[,.?!;:](?=\s|$)/g, "");

  // ------------------------------------------------------------ microphone (FunASR WebSocket, 2pass)

  const WS_PATH = "/ws/v1/funasr";
  // After Stop the page closes on the utterance's last message (is_end / is_final), or, for servers that
  // mark none, once the server has been quiet for FINISH_IDLE_MS; FINISH_MAX_MS bounds the wait.
  const FINISH_IDLE_MS = 5000;
  const FINISH_MAX_MS = 30000;
  const recordBtn = $("record");
  const stopBtn = $("stop");
  const micStatus = $("mic-status");
  const finalText = $("final-text");
  const partial = $("partial");
  const sentenceRows = document.querySelector("#sentences tbody");

  const mic = {
    state: "idle", // idle | connecting | listening | finishing
    stream: null, ctx: null, node: null, ws: null,
    online: "", // 2pass-online deltas of the sentence being spoken
    sentences: 0, samples: 0, idleTimer: 0, maxTimer: 0, error: false,
  };

  function socketUrl() {
    const url = new URL(WS_PATH, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (apiKey()) url.searchParams.set("token", apiKey());
    return url.href;
  }

  function closeText(ev) {
    const reason = ev.reason ? `: ${ev.reason}` : "";
    if (ev.code === 1006) return "连接中断 / connection lost (is the server running?)";
    if (ev.code === 1008 || ev.code === 4001 || ev.code === 4401) return `认证失败 / not authorised${reason || " (check the API key)"}`;
    return `连接关闭 / connection closed (${ev.code})${reason}`;
  }

  // The first text frame of the FunASR runtime protocol (api-contracts §3).
  function startMessage() {
    return {
      mode: "2pass", wav_name: "mic", wav_format: "pcm", audio_fs: 16000, is_speaking: true,
      chunk_size: [5, 10, 5], chunk_interval: 10, hotwords: "", itn: true,
    };
  }

  function openSocket() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(socketUrl());
      } catch (e) {
        reject(e);
        return;
      }
      ws.binaryType = "arraybuffer";
      ws.onopen = () => resolve(ws);
      ws.onerror = () => { /* the close event that follows says why */ };
      ws.onclose = (ev) => reject(new Error(closeText(ev)));
    });
  }

  // Server error messages: the FunASR runtime has none, so accept the common shapes.
  function errorOf(msg) {
    let err = msg.error ?? msg.err_msg ?? msg.errorMessage;
    if (err == null && (msg.mode === "error" || msg.type === "error")) err = msg.message ?? msg.text ?? "error";
    if (err == null) return null;
    if (typeof err === "object") err = err.message ?? JSON.stringify(err);
    return String(err);
  }

  // [start_ms, end_ms] of a final sentence from stamp_sents, else from the `timestamp` string
  function sentenceTimes(msg) {
    const sents = Array.isArray(msg.stamp_sents) ? msg.stamp_sents : [];
    if (sents.length && sents[0].start != null) return [sents[0].start, sents[sents.length - 1].end];
    let ts = msg.timestamp;
    if (typeof ts === "string") {
      try { ts = JSON.parse(ts); } catch (_) { ts = null; }
    }
    if (Array.isArray(ts) && ts.length && Array.isArray(ts[0])) return [ts[0][0], ts[ts.length - 1][1]];
    return [null, null];
  }

  function renderLive() {
    partial.textContent = mic.online;
  }

  function onServerMessage(ev) {
    if (typeof ev.data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    if (mic.state === "finishing") armFinishTimer();
    const err = errorOf(msg);
    if (err) {
      mic.error = true;
      setStatus(micStatus, "error", `错误 / error: ${err}`);
      return;
    }
    const mode = msg.mode || "";
    const text = typeof msg.text === "string" ? msg.text : "";
    if (mode === "2pass-online" || mode === "online") {
      mic.online += text; // a delta
      renderLive();
    } else if (mode === "2pass-offline" || mode === "offline") {
      mic.online = ""; // the corrected sentence replaces its online text
      if (text.trim()) {
        mic.sentences += 1;
        const [start, end] = sentenceTimes(msg);
        finalText.textContent += text;
        addRow(sentenceRows, [String(mic.sentences), start == null ? "" : clock(start / 1000),
                              end == null ? "" : clock(end / 1000), text]);
      }
      renderLive();
    }
    // the last message of the utterance (is_end; is_final is unreliable in some servers, so only after Stop)
    if (mic.state === "finishing" && (msg.is_end === true || msg.is_final === true) && mic.ws) {
      mic.ws.close(1000, "done");
    }
  }

  function onSocketClose(ev) {
    const wasFinishing = mic.state === "finishing";
    clearTimeout(mic.idleTimer);
    clearTimeout(mic.maxTimer);
    mic.ws = null;
    teardownAudio();
    mic.state = "idle";
    recordBtn.disabled = false;
    stopBtn.disabled = true;
    if (mic.error) return; // keep the server's error message
    if (wasFinishing || ev.code === 1000) {
      setStatus(micStatus, "done", `完成 / done · ${mic.sentences} 句 sentences`);
    } else {
      setStatus(micStatus, "error", `错误 / error: ${closeText(ev)}`);
    }
  }

  function armFinishTimer() {
    clearTimeout(mic.idleTimer);
    mic.idleTimer = setTimeout(() => mic.ws && mic.ws.close(1000, "done"), FINISH_IDLE_MS);
  }

  function teardownAudio() {
    if (mic.node) {
      mic.node.port.onmessage = null;
      mic.node.disconnect();
      mic.node = null;
    }
    if (mic.stream) {
      mic.stream.getTracks().forEach((t) => t.stop());
      mic.stream = null;
    }
    if (mic.ctx) {
      mic.ctx.close().catch(() => {});
      mic.ctx = null;
    }
  }

  function failRecording(message) {
    mic.error = true;
    setStatus(micStatus, "error", `错误 / error: ${message}`);
    teardownAudio();
    if (mic.ws) {
      mic.ws.onclose = null;
      mic.ws.close();
      mic.ws = null;
    }
    mic.state = "idle";
    recordBtn.disabled = false;
    stopBtn.disabled = true;
  }

  async function startRecording() {
    if (mic.state !== "idle") return;
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setStatus(micStatus, "error", "麦克风需要 HTTPS 或 localhost / the microphone needs https:// or localhost");
      return;
    }
    mic.state = "connecting";
    mic.error = false;
    mic.online = "";
    mic.samples = 0;
    recordBtn.disabled = true;
    stopBtn.disabled = false;
    setStatus(micStatus, "connecting", "连接中… / connecting…");
    const cancelled = () => mic.state !== "connecting"; // Stop pressed while we waited
    try {
      mic.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
      });
      if (cancelled()) { teardownAudio(); return; }
      mic.ctx = new AudioContext();
      await mic.ctx.audioWorklet.addModule("/demo/static/recorder-worklet.js");
      if (cancelled()) { teardownAudio(); return; }
      const ws = await openSocket();
      if (cancelled()) { ws.close(1000); teardownAudio(); return; }
      mic.ws = ws;
    } catch (e) {
      if (cancelled()) { teardownAudio(); return; }
      const name = e && e.name;
      const text = name === "NotAllowedError" ? "麦克风权限被拒绝 / microphone permission denied"
        : name === "NotFoundError" ? "没有麦克风 / no microphone found"
        : (e && e.message) || String(e);
      failRecording(text);
      return;
    }
    const ws = mic.ws;
    ws.onmessage = onServerMessage;
    ws.onclose = onSocketClose;
    ws.send(JSON.stringify(startMessage()));

    const source = mic.ctx.createMediaStreamSource(mic.stream);
    mic.node = new AudioWorkletNode(mic.ctx, "recorder-worklet",
                                    { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1] });
    mic.node.port.onmessage = (e) => {
      if (e.data.type === "audio" && ws.readyState === WebSocket.OPEN) {
        ws.send(e.data.pcm);
        mic.samples += e.data.samples;
      }
    };
    const mute = mic.ctx.createGain(); // keeps the worklet pulled by the graph without playing anything
    mute.gain.value = 0;
    source.connect(mic.node).connect(mute).connect(mic.ctx.destination);
    if (mic.ctx.state === "suspended") await mic.ctx.resume();
    mic.state = "listening";
    const rate = mic.ctx.sampleRate;
    setStatus(micStatus, "listening", `正在聆听… / listening… (${rate} Hz → 16000 Hz)`);
  }

  function flushWorklet() {
    return new Promise((resolve) => {
      const node = mic.node;
      if (!node) { resolve(); return; }
      const previous = node.port.onmessage;
      const timer = setTimeout(resolve, 500);
      node.port.onmessage = (e) => {
        if (previous) previous(e);
        if (e.data.type === "flushed") { clearTimeout(timer); resolve(); }
      };
      node.port.postMessage({ type: "flush" });
    });
  }

  async function stopRecording() {
    if (mic.state === "connecting") {
      mic.state = "idle";
      teardownAudio();
      recordBtn.disabled = false;
      stopBtn.disabled = true;
      setStatus(micStatus, "idle", "已取消 / cancelled");
      return;
    }
    if (mic.state !== "listening") return;
    mic.state = "finishing";
    stopBtn.disabled = true;
    setStatus(micStatus, "finishing", "等待最终结果… / finishing…");
    await flushWorklet();
    teardownAudio();
    const ws = mic.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ is_speaking: false }));
      armFinishTimer();
      mic.maxTimer = setTimeout(() => mic.ws && mic.ws.close(1000, "done"), FINISH_MAX_MS);
    }
  }

  recordBtn.addEventListener("click", startRecording);
  stopBtn.addEventListener("click", stopRecording);
  $("clear").addEventListener("click", () => {
    mic.online = "";
    mic.sentences = 0;
    finalText.textContent = "";
    partial.textContent = "";
    sentenceRows.replaceChildren();
  });

  // ------------------------------------------------------------ file upload (OpenAI audio API)

  const MODEL = "paraformer-zh";
  const form = $("upload-form");
  const fileInput = $("file");
  const hotwordsInput = $("hotwords");
  const punctuation = $("punctuation");
  const transcribeBtn = $("transcribe");
  const srtBtn = $("download-srt");
  const progress = $("upload-progress");
  const uploadStatus = $("upload-status");
  const uploadError = $("upload-error");
  const uploadText = $("upload-text");
  const segmentRows = document.querySelector("#segments tbody");
  let lastRequest = null; // {file, hotwords, punctuation} of the last successful transcription

  function errorMessage(xhr) {
    if (xhr.status === 0) return "网络错误 / network error: the server could not be reached";
    try {
      const body = JSON.parse(xhr.responseText);
      if (body && body.error && body.error.message) return body.error.message;
      if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON */ }
    return `HTTP ${xhr.status} ${xhr.statusText}`.trim();
  }

  // POST the file; resolves with the response text, rejects with an Error carrying the server's message
  function postTranscription(request, responseFormat) {
    return new Promise((resolve, reject) => {
      const data = new FormData();
      data.append("file", request.file, request.file.name);
      data.append("model", MODEL);
      data.append("response_format", responseFormat);
      if (request.hotwords) data.append("hotwords", request.hotwords);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/v1/audio/transcriptions");
      if (apiKey()) xhr.setRequestHeader("Authorization", `Bearer ${apiKey()}`);
      xhr.upload.onprogress = (e) => {
        if (!e.lengthComputable) return;
        const pct = Math.min(100, Math.round((100 * e.loaded) / e.total));
        progress.value = pct;
        setStatus(uploadStatus, "uploading", `上传 / uploading ${pct} %`);
      };
      xhr.upload.onload = () => {
        progress.removeAttribute("value"); // indeterminate while the server recognises
        setStatus(uploadStatus, "recognising", "识别中… / recognising…");
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.responseText);
        else reject(new Error(errorMessage(xhr)));
      };
      xhr.onerror = () => reject(new Error(errorMessage(xhr)));
      xhr.onabort = () => reject(new Error("已取消 / cancelled"));
      progress.value = 0;
      setStatus(uploadStatus, "uploading", "上传 / uploading 0 %");
      xhr.send(data);
    });
  }

  function showError(message) {
    progress.value = 0;
    setStatus(uploadStatus, "error", "失败 / failed");
    uploadError.textContent = message;
    uploadError.hidden = false;
  }

  function finish(started, what) {
    progress.value = 100;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    setStatus(uploadStatus, "done", `100 % · ${what} (${seconds} s)`);
  }

  async function transcribe() {
    const file = fileInput.files[0];
    if (!file) return;
    const request = { file, hotwords: hotwordsInput.value.trim(), punctuation: punctuation.checked };
    transcribeBtn.disabled = true;
    srtBtn.disabled = true;
    uploadError.hidden = true;
    uploadText.textContent = "";
    segmentRows.replaceChildren();
    const started = performance.now();
    try {
      const body = JSON.parse(await postTranscription(request, "verbose_json"));
      const clean = request.punctuation ? (t) => t : stripPunctuation;
      uploadText.textContent = clean(body.text || "");
      (body.segments || []).forEach((s, i) => {
        addRow(segmentRows, [String(s.id ?? i), clock(s.start), clock(s.end), clean((s.text || "").trim())]);
      });
      lastRequest = request;
      srtBtn.disabled = false;
      const duration = body.duration != null ? ` · ${clock(body.duration)} audio` : "";
      finish(started, `完成 / done${duration}`);
    } catch (e) {
      showError(e.message);
    } finally {
      transcribeBtn.disabled = false;
    }
  }

  async function downloadSrt() {
    if (!lastRequest) return;
    srtBtn.disabled = true;
    transcribeBtn.disabled = true;
    uploadError.hidden = true;
    const started = performance.now();
    try {
      let text = await postTranscription(lastRequest, "srt");
      if (!lastRequest.punctuation) {
        text = text.split("\n").map((line) => (/^\d+$|-->/.test(line) ? line : stripPunctuation(line))).join("\n");
      }
      const blob = new Blob([text], { type: "application/x-subrip;charset=utf-8" });
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = lastRequest.file.name.replace(/\.[^.]*$/, "") + ".srt";
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
      finish(started, "字幕已下载 / SRT downloaded");
    } catch (e) {
      showError(e.message);
    } finally {
      srtBtn.disabled = false;
      transcribeBtn.disabled = false;
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    transcribe();
  });
  srtBtn.addEventListener("click", downloadSrt);
  fileInput.addEventListener("change", () => {
    srtBtn.disabled = true;
    lastRequest = null;
  });
})();
