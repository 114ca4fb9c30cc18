"""The served diarization's clustering against FunASR's, side by side on the same embeddings.

`funasr-triton eval-diarization --compare-backends [--embeddings served|resemblyzer]` scores, for every
audio file with a reference RTTM:

  windows     FunASR's `sv_chunk` (1.5 s every 0.75 s, short tails zero-padded) over the reference's
              speech regions (oracle speech: the DER then measures speaker assignment only, not VAD)
  embeddings  `served`: the served `speaker_embedding` model (CAM++ or WeSpeaker) through Triton;
              `resemblyzer`: the trained d-vector encoder shipped in the resemblyzer wheel (CPU)
  clustering  `ours`: funasr_triton_models.diarize_cluster (normalized spectral clustering, eigengap count);
              `funasr`: funasr.models.campplus.cluster_backend.ClusterBackend (merge_thr 0.78)
  to time     `nearest`: each 10 ms frame takes the label of the window whose centre is nearest (as the
              served pipeline labels words); `funasr`: FunASR's campplus `postprocess` (merge consecutive
              windows, split overlaps in the middle, 0.7 s smoothing)

with the speaker count estimated and given (oracle). DER by pyannote.metrics (diarization_score.score).
`synthetic_meeting` builds meetings of several espeak-ng voices with their reference turns.
"""
from __future__ import annotations

import functools

import numpy as np

from .diarization_score import Turn, score, to_annotation
from .speech import SENTENCES, espeak

SR = 16000
BACKENDS = [("ours", "nearest"), ("ours", "funasr"), ("funasr", "nearest"), ("funasr", "funasr")]
VOICES = [dict(voice="cmn", pitch=25, speed=150), dict(voice="cmn+f3", pitch=80, speed=175),
          dict(voice="cmn+m3", pitch=45, speed=135), dict(voice="cmn+f5", pitch=65, speed=190)]


def synthetic_meeting(num_speakers: int, seconds: float, seed: int = 0):
    """(16 kHz samples, [(start_s, end_s, speaker)]): espeak-ng voices taking turns at random, with
    0.2-1.0 s pauses, until `seconds`."""
    rng = np.random.default_rng(seed)
    parts, turns, t, last = [np.zeros(int(0.3 * SR), np.float32)], [], 0.3, -1
    while t < seconds:
        spk = int(rng.integers(num_speakers))
        if spk == last and num_speakers > 1:
            spk = (spk + 1) % num_speakers
        last = spk
        speech = espeak(SENTENCES[int(rng.integers(len(SENTENCES)))], **VOICES[spk % len(VOICES)])
        turns.append((t, t + len(speech) / SR, f"spk{spk}"))
        pause = np.zeros(int(rng.uniform(0.2, 1.0) * SR), np.float32)
        parts += [speech, pause]
        t += (len(speech) + len(pause)) / SR
    return np.concatenate(parts).astype(np.float32), turns


def speech_regions(turns) -> list[tuple[float, float]]:
    """Union of the reference turns (start, end) in seconds."""
    regions: list[list[float]] = []
    for start, end in sorted((t.start, t.end) for t in turns):
        if regions and start <= regions[-1][1]:
            regions[-1][1] = max(regions[-1][1], end)
        else:
            regions.append([start, end])
    return [(a, b) for a, b in regions]


def windows(samples: np.ndarray, regions) -> list[list]:
    """FunASR's sv_chunk over the regions: [start_s, end_s, 1.5 s of samples]."""
    from funasr.models.campplus.utils import sv_chunk

    return sv_chunk([[a, b, samples[int(a * SR): int(b * SR)]] for a, b in regions])


class ResemblyzerEmbedder:
    """resemblyzer's VoiceEncoder on each window, batched: one partial of 160 mel frames per 1.5 s window
    (the window zero-padded to the partial's 1.6 s), as `embed_utterance` does for a short utterance."""

    def __init__(self):
        from resemblyzer import VoiceEncoder

        self.encoder = VoiceEncoder(device="cpu", verbose=False)

    def __call__(self, chunks: list[np.ndarray]) -> np.ndarray:
        import torch
        from resemblyzer import audio, hparams

        n = int(hparams.partials_n_frames * hparams.sampling_rate * hparams.mel_window_step / 1000)
        mels = [audio.wav_to_mel_spectrogram(np.pad(c, (0, max(0, n - len(c))))[:n]) for c in chunks]
        with torch.no_grad():
            return self.encoder(torch.from_numpy(np.stack(mels)).float()).numpy()


class ServedEmbedder:
    """The served `speaker_embedding` model, one window a call."""

    def __init__(self, client):
        self.client = client

    def __call__(self, chunks: list[np.ndarray]) -> np.ndarray:
        return np.stack([self.client.speaker_embedding(c) for c in chunks])


@functools.lru_cache(maxsize=1)
def _ours():
    from funasr_triton_models.diarize_cluster import cluster_speakers

    return cluster_speakers


def cluster(backend: str, embeddings: np.ndarray, num_speakers: int | None) -> np.ndarray:
    if backend == "ours":
        return np.asarray(_ours()(embeddings, num_speakers=num_speakers))
    from funasr.models.campplus.cluster_backend import ClusterBackend

    params = {"oracle_num": num_speakers} if num_speakers else {}
    return np.asarray(ClusterBackend(merge_thr=0.78).forward(embeddings, **params))


def to_turns(assign: str, chunks: list[list], labels: np.ndarray, regions, uri: str):
    if assign == "funasr":
        from funasr.models.campplus.utils import postprocess

        res = postprocess([[c[0], c[1]] for c in chunks], None, labels, None)
        return [Turn(uri, float(a), float(b) - float(a), f"S{int(s)}") for a, b, s in res if b > a]
    centres = np.array([(c[0] + c[1]) / 2 for c in chunks])
    turns = []
    for a, b in regions:
        t = np.arange(a, b, 0.01) + 0.005
        lab = labels[np.abs(centres[None, :] - t[:, None]).argmin(1)]
        cut = np.flatnonzero(np.diff(lab)) + 1
        for s, e in zip(np.r_[0, cut], np.r_[cut, len(t)]):
            turns.append(Turn(uri, float(a + 0.01 * s), float(0.01 * (e - s)), f"S{int(lab[s])}"))
    return turns


def compare_file(samples: np.ndarray, reference_turns, embed, uri: str, collar: float = 0.25) -> dict:
    """DER of every (clustering, assignment) pair, count estimated and oracle, on one set of embeddings.
    Returns {"windows": n, "speakers": k, "der": {"ours+nearest": {"estimated": {...}, "oracle": {...}}, ...}}."""
    regions = speech_regions(reference_turns)
    chunks = windows(samples, regions)
    emb = embed([c[2] for c in chunks])
    reference = to_annotation(reference_turns, uri)
    k = len({t.speaker for t in reference_turns})
    out = {"uri": uri, "windows": len(chunks), "speakers": k, "der": {}}
    for clustering, assign in BACKENDS:
        entry = {}
        for mode, num in (("estimated", None), ("oracle", k)):
            labels = cluster(clustering, emb, num)
            s = score(reference, to_annotation(to_turns(assign, chunks, labels, regions, uri), uri), collar=collar)
            entry[mode] = {"der": s["der"], "confusion": s["confusion"], "speakers": int(len(set(labels.tolist())))}
        out["der"][f"{clustering}+{assign}"] = entry
    return out


def aggregate(results: list[dict]) -> dict:
    """Mean DER over files per backend and mode."""
    keys = results[0]["der"].keys()
    return {key: {mode: float(np.mean([r["der"][key][mode]["der"] for r in results])) for mode in ("estimated", "oracle")}
            for key in keys}


def format_table(results: list[dict], total: dict) -> str:
    lines = [f"{'file':<24}{'spk':>4}{'win':>6}  " + "  ".join(f"{k:>15}" for k in total)]
    for r in results:
        cells = "  ".join(f"{100 * v['estimated']['der']:6.2f}/{100 * v['oracle']['der']:6.2f}%" for v in r["der"].values())
        lines.append(f"{r['uri']:<24}{r['speakers']:>4}{r['windows']:>6}  {cells}")
    lines.append(f"{'mean':<34}  " + "  ".join(f"{100 * v['estimated']:6.2f}/{100 * v['oracle']:6.2f}%" for v in total.values()))
    lines.append("DER estimated count / oracle count; clustering+assignment (see funasr_triton_tools.diarization_compare)")
    return "\n".join(lines)
