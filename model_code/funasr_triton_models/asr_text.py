"""Paraformer token ids → text and character timestamps, numpy only.

Faithful ports of funasr 1.4.16 `utils/timestamp_tools.ts_prediction_lfr6_standard` (with
`cif_wo_hidden`) and `utils/postprocess_utils.sentence_postprocess` (with `abbr_dispose`).
"""
from __future__ import annotations

import numpy as np

SPECIAL = ("<s>", "</s>", "<unk>", "<OOV>")


def cif_wo_hidden(alphas: np.ndarray, threshold: float) -> np.ndarray:
    """Integrate-and-fire over one sequence; returns the running integral at each frame."""
    alphas = alphas.astype(np.float32)
    fires = np.empty_like(alphas)
    integrate = np.float32(0.0)
    th = np.float32(threshold)
    for t in range(alphas.shape[0]):
        integrate = np.float32(integrate + alphas[t])
        fires[t] = integrate
        if integrate >= th:
            integrate = np.float32(integrate - th)
    return fires


def ts_prediction_lfr6_standard(us_alphas: np.ndarray, us_peaks: np.ndarray, char_list: list[str],
                                vad_offset: float = 0.0, force_time_shift: float = -1.5,
                                upsample_rate: int = 3) -> list[list[int]]:
    """Millisecond [start, end] per non-silence token."""
    if not char_list:
        return []
    start_end_threshold = 5
    max_token_duration = 12  # upsampled frames
    time_rate = 10.0 * 6 / 1000 / upsample_rate
    alphas = us_alphas.astype(np.float32).copy()
    peaks = us_peaks.astype(np.float32)
    if char_list[-1] == "</s>":
        char_list = char_list[:-1]
    fire_place = np.where(peaks >= np.float32(1.0 - 1e-4))[0] + force_time_shift
    if len(fire_place) != len(char_list) + 1:
        alphas = alphas / np.float32(alphas.sum() / np.float32(len(char_list) + 1))
        peaks = cif_wo_hidden(alphas, 1.0 - 1e-4)
        fire_place = np.where(peaks >= np.float32(1.0 - 1e-4))[0] + force_time_shift
    num_frames = peaks.shape[0]
    stamps: list[list[float]] = []
    chars: list[str] = []
    if fire_place[0] > start_end_threshold:
        stamps.append([0.0, fire_place[0] * time_rate])
        chars.append("<sil>")
    for i in range(len(fire_place) - 1):
        chars.append(char_list[i])
        if fire_place[i + 1] - fire_place[i] <= max_token_duration:
            stamps.append([fire_place[i] * time_rate, fire_place[i + 1] * time_rate])
        else:
            split = fire_place[i] + max_token_duration
            stamps.append([fire_place[i] * time_rate, split * time_rate])
            stamps.append([split * time_rate, fire_place[i + 1] * time_rate])
            chars.append("<sil>")
    if num_frames - fire_place[-1] > start_end_threshold:
        end = (num_frames + fire_place[-1]) * 0.5
        stamps[-1][1] = end * time_rate
        stamps.append([end * time_rate, num_frames * time_rate])
        chars.append("<sil>")
    elif stamps:
        stamps[-1][1] = num_frames * time_rate
    if vad_offset:
        for s in stamps:
            s[0] = s[0] + vad_offset / 1000.0
            s[1] = s[1] + vad_offset / 1000.0
    return [[int(s[0] * 1000), int(s[1] * 1000)] for c, s in zip(chars, stamps) if c != "<sil>"]


def _is_chinese(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "0" <= ch <= "9" or ch == "@"


def _clean(word: str) -> str:
    for s in (" ", "</s>", "<s>", "<unk>", "<OOV>"):
        word = word.replace(s, "")
    return word


def is_all_chinese(words: list[str] | str) -> bool:
    cleaned = [_clean(w) for w in words]
    return bool(cleaned) and all(_is_chinese(w) for w in cleaned)


def is_all_alpha(words: list[str] | str) -> bool:
    cleaned = [_clean(w) for w in words]
    if not cleaned:
        return False
    for w in cleaned:
        if not w.isalpha() and w != "'":
            return False
        if w.isalpha() and _is_chinese(w):
            return False
    return True


def _is_single_letter(w: str) -> bool:
    return len(w) == 1 and w.encode("utf-8").isalpha()


def abbr_dispose(words: list[str], stamps: list[list[int]] | None = None):
    """Join spelled-out letters ("a b c") into one upper-case abbreviation ("ABC")."""
    n = len(words)
    abbr_begin: list[int] = []
    abbr_end: list[int] = []
    last = -1
    for num in range(n):
        if num <= last:
            continue
        if _is_single_letter(words[num]) and num + 2 < n and words[num + 1] == " " \
                and _is_single_letter(words[num + 2]):
            abbr_begin.append(num)
            num += 2
            abbr_end.append(num)
            while True:
                num += 1
                if num < n and words[num] == " ":
                    num += 1
                    if num < n and _is_single_letter(words[num]):
                        abbr_end[-1] = num
                        last = num
                    else:
                        break
                else:
                    break
    ts_nums = []
    ts_index = 0
    for num in range(n):
        ts_nums.append(ts_index)
        if words[num] != " ":
            ts_index += 1
    out: list[str] = []
    out_ts: list[list[int]] = []
    last = -1
    begin = None
    for num in range(n):
        if num <= last:
            continue
        if num in abbr_begin:
            if stamps is not None:
                begin = stamps[ts_nums[num]][0]
            word = words[num].upper()
            num += 1
            while num < n:
                if num in abbr_end:
                    word += words[num].upper()
                    last = num
                    break
                if words[num].encode("utf-8").isalpha():
                    word += words[num].upper()
                num += 1
            out.append(word)
            if stamps is not None and ts_nums[num] < len(stamps):
                out_ts.append([begin, stamps[ts_nums[num]][1]])
        else:
            out.append(words[num])
            if stamps is not None and ts_nums[num] < len(stamps) and words[num] != " ":
                out_ts.append([stamps[ts_nums[num]][0], stamps[ts_nums[num]][1]])
    return (out, out_ts) if stamps is not None else out


def sentence_postprocess(tokens: list[str], stamps: list[list[int]] | None = None):
    """Merge BPE pieces, space English words, drop specials.

    Returns (text, stamps, words) with stamps, else (text, words) — funasr's conventions.
    """
    middle = [t for t in tokens if t not in SPECIAL]
    words: list[str] = []
    ts: list[list[int]] = []
    item = ""
    if is_all_chinese(middle):
        words = [t.replace(" ", "") for t in middle]
        if stamps is not None:
            ts = stamps
    elif is_all_alpha(middle):
        flag = True
        begin = end = None
        for i, t in enumerate(middle):
            if flag and stamps is not None:
                begin, end = stamps[i]
            if "@@" in t:
                item += t.replace("@@", "")
                if stamps is not None:
                    flag = False
                    end = stamps[i][1]
            else:
                item += t
                words.extend([item, " "])
                item = ""
                if stamps is not None:
                    flag = True
                    end = stamps[i][1]
                    ts.append([begin, end])
                    begin = end
    else:
        alpha_blank = False
        flag = True
        begin = end = -1
        for i, t in enumerate(middle):
            if flag and stamps is not None:
                begin, end = stamps[i]
            if is_all_chinese(t):
                if alpha_blank:
                    words.pop()
                words.append(t)
                alpha_blank = False
                if stamps is not None:
                    flag = True
                    ts.append([begin, end])
                    begin = end
            elif "@@" in t:
                item += t.replace("@@", "")
                alpha_blank = False
                if stamps is not None:
                    flag = False
                    end = stamps[i][1]
            elif is_all_alpha(t):
                item += t
                words.extend([item, " "])
                item = ""
                alpha_blank = True
                if stamps is not None:
                    flag = True
                    end = stamps[i][1]
                    ts.append([begin, end])
                    begin = end
            else:
                words.append(t)
    if stamps is not None:
        words, ts = abbr_dispose(words, ts)
        real = [w for w in words if w != " "]
        return " ".join(real).strip(), ts, real
    words = abbr_dispose(words)
    real = [w for w in words if w != " "]
    return "".join(words).strip(), real


def decode(token_ids: np.ndarray, token_num: int, tokens: list[str], us_alphas: np.ndarray | None = None,
           us_cif_peak: np.ndarray | None = None, vad_offset_ms: int = 0, upsample_rate: int = 3,
           sos: int = 1, eos: int = 2, blank: int = 0):
    """One segment's ids → (text, words, timestamps or None)."""
    ids = [int(i) for i in token_ids[: max(int(token_num), 0)]]
    ids = [i for i in ids if i not in (sos, eos, blank)]
    toks = [tokens[i] for i in ids]
    if us_alphas is None:
        text, words = sentence_postprocess(toks)
        return text, words, None
    stamps = ts_prediction_lfr6_standard(us_alphas, us_cif_peak, list(toks), vad_offset=vad_offset_ms,
                                         upsample_rate=upsample_rate)
    text, stamps, words = sentence_postprocess(toks, stamps)
    return text, words, stamps


def word_logprobs(words: list[str], tokens: list[str], logprobs) -> list[float]:
    """Each word's log-probability: the sum of the log-probabilities of the tokens it was made of.

    Tokens are assigned to words by where their characters ("@@" removed, case-insensitive: abbreviations
    are upper-cased) fall in the concatenated words; a token found in no word adds to none."""
    out = [0.0] * len(words)
    if not words:
        return out
    text = "".join(words).lower()
    ends, total = [], 0
    for w in words:
        total += len(w)
        ends.append(total)
    pos = k = 0
    for tok, lp in zip(tokens, logprobs):
        piece = tok.replace("@@", "").lower()
        at = text.find(piece, pos) if piece else -1
        if at < 0:
            continue
        while k < len(words) - 1 and ends[k] <= at:
            k += 1
        out[k] += float(lp)
        pos = at + len(piece)
    return out
