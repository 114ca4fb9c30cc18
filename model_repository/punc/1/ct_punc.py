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

Files in model_dir (written by funasr_triton_export.exporters.punc): model.onnx (or model_file),
tokens.json, punc.json, and jieba_usr_dict when punc.json names it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence

import numpy as np
import onnxruntime as ort

CACHE_POP_TRIGGER_LIMIT = 200  # hard-coded in funasr's inference loop


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


def _is_jieba_expanded(token: str) -> bool:
    # funasr's range check, including its "\u0e00" lower bound (not \u4e00)
    return "\u0e00" <= token[0] <= "\u9fa5" and len(token) > 1


class CtPunctuator:
    """Punctuates one text at a time with the exported CT-Transformer (model.onnx)."""

    def __init__(self, model_dir, intra_op_threads: int = 1, model_file: str = "model.onnx"):
        model_dir = Path(model_dir)
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

    # -- funasr's CTTransformer.inference ------------------------------------------------------

    def punctuate(self, text: str) -> PuncResult:
        if not text or not text.strip():
            return PuncResult("", [], [])
        punc_list = self.punc_list
        tokens = self.split_words(text)
        tokens_int = self.encode(tokens)

        mini_sentences = split_to_mini_sentence(tokens, self.split_size)
        mini_sentences_id = split_to_mini_sentence(tokens_int, self.split_size)
        assert len(mini_sentences) == len(mini_sentences_id)
        cache_sent: List[str] = []
        cache_sent_id: List[int] = []
        new_mini_sentence = ""
        new_mini_sentence_out = ""
        punc_parts: List[np.ndarray] = []
        n = len(mini_sentences)
        for mini_sentence_i in range(n):
            mini_sentence = cache_sent + list(mini_sentences[mini_sentence_i])
            mini_sentence_id = cache_sent_id + list(mini_sentences_id[mini_sentence_i])
            punctuations = self._predict(mini_sentence_id)
            assert punctuations.shape[0] == len(mini_sentence)

            # Search for the last Period/QuestionMark as cache
            if mini_sentence_i < n - 1:
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
                cache_sent = mini_sentence[sentence_end + 1 :]
                cache_sent_id = mini_sentence_id[sentence_end + 1 :]
                mini_sentence = mini_sentence[0 : sentence_end + 1]
                punctuations = punctuations[0 : sentence_end + 1]

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
            new_mini_sentence += "".join(words_with_punc)

            # Add Period for the end of the sentence
            new_mini_sentence_out = new_mini_sentence
            if mini_sentence_i == n - 1:
                last = new_mini_sentence[-1]
                if last == "，" or last == "、":
                    new_mini_sentence_out = new_mini_sentence[:-1] + "。"
                    end_fix = True
                elif last == ",":
                    new_mini_sentence_out = new_mini_sentence[:-1] + "."
                    end_fix = True
                elif last != "。" and last != "？" and len(last.encode()) != 1:
                    new_mini_sentence_out = new_mini_sentence + "。"
                    end_fix = True
                elif last != "." and last != "?" and len(last.encode()) == 1:
                    new_mini_sentence_out = new_mini_sentence + "."
                    end_fix = True
                else:
                    end_fix = False
                if end_fix and len(punctuations):
                    punctuations[-1] = self.sentence_end_id
            punc_parts.append(punctuations)

        punc_array = [int(x) for part in punc_parts for x in part]
        words = list(tokens)
        # post processing when using word level punc model
        if self.jieba is not None:
            len_tokens = len(tokens)
            new_punc_array = list(punc_array)
            for i, token in enumerate(tokens[::-1]):
                if _is_jieba_expanded(token):
                    for _ in range(len(token) - 1):
                        new_punc_array.insert(len_tokens - i - 1, 1)
            punc_array = new_punc_array
            words = []
            for token in tokens:
                if _is_jieba_expanded(token):
                    words.extend(token)
                else:
                    words.append(token)
        return PuncResult(new_mini_sentence_out, words, punc_array)


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
