// AudioWorklet: microphone (any rate, any channel count) -> 16 kHz mono Int16 PCM, posted in ~100 ms chunks.
//
// Resampling: a windowed-sinc low-pass (cut-off 7.2 kHz, below the new Nyquist of 8 kHz) runs over the input,
// then the filtered signal is read at every `step` = inRate / 16000 input samples with linear interpolation
// (exact decimation when the ratio is an integer, e.g. 48 kHz -> 16 kHz). The filter history and the
// fractional read position are carried across the 128-sample render quanta, so block edges leave no clicks.
//
// Messages in:  {type: "flush"}  -> posts what is buffered, then {type: "flushed"}.
// Messages out: {type: "audio", pcm: ArrayBuffer (Int16, little-endian as the platform), samples}
//               {type: "flushed"}

const OUT_RATE = 16000;
const CHUNK_SAMPLES = OUT_RATE / 10; // 100 ms

function lowPass(step) {
  // cut-off relative to the input rate (cycles per sample); ~10 taps per output sample period
  const cutoff = (0.45 * OUT_RATE) / (OUT_RATE * step);
  const half = Math.max(8, Math.ceil(5 * step));
  const taps = new Float32Array(2 * half + 1);
  let sum = 0;
  for (let i = 0; i < taps.length; i++) {
    const n = i - half;
    const sinc = n === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * n) / (Math.PI * n);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps.length - 1)) +
              0.08 * Math.cos((4 * Math.PI * i) / (taps.length - 1)); // Blackman
    taps[i] = sinc * w;
    sum += taps[i];
  }
  for (let i = 0; i < taps.length; i++) taps[i] /= sum; // unity gain at DC
  return taps;
}

class RecorderProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // `sampleRate` is the AudioWorkletGlobalScope's context rate
    this.passThrough = Math.abs(this.step - 1) < 1e-9;
    this.taps = this.passThrough ? null : lowPass(this.step);
    const hist = this.passThrough ? 0 : this.taps.length;
    this.history = new Float32Array(hist); // last input samples of the previous block
    this.pos = hist; // next output position, in indexes of [history, block]
    this.out = new Int16Array(CHUNK_SAMPLES);
    this.outLen = 0;
    this.port.onmessage = (e) => {
      if (e.data && e.data.type === "flush") {
        this.post();
        this.port.postMessage({ type: "flushed" });
      }
    };
  }

  emit(x) {
    const v = Math.max(-1, Math.min(1, x));
    this.out[this.outLen++] = v < 0 ? Math.round(v * 32768) : Math.round(v * 32767);
    if (this.outLen === CHUNK_SAMPLES) this.post();
  }

  post() {
    if (this.outLen === 0) return;
    const pcm = this.out.slice(0, this.outLen).buffer;
    this.port.postMessage({ type: "audio", pcm, samples: this.outLen }, [pcm]);
    this.outLen = 0;
  }

  // filtered sample at index i of buf (needs i >= taps.length - 1)
  filtered(buf, i) {
    const taps = this.taps;
    let acc = 0;
    for (let k = 0; k < taps.length; k++) acc += taps[k] * buf[i - k];
    return acc;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || input[0].length === 0) return true;
    const n = input[0].length;
    const mono = new Float32Array(n);
    for (let c = 0; c < input.length; c++) {
      const ch = input[c];
      for (let i = 0; i < n; i++) mono[i] += ch[i];
    }
    if (input.length > 1) for (let i = 0; i < n; i++) mono[i] /= input.length;

    if (this.passThrough) {
      for (let i = 0; i < n; i++) this.emit(mono[i]);
      return true;
    }
    const h = this.history.length;
    const buf = new Float32Array(h + n);
    buf.set(this.history, 0);
    buf.set(mono, h);
    const last = buf.length - 1;
    let t = this.pos;
    while (Math.floor(t) + 1 <= last) {
      const i = Math.floor(t);
      const f = t - i;
      const a = this.filtered(buf, i);
      this.emit(f === 0 ? a : a + f * (this.filtered(buf, i + 1) - a));
      t += this.step;
    }
    // keep the last h samples; positions move back by the n samples dropped (pos stays >= h - 1: filter defined)
    this.history.set(buf.subarray(n), 0);
    this.pos = t - n;
    return true;
  }
}

registerProcessor("recorder-worklet", RecorderProcessor);
