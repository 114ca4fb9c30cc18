"""Vocabularies for the random-weight test models.

The ASR vocabulary has the real Paraformer-zh size (8404: SeACo's no-bias id 8377 must exist) and
the same layout: <blank> <s> </s>, CJK characters, a few English BPE pieces, <unk> last.
"""
from __future__ import annotations

ASR_VOCAB_SIZE = 8404
ENGLISH_PIECES = ["a@@", "i@@", "the", "and", "hello", "world", "ok", "ai", "app", "ing"]


def cjk_chars(n: int) -> list[str]:
    return [chr(0x4E00 + i) for i in range(n)]


def asr_tokens() -> list[str]:
    n_cjk = ASR_VOCAB_SIZE - 3 - len(ENGLISH_PIECES) - 1
    tokens = ["<blank>", "<s>", "</s>", *cjk_chars(n_cjk), *ENGLISH_PIECES, "<unk>"]
    assert len(tokens) == ASR_VOCAB_SIZE
    return tokens


def punc_tokens(n_cjk: int = 8000) -> list[str]:
    """CT-Transformer vocabulary: covers every CJK character the ASR test model can emit."""
    return ["<blank>", "<s>", "</s>", *cjk_chars(n_cjk), "the", "and", "hello", "world", "<unk>"]
