"""SenseVoice's CTC output -> text, language, emotion and audio events (numpy + sentencepiece only).

Mirrors funasr 1.4.16 `SenseVoiceSmall.inference`: per row, argmax over the CTC outputs up to the
encoder length, consecutive repeats merged, blanks dropped, the ids detokenised by the model's
sentencepiece BPE (`DecodeIds`). The detokenised text starts with SenseVoice's rich-transcription tags
(`<|zh|><|NEUTRAL|><|Speech|><|woitn|>`); `parse_tags` takes them out of the text: the first language
tag is the detected language, the first emotion tag the emotion, every event tag an event. `run_batch` runs one
padded batch of the exported graph (its onnxruntime session is the `sensevoice` stage's) into CTC ids.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

LANGUAGES = ("zh", "en", "yue", "ja", "ko", "nospeech")
EMOTIONS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "EMO_UNKNOWN")
EVENTS = ("Speech", "BGM", "Applause", "Laughter", "Cry", "Sneeze", "Breath", "Cough", "Sing", "Speech_Noise",
          "GBG", "Event_UNK")
TAG = re.compile(r"<\|([^|]*)\|>")


def ctc_greedy(logits: np.ndarray, length: int, blank_id: int) -> list[int]:
    """[T, V] CTC outputs (logits or log-probabilities: the argmax is the same) -> token ids."""
    best = logits[:length].argmax(-1)
    if best.size == 0:
        return []
    keep = np.ones(best.shape[0], dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    best = best[keep]
    return [int(t) for t in best[best != blank_id]]


GRAPH_INPUTS = ["speech", "speech_lengths", "language", "textnorm"]
GRAPH_OUTPUTS = ["ctc_logits", "encoder_out_lens"]


def run_batch(session, rows: list[tuple[np.ndarray, int, int]],
              blank_id: int) -> list[tuple[list[int], np.ndarray, int]]:
    """One onnxruntime batch of the exported graph: rows (features, language id, textnorm id) padded to the
    longest; each row's (CTC token ids (ctc_greedy), its CTC logits, its frame count) back."""
    longest = max(f.shape[0] for f, _, _ in rows)
    speech = np.zeros((len(rows), longest, rows[0][0].shape[1]), np.float32)
    for i, (f, _, _) in enumerate(rows):
        speech[i, :f.shape[0]] = f
    feeds = {"speech": speech, "speech_lengths": np.array([f.shape[0] for f, _, _ in rows], np.int32),
             "language": np.array([r[1] for r in rows], np.int32),
             "textnorm": np.array([r[2] for r in rows], np.int32)}
    logits, lengths = session.run(GRAPH_OUTPUTS, feeds)
    return [(ctc_greedy(logits[i], int(lengths[i]), blank_id), logits[i], int(lengths[i])) for i in range(len(rows))]


@dataclass
class RichText:
    text: str  # tags removed, stripped
    language: str = ""  # the first language tag ("" when the model emitted none)
    emotion: str = ""  # the first emotion tag
    events: list[str] = field(default_factory=list)  # every event tag, in order, once each
    raw: str = ""  # the detokenised text with its tags


def parse_tags(raw: str) -> RichText:
    out = RichText(text=TAG.sub("", raw).strip(), raw=raw)
    for tag in TAG.findall(raw):
        if tag in LANGUAGES and not out.language:
            out.language = tag
        elif tag in EMOTIONS and not out.emotion:
            out.emotion = tag
        elif tag in EVENTS and tag not in out.events:
            out.events.append(tag)
    return out


class Detokenizer:
    """The model's sentencepiece BPE model (the file sensevoice.json names)."""

    def __init__(self, path):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(path))

    def __call__(self, ids: list[int]) -> RichText:
        return parse_tags(self.sp.DecodeIds(ids))

    def size(self) -> int:
        return self.sp.get_piece_size()
