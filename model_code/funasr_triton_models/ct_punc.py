"""CT-Transformer punctuation with onnxruntime: a port of funasr 1.4.16 `CTTransformer.inference`.

numpy + onnxruntime + json only (jieba too, when the model ships a `jieba_usr_dict`). The loop
below follows funasr/models/ct_transformer/model.py line by line for one text, so the output is
exactly `AutoModel(model=DIR).generate(input=text)[0]` — `text` and `punc_array` — given equal
logits argmax:

* words: `split_words` (funasr/models/ct_transformer/utils.py): whitespace split, runs of ASCII
  characters form one word, every non-ASCII character is its own word; with jieba, English runs
  stay words and the rest is cut by jieba (HMM off).
* ids: the words themselves are looked up in the token list (CharTokenizer on a list), OOV → `<unk>`.
* mini-sentences of `split_size` (20) words; except for the last one, everything after the last
  。/？ (searched in positions len-2 … 2 only) is carried into the next mini-sentence; once more
  than 200 words are carried without a sentence end, the last comma becomes a period.
* the text gets ASCII-word spacing/capitalisation and ,.? for ASCII words; a trailing ，/、/, is
  replaced by 。/., and a text not ending in a sentence end gets one appended (the last punc id
  becomes `sentence_end_id` in all these cases).
* punc_array: one class id per word (per character of multi-character jieba words).

`punctuate_step` runs the same loop on a text that arrives piece by piece (a long recording
recognised segment by segment): mini-sentence boundaries are fixed by word position, so each
mini-sentence is punctuated once a later word is known, and the committed parts of all steps add
up to `punctuate(whole)` (see its docstring for what holds with jieba). `punctuate` is one final
step.

Files in model_dir (written by funasr_triton_export.exporters.punc): model.onnx (or model_file),
tokens.json, punc.json, and jieba_usr_dict when punc.json names it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import onnxruntime as ort

CACHE_POP_TRIGGER_LIMIT = 200  # hard-coded in funasr's inference loop
STATE_VERSION = 1  # of punctuate_step's state
JIEBA_TAIL_CHARS = 32  # characters of words punctuate_step keeps back untokenized with jieba
# jieba 0.42's re_han_default: runs of these characters are segmented together (a "block"); any
# other character is a word of its own and ends the block before it
_JIEBA_RE_HAN = re.compile("[\u4E00-\u9FD5a-zA-Z0-9+#&\\._%\\-]")


class PuncStateError(ValueError):
    """A punctuate_step state that this punctuator did not produce (malformed)."""


class PuncResult(NamedTuple):
    text: str  # punctuated text, == AutoModel.generate(input=text)[0]["text"]
    words: List[str]  # the words punc_ids refer to (multi-character jieba words split into chars)
    punc_ids: List[int]  # == [int(x) for x in AutoModel's punc_array], one per entry of words


def split_to_mini_sentence(words: Sequence, word_limit: int = 20) -> list:
    """funasr.models.ct_transformer.utils.split_to_mini_sentence."""
    assert word_limit > 1
    if len(words) <= word_limit:
        return [words]
    sentences = []
    length = len(words)
    sentence_len = length // word_limit
    for i in range(sentence_len):
        sentences.append(words[i * word_limit : (i + 1) * word_limit])
    if length % word_limit > 0:
        sentences.append(words[sentence_len * word_limit :])
    return sentences


def is_english(text: str) -> bool:
    return re.search("^[a-zA-Z']+$", text) is not None


def join_chinese_and_english(input_list: Sequence[str]) -> str:
    line = ""
    for token in input_list:
        if is_english(token):
            line = line + " " + token
        else:
            line = line + token
    return line.strip()


def split_words(text: str, jieba_tokenizer=None) -> List[str]:
    """funasr.models.ct_transformer.utils.split_words (jieba_tokenizer plays jieba_usr_dict)."""
    if jieba_tokenizer:
        input_list = text.split()
        token_list_all = []
        language_list = []
        token_list_tmp: List[str] = []
        language_flag = None
        for token in input_list:
            if is_english(token) and language_flag == "Chinese":
                token_list_all.append(token_list_tmp)
                language_list.append("Chinese")
                token_list_tmp = []
            elif not is_english(token) and language_flag == "English":
                token_list_all.append(token_list_tmp)
                language_list.append("English")
                token_list_tmp = []
            token_list_tmp.append(token)
            language_flag = "English" if is_english(token) else "Chinese"
        if token_list_tmp:
            token_list_all.append(token_list_tmp)
            language_list.append(language_flag)

        result_list: List[str] = []
        for token_list_tmp, language_flag in zip(token_list_all, language_list):
            if language_flag == "English":
                result_list.extend(token_list_tmp)
            else:
                seg_list = jieba_tokenizer.cut(join_chinese_and_english(token_list_tmp), HMM=False)
                result_list.extend(seg_list)
        return result_list

    words: List[str] = []
    for seg in text.split():
        current_word = ""
        for c in seg:
            if len(c.encode()) == 1:  # ASCII
                current_word += c
            else:
                if len(current_word) > 0:
                    words.append(current_word)
                    current_word = ""
                words.append(c)
        if len(current_word) > 0:
            words.append(current_word)
    return words


def _is_text(s: str) -> bool:
    """Encodable as UTF-8 (no lone surrogates, which no UTF-8 input decodes to)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _default_ws_tokens(text: str) -> List[Tuple[int, int]]:
    """(start, end) of each token of text.split(), in order."""
    spans = []
    start = -1
    for i, c in enumerate(text):
        if c.isspace():
            if start >= 0:
                spans.append((start, i))
                start = -1
        elif start < 0:
            start = i
    if start >= 0:
        spans.append((start, len(text)))
    return spans


def _default_spans(text: str) -> List[Tuple[int, int]]:
    """(start, end) in text of each word of split_words(text) without jieba."""
    spans = []
    for s, e in _default_ws_tokens(text):
        start = -1
        for i in range(s, e):
            if len(text[i].encode()) == 1:  # ASCII
                if start < 0:
                    start = i
            else:
                if start >= 0:
                    spans.append((start, i))
                    start = -1
                spans.append((i, i + 1))
        if start >= 0:
            spans.append((start, e))
    return spans


def _is_jieba_expanded(token: str) -> bool:
    # funasr's range check, including its "\u0e00" lower bound (not \u4e00)
    return "\u0e00" <= token[0] <= "\u9fa5" and len(token) > 1


class CtPunctuator:
    """Punctuates one text at a time with the exported CT-Transformer (model.onnx)."""

    def __init__(
        self,
        model_dir,
        intra_op_threads: int = 1,
        model_file: str = "model.onnx",
        jieba_tail_chars: int = JIEBA_TAIL_CHARS,
    ):
        model_dir = Path(model_dir)
        if jieba_tail_chars < 1:
            raise ValueError(f"jieba_tail_chars must be >= 1, got {jieba_tail_chars}")
        self.jieba_tail_chars = int(jieba_tail_chars)
        self.model_dir = model_dir
        cfg_path = model_dir / "punc.json"
        tokens_path = model_dir / "tokens.json"
        model_path = model_dir / model_file
        for p in (cfg_path, tokens_path, model_path):
            if not p.is_file():
                raise FileNotFoundError(f"CT-Transformer punctuation: missing file {p}")

        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        self.config = cfg
        self.punc_list: List[str] = list(cfg["punc_list"])
        self.sentence_end_id = int(cfg.get("sentence_end_id", 3))
        self.split_size = int(cfg.get("split_size", 20))
        self.cache_pop_trigger_limit = int(cfg.get("cache_pop_trigger_limit", CACHE_POP_TRIGGER_LIMIT))
        if self.split_size <= 1:
            raise ValueError(f"{cfg_path}: split_size must be > 1, got {self.split_size}")

        token_list = json.loads(tokens_path.read_text(encoding="utf-8"))
        self.token2id = {}
        for i, t in enumerate(token_list):
            if t in self.token2id:
                raise ValueError(f'{tokens_path}: symbol "{t}" is duplicated')
            self.token2id[t] = i
        unk_symbol = cfg.get("unk_symbol", "<unk>")
        if unk_symbol not in self.token2id:
            raise ValueError(f"{tokens_path}: unknown symbol {unk_symbol!r} is not in the token list")
        self.unk_id = self.token2id[unk_symbol]
        self.vocab_size = len(token_list)

        self.jieba = None
        jieba_dict = cfg.get("jieba_usr_dict")
        if jieba_dict:
            jieba_path = model_dir / jieba_dict
            if not jieba_path.is_file():
                raise FileNotFoundError(f"CT-Transformer punctuation: missing file {jieba_path}")
            try:
                import jieba
            except ImportError as e:  # without jieba the words (and so the output) would differ
                raise ImportError(
                    f"{cfg_path} asks for jieba word segmentation ({jieba_dict}); install jieba"
                ) from e
            tokenizer = jieba.Tokenizer()
            tokenizer.load_userdict(str(jieba_path))
            self.jieba = tokenizer

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(int(intra_op_threads), 0)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(model_path), sess_options=so, providers=["CPUExecutionProvider"]
        )
        inputs = self.session.get_inputs()
        if len(inputs) != 2:
            raise ValueError(
                f"{model_path}: expected 2 inputs (inputs, text_lengths), got {[i.name for i in inputs]}"
            )
        self._in_ids, self._in_len = inputs[0].name, inputs[1].name
        self._out = self.session.get_outputs()[0].name

    # -- pieces ---------------------------------------------------------------------------------

    def split_words(self, text: str) -> List[str]:
        return split_words(text, self.jieba)

    def encode(self, words: Sequence[str]) -> List[int]:
        return [self.token2id.get(w, self.unk_id) for w in words]

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """[L, P] logits for one mini-sentence."""
        x = np.asarray(ids, dtype=np.int32)[None, :]
        lengths = np.array([x.shape[1]], dtype=np.int32)
        (y,) = self.session.run([self._out], {self._in_ids: x, self._in_len: lengths})
        return y[0]

    def _predict(self, ids: Sequence[int]) -> np.ndarray:
        return np.argmax(self.logits(ids), axis=-1).astype(np.int64)

    # -- funasr's CTTransformer.inference, whole text or piece by piece ------------------------

    def punctuate(self, text: str) -> PuncResult:
        """The whole text at once: == AutoModel.generate(input=text)[0] (text and punc_array)."""
        result, _ = self.punctuate_step(None, text, final=True)
        return result

    def punctuate_step(
        self, state: Optional[dict], piece: str, final: bool
    ) -> Tuple[PuncResult, Optional[dict]]:
        """Punctuate a text that arrives piece by piece; the results add up to `punctuate(whole)`.

        state: None to start, else the state the previous step returned: a JSON-serialisable dict
        holding the untokenized tail of the text, the words funasr carries into the next
        mini-sentence and the (at most `split_size`) words of the mini-sentence being filled, never
        the whole text. The carry is what funasr's loop itself carries: up to the last 。/？, and
        cut at a comma once over 200 words (a model that predicts neither keeps carrying). piece:
        the next part of the text; the pieces concatenated in order are the whole text (include
        any separating space in a piece); it may be empty. final: this piece ends the text.

        Returns (the newly committed part, the state for the next step; None after `final`). The
        committed parts of all steps concatenated (`text`, `words`, `punc_ids` each) equal
        `punctuate(whole)`: funasr cuts the words into mini-sentences of `split_size` counted from
        the start of the text, so a mini-sentence is punctuated as soon as a word after it is
        known (it is then not the last one; everything before its carried tail is final), and the
        last mini-sentence, with funasr's end fix, on `final`. A step runs the model only on the
        mini-sentences it completes. A single step with no state and `final=True` is `punctuate`.

        What is guaranteed about word boundaries across pieces:

        * default tokenizer (whitespace, ASCII runs, one word per other character): exact for any
          split of the text. A trailing ASCII run is kept back (untokenized, in the state's tail)
          until a later piece shows where it ends, so a very long run without a space grows the
          tail.
        * jieba (models with jieba_usr_dict): jieba segments a run of text with a best-path search
          that looks at the text after each word, so the words covering the last
          `jieba_tail_chars` (32) characters received are kept back untokenized and cut again with
          the next piece. Exact when the tail starts at a hard boundary, i.e. when the latest hard
          boundary lies within those last words: after an English token (letters and ' only)
          followed by whitespace, or before a character jieba never joins to others (anything
          but CJK U+4E00-U+9FD5, ASCII letters/digits and +#&._%-, e.g. ，。！ or emoji); the tail
          then starts there. Otherwise (typical ASR output: long runs of CJK without marks) it
          relies on jieba's best path more than 32 characters before the end not changing with
          later text, which takes dictionary words overlapping all the way through the tail: very
          unlikely, but not guaranteed (with jieba's dictionary, random dictionary-word text fed a
          few characters at a time differed from the whole-text words with an 8-character tail in
          2 of 120 runs, never with 16). If it happens, the words differ from `punctuate(whole)`
          around that spot; the steps stay consistent with each other (every character is
          committed exactly once).
        """
        if not isinstance(piece, str):
            raise TypeError(f"piece must be a str, got {type(piece).__name__}")
        st = self.check_state(state)
        buf = st["tail"] + piece
        words, cut, cont = self._tokenize(buf, st["cont"], bool(final))
        tail = buf[cut:]
        pending = st["pending"] + words
        cache = st["cache"]
        # a non-space character in the tail is at least one more word: the chunk is not the last
        more = bool(tail.strip())
        size = self.split_size
        texts: List[str] = []
        committed: List[str] = []
        punc_ids: List[int] = []
        while len(pending) > size or (len(pending) == size and more):
            cache, part_words, part_ids, part_text = self._mini_sentence(cache, pending[:size], last=False)
            pending = pending[size:]
            texts.append(part_text)
            committed += part_words
            punc_ids += part_ids
        if final:
            if pending:
                _, part_words, part_ids, part_text = self._mini_sentence(cache, pending, last=True)
                texts.append(part_text)
                committed += part_words
                punc_ids += part_ids
            new_state = None
        else:
            new_state = {"v": STATE_VERSION, "tail": tail, "cont": cont, "cache": cache, "pending": pending}
        return PuncResult("".join(texts), *self._expand(committed, punc_ids)), new_state

    def check_state(self, state: Optional[dict]) -> dict:
        """A validated copy of a state from punctuate_step (None: the start); PuncStateError if malformed."""
        if state is None:
            return {"v": STATE_VERSION, "tail": "", "cont": False, "cache": [], "pending": []}
        if not isinstance(state, dict):
            raise PuncStateError(f"state must be a JSON object, got {type(state).__name__}")
        keys = {"v", "tail", "cont", "cache", "pending"}
        if set(state) != keys:
            raise PuncStateError(f"state must have exactly the keys {sorted(keys)}, got {sorted(state)}")
        if state["v"] != STATE_VERSION or isinstance(state["v"], bool):
            raise PuncStateError(f"unsupported state version {state['v']!r} (expected {STATE_VERSION})")
        if not isinstance(state["tail"], str) or not _is_text(state["tail"]):
            raise PuncStateError("state tail must be a string")
        if not isinstance(state["cont"], bool):
            raise PuncStateError("state cont must be a boolean")
        for key in ("cache", "pending"):
            words = state[key]
            if not isinstance(words, list) or not all(isinstance(w, str) and w and _is_text(w) for w in words):
                raise PuncStateError(f"state {key} must be a list of non-empty strings")
        if len(state["pending"]) > self.split_size:
            raise PuncStateError(
                f"state pending holds {len(state['pending'])} words, more than split_size={self.split_size}"
            )
        return {"v": STATE_VERSION, "tail": state["tail"], "cont": state["cont"],
                "cache": list(state["cache"]), "pending": list(state["pending"])}

    # -- tokenization with positions ------------------------------------------------------------

    def _tokenize(self, buf: str, cont: bool, final: bool) -> Tuple[List[str], int, bool]:
        """(words of buf[:cut], cut, cont for buf[cut:]); cut == len(buf) when final."""
        if self.jieba is None:
            spans = _default_spans(buf)
            cut = len(buf)
            # an ASCII run touching the end may go on in the next piece
            if not final and spans and spans[-1][1] == len(buf) and len(buf[spans[-1][0]].encode()) == 1:
                cut = spans[-1][0]
            return [buf[s:e] for s, e in spans if e <= cut], cut, False

        spans, hard = self._jieba_spans(buf, cont)
        if final:
            return [w for _, _, w in spans], len(buf), False
        cut = 0
        kept = 0
        for s, _, word in reversed(spans):  # keep back at least jieba_tail_chars characters of words
            kept += len(word)
            if kept >= self.jieba_tail_chars:
                cut = s
                break
        cut = max([cut, *hard])
        if cut == 0:
            return [], 0, cont
        new_cont = not buf[cut - 1].isspace() and (cut == len(buf) or not buf[cut].isspace())
        return [w for _, e, w in spans if e <= cut], cut, new_cont

    def _jieba_spans(self, buf: str, cont: bool) -> Tuple[List[Tuple[int, int, str]], List[int]]:
        """split_words(buf, jieba) as (start, end, word) in buf, and the hard boundaries.

        cont: buf starts in the middle of a whitespace-separated token of a Chinese group (so its
        first token is not English whatever it looks like). A word may span whitespace (jieba cuts
        the group's tokens joined without spaces): its span then includes that whitespace, the
        word does not.
        """
        tokens = _default_ws_tokens(buf)
        spans: List[Tuple[int, int, str]] = []
        hard: List[int] = []
        i = 0
        while i < len(tokens):
            s, e = tokens[i]
            if is_english(buf[s:e]) and not (cont and s == 0):
                spans.append((s, e, buf[s:e]))
                if e < len(buf):  # complete (whitespace follows): the groups before and it are final
                    hard.append(e)
                i += 1
                continue
            j = i  # a Chinese group: consecutive non-English tokens, joined without spaces
            positions: List[int] = []
            while j < len(tokens):
                s, e = tokens[j]
                if j > i and is_english(buf[s:e]):
                    break
                positions.extend(range(s, e))
                j += 1
            joined = "".join(buf[p] for p in positions)
            off = 0
            for word in self.jieba.cut(joined, HMM=False):
                ws, we = positions[off], positions[off + len(word) - 1] + 1
                spans.append((ws, we, word))
                if len(word) == 1 and not _JIEBA_RE_HAN.match(word):
                    hard.append(ws)  # jieba's blocks end here: the words before are final
                off += len(word)
            if off != len(positions):
                raise RuntimeError("jieba's words do not add up to its input")
            i = j
        return spans, hard

    # -- one mini-sentence of funasr's loop --------------------------------------------------------

    def _mini_sentence(
        self, cache: List[str], chunk: List[str], last: bool
    ) -> Tuple[List[str], List[str], List[int], str]:
        """(new cache, committed words, their punc ids, their text) for cache + chunk."""
        punc_list = self.punc_list
        mini_sentence = list(cache) + list(chunk)
        punctuations = [int(x) for x in self._predict(self.encode(mini_sentence))]
        assert len(punctuations) == len(mini_sentence)
        new_cache: List[str] = []
        if not last:
            # Search for the last Period/QuestionMark as cache
            sentence_end = -1
            last_comma_index = -1
            for i in range(len(punctuations) - 2, 1, -1):
                p = punc_list[punctuations[i]]
                if p == "。" or p == "？":
                    sentence_end = i
                    break
                if last_comma_index < 0 and p == "，":
                    last_comma_index = i
            if (
                sentence_end < 0
                and len(mini_sentence) > self.cache_pop_trigger_limit
                and last_comma_index >= 0
            ):
                # The sentence is too long, cut off at a comma.
                sentence_end = last_comma_index
                punctuations[sentence_end] = self.sentence_end_id
            new_cache = mini_sentence[sentence_end + 1 :]
            mini_sentence = mini_sentence[0 : sentence_end + 1]
            punctuations = punctuations[0 : sentence_end + 1]
        words = list(mini_sentence)

        words_with_punc = []
        for i in range(len(mini_sentence)):
            if (
                i == 0
                or punc_list[punctuations[i - 1]] == "。"
                or punc_list[punctuations[i - 1]] == "？"
            ) and len(mini_sentence[i][0].encode()) == 1:
                mini_sentence[i] = mini_sentence[i].capitalize()
            if i == 0:
                if len(mini_sentence[i][0].encode()) == 1:
                    mini_sentence[i] = " " + mini_sentence[i]
            if i > 0:
                if (
                    len(mini_sentence[i][0].encode()) == 1
                    and len(mini_sentence[i - 1][0].encode()) == 1
                ):
                    mini_sentence[i] = " " + mini_sentence[i]
            words_with_punc.append(mini_sentence[i])
            if punc_list[punctuations[i]] != "_":
                punc_res = punc_list[punctuations[i]]
                if len(mini_sentence[i][0].encode()) == 1:
                    if punc_res == "，":
                        punc_res = ","
                    elif punc_res == "。":
                        punc_res = "."
                    elif punc_res == "？":
                        punc_res = "?"
                words_with_punc.append(punc_res)
        text = "".join(words_with_punc)

        # Add Period for the end of the sentence (the last mini-sentence's text is never empty)
        if last:
            last_char = text[-1]
            if last_char == "，" or last_char == "、":
                text = text[:-1] + "。"
                end_fix = True
            elif last_char == ",":
                text = text[:-1] + "."
                end_fix = True
            elif last_char != "。" and last_char != "？" and len(last_char.encode()) != 1:
                text = text + "。"
                end_fix = True
            elif last_char != "." and last_char != "?" and len(last_char.encode()) == 1:
                text = text + "."
                end_fix = True
            else:
                end_fix = False
            if end_fix and len(punctuations):
                punctuations[-1] = self.sentence_end_id
        return new_cache, words, punctuations, text

    def _expand(self, tokens: List[str], punc_ids: List[int]) -> Tuple[List[str], List[int]]:
        """funasr's post-processing for word-level (jieba) models, word by word: a multi-character
        CJK word becomes its characters, each but the last with punc id 1 ("_")."""
        if self.jieba is None:
            return list(tokens), list(punc_ids)
        words: List[str] = []
        ids: List[int] = []
        for token, pid in zip(tokens, punc_ids):
            if _is_jieba_expanded(token):
                words.extend(token)
                ids.extend([1] * (len(token) - 1))
            else:
                words.append(token)
            ids.append(pid)
        return words, ids


# ------------------------------------------------------------------------------- the `punc` stage's requests

_ASCII_MARKS = {"，": ",", "。": ".", "？": "?"}


def punc_marks(words, punc_ids, punc_list) -> list:
    """The mark written after each word ("" for none), as it appears in PUNC_TEXT."""
    marks = []
    for word, pid in zip(words, punc_ids):
        mark = punc_list[pid] if 0 < pid < len(punc_list) and punc_list[pid] != "_" else ""
        if mark and word and word[-1].isascii():
            mark = _ASCII_MARKS.get(mark, mark)
        marks.append(mark)
    return marks


def _read_state(punc: CtPunctuator, raw: str, max_text_chars: int) -> Optional[dict]:
    """The validated state of a STATE input (None: start), or ValueError."""
    if raw == "":
        return None
    if len(raw) > 16 * max_text_chars + 4096:  # far more than any state within max_text_chars
        raise ValueError(f"STATE is {len(raw)} characters long, not a state from this model")
    try:
        return punc.check_state(json.loads(raw))
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"STATE is not JSON from a previous punc response: {e!r}") from None
    except PuncStateError as e:
        raise ValueError(f"STATE is not a state from a previous punc response: {e}") from None


def punctuate_request(punc: CtPunctuator, text: str, raw_state: Optional[str], final: Optional[bool],
                      max_text_chars: int) -> Tuple[PuncResult, str]:
    """One `punc` request: (PuncResult, STATE out) in whole-text mode (neither STATE nor FINAL sent) or
    incremental mode; ValueError for input the stage refuses (INVALID_ARG)."""
    if raw_state is None and final is None:  # whole-text mode, as before STATE/FINAL existed
        if len(text) > max_text_chars:
            raise ValueError(f"TEXT has {len(text)} characters, more than max_text_chars={max_text_chars}")
        return punc.punctuate(text), ""
    state = _read_state(punc, raw_state or "", max_text_chars)
    # the text this step works on: the piece, the state's untokenized tail and its words
    held = 0 if state is None else len(state["tail"]) + sum(map(len, state["cache"] + state["pending"]))
    if len(text) + held > max_text_chars:
        raise ValueError(
            f"TEXT has {len(text)} characters and STATE holds {held}: together more than "
            f"max_text_chars={max_text_chars}"
        )
    result, new_state = punc.punctuate_step(state, text, bool(final))
    out = "" if new_state is None else json.dumps(new_state, ensure_ascii=False, separators=(",", ":"))
    return result, out


def _main(argv: Optional[Sequence[str]] = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Punctuate text with an exported CT-Transformer")
    ap.add_argument("model_dir")
    ap.add_argument("text", nargs="+")
    ap.add_argument("--model-file", default="model.onnx")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = ap.parse_args(argv)
    punc = CtPunctuator(args.model_dir, intra_op_threads=args.threads, model_file=args.model_file)
    for t in args.text:
        print(punc.punctuate(t).text)


if __name__ == "__main__":
    _main()
