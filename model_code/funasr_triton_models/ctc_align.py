"""SenseVoice token timestamps by CTC forced alignment (numpy + sentencepiece only).

The same computation as funasr 1.4.16 `SenseVoiceSmall.inference(..., output_timestamp=True)`
(funasr/models/sense_voice/model.py, with utils/ctc_alignment.py), done on the CTC logits the
exported graph returns:

1. The units: the decoded text (tags included) split into sentencepiece pieces, the first four
   pieces (the language, emotion, event and textnorm tags) dropped; each remaining piece is encoded
   again on its own to ids (an empty encoding stands for id 124, as FunASR has it).
2. The frames: log-softmax of the logits without the four query frames (the graph's first four
   outputs belong to the language / event / emotion / textnorm queries); where blank is the best
   class, its log-probability is set to 0.
3. Viterbi forced alignment of those ids to those frames (the best CTC path through blank, id,
   blank, id, ..., blank); each run of frames the path spends on one id is that unit's span.
4. Times: one encoder frame is 60 ms (6 LFR-stacked 10 ms frames); a span of frames [s, e) is
   [max(s*60-30, 0), min(e*60-30, T*60-30)] ms, T the frame count, cut to whole ms as FunASR does.
5. Words (FunASR's `post`): a lone "▁" piece is dropped, a piece starting with "▁" begins a word,
   an ASCII-letter piece right after an ASCII-letter word is glued to it (its end extends the
   word's), anything else is a word of its own.

`token_timestamps` answers None where FunASR itself fails (more aligned units than pieces: a piece
that re-encodes to several ids, which FunASR reports as an IndexError); the caller then keeps
segment-level timing.
"""
from __future__ import annotations

from itertools import groupby

import numpy as np

QUERY_FRAMES = 4  # language, event, emotion, textnorm query frames in front of the speech frames
TAG_PIECES = 4  # the rich-transcription tags at the start of the decoded text
EMPTY_PIECE_ID = 124  # FunASR's stand-in id for a piece that encodes to nothing
FRAME_MS = 60  # one encoder frame: lfr_n (6) x frame_shift (10 ms)
HALF_FRAME_MS = 30


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """[T, V] float32 log-softmax over the last axis."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def forced_align(log_probs: np.ndarray, targets: list[int], blank: int = 0) -> np.ndarray:
    """[T, V] log-probabilities, L target ids -> the label of each of the T frames on the best CTC path.

    The path runs over the 2L+1 states blank, t1, blank, t2, ..., tL, blank: a frame stays in its state,
    moves one on, or skips a blank between two different ids; it starts in the first blank or t1 and
    ends in tL or the last blank. Ties go to the first candidate (stay, then one on, then the skip), and
    scores are float32, as funasr's `ctc_forced_align`.
    """
    lp = np.asarray(log_probs, dtype=np.float32)
    n_frames = lp.shape[0]
    ext = np.full(2 * len(targets) + 1, blank, dtype=np.int64)
    ext[1::2] = np.asarray(targets, dtype=np.int64)
    n_states = ext.shape[0]
    can_skip = np.zeros(n_states, dtype=bool)
    can_skip[2:] = ext[2:] != ext[:-2]
    emit = lp[:, ext]  # [T, S]
    neg_inf = np.float32(-np.inf)
    score = np.full(n_states, neg_inf, dtype=np.float32)
    score[0] = emit[0, 0]
    if n_states > 1:
        score[1] = emit[0, 1]
    back = np.zeros((n_frames, n_states), dtype=np.int8)  # 0 stay, 1 from the previous state, 2 skip
    cand = np.empty((3, n_states), dtype=np.float32)
    for t in range(1, n_frames):
        cand[0] = score
        cand[1, 0] = neg_inf
        cand[1, 1:] = score[:-1]
        cand[2, :2] = neg_inf
        cand[2, 2:] = np.where(can_skip[2:], score[:-2], neg_inf)
        best = cand.argmax(axis=0)
        score = emit[t] + cand[best, np.arange(n_states)]
        back[t] = best
    state = n_states - 2 + int(np.argmax(score[n_states - 2:n_states]))
    path = np.empty(n_frames, dtype=np.int64)
    path[n_frames - 1] = state
    for t in range(n_frames - 1, 0, -1):
        state -= int(back[t, state])
        path[t - 1] = state
    return ext[np.clip(path, 0, None)]


def _post(stamps: list[tuple[str, float, float]]) -> tuple[list[str], list[list[int]]]:
    """FunASR's SenseVoiceSmall.post: pieces with times in seconds -> words with [start, end] ms."""
    words: list[str] = []
    times: list[list[int]] = []
    prev = None
    for i, (word, start, end) in enumerate(stamps):
        start, end = int(start * 1000), int(end * 1000)
        if word == "▁":
            continue
        if i == 0:
            times.append([start, end])
            words.append(word)
        elif word.startswith("▁"):
            word = word[1:]
            times.append([start, end])
            words.append(word)
        elif prev is not None and prev.isalpha() and prev.isascii() and word.isalpha() and word.isascii():
            word = prev + word
            times[-1][1] = end
            words[-1] = word
        else:
            times.append([start, end])
            words.append(word)
        prev = word
    return words, times


def token_timestamps(logits: np.ndarray, length: int, raw_text: str, sp, blank_id: int = 0,
                     query_frames: int = QUERY_FRAMES) -> tuple[list[str], list[list[int]]] | None:
    """One segment's words and [start, end] ms (from the segment's start) from its CTC logits.

    logits: [T', V] the graph's ctc_logits row (query frames included, before log-softmax); length: the
    row's encoder_out_lens; raw_text: the greedy decode's detokenised text, tags included; sp: the
    model's sentencepiece processor. ([], []) when there is nothing to align; None where FunASR fails.
    """
    pieces = sp.EncodeAsPieces(raw_text)[TAG_PIECES:]
    ids: list[int] = []
    for piece_ids in (sp.EncodeAsIds(pieces) if pieces else []):
        ids.extend(piece_ids if piece_ids else [EMPTY_PIECE_ID])
    n_frames = int(length) - query_frames
    if not ids or n_frames <= 0:
        return [], []
    lp = log_softmax(logits[query_frames:int(length)])
    lp[lp.argmax(axis=-1) == blank_id, blank_id] = 0.0
    labels = forced_align(lp, ids, blank=blank_id)
    stamps: list[tuple[str, float, float]] = []
    begin = 0
    last = (n_frames * FRAME_MS - HALF_FRAME_MS) / 1000
    for label, run in groupby(labels.tolist()):
        end = begin + len(list(run))
        if label != blank_id:
            if len(stamps) >= len(pieces):
                return None  # funasr: IndexError (a piece re-encoded to several ids)
            left = max((begin * FRAME_MS - HALF_FRAME_MS) / 1000, 0)
            right = min((end * FRAME_MS - HALF_FRAME_MS) / 1000, last)
            stamps.append((pieces[len(stamps)], left, right))
        begin = end
    return _post(stamps)
