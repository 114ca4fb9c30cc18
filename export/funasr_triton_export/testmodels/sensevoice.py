"""Random-weight SenseVoiceSmall in FunASR hub layout, with a tiny sentencepiece BPE trained here.

The model is funasr's own `SenseVoiceSmall` (SenseVoiceEncoderSmall + CTC) built from a config.yaml
shaped like iic/SenseVoiceSmall's; its tokenizer is a sentencepiece BPE model trained at build time
from a few lines of text, with SenseVoice's rich-transcription tags (<|zh|>, <|HAPPY|>, <|BGM|>,
<|woitn|> ...) as user-defined pieces, as in the released chn_jpn_yue_eng_ko_spectok.bpe.model.
AutoModel loads the directory like the released one (configuration.json names the files), so the
export and `verify` run exactly the path a real checkpoint takes; only the weights are random.

`tiny` has toy sizes; `large` has the real encoder sizes (512 wide, 50 + 20 SANM blocks: about 230M
parameters) with the tiny vocabulary, for speed measurements only.
"""
from __future__ import annotations

import json
from pathlib import Path

from .paraformer import write_cmvn

# Bump when `build` makes different files from the same arguments (sources.build_test_model rebuilds).
# 2: the BPE adds no dummy "▁" in front of a text, as the released one (see train_bpe)
VERSION = 2

BPE_FILE = "chn_jpn_yue_eng_ko_spectok.bpe.model"  # the released model's file name
LANGUAGES = ["zh", "en", "yue", "ja", "ko", "nospeech"]
EMOTIONS = ["HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "EMO_UNKNOWN"]
EVENTS = ["Speech", "BGM", "Applause", "Laughter", "Cry", "Sneeze", "Breath", "Cough", "Sing", "Speech_Noise",
          "GBG", "Event_UNK"]
TEXTNORM = ["withitn", "woitn"]
TAGS = [f"<|{t}|>" for t in (*LANGUAGES, *EMOTIONS, *EVENTS, *TEXTNORM)]

# a few lines in SenseVoice's languages: enough for a BPE of a couple of hundred pieces
TEXT = [
    "hello world this is a small test of speech recognition",
    "the quick brown fox jumps over the lazy dog again and again",
    "we recognize speech in many languages and detect the language",
    "今天天气很好我们一起去公园散步吧",
    "语音识别模型可以识别中文英文日文韩文和粤语",
    "欢迎使用语音识别服务谢谢大家",
    "こんにちは今日はいい天気ですね",
    "안녕하세요 만나서 반갑습니다",
    "我哋今日去饮茶啦",
]
VOCAB_SIZE = 260

SIZES = {
    "tiny": dict(d=64, heads=4, units=128, blocks=3, tp_blocks=1),
    "large": dict(d=512, heads=4, units=2048, blocks=50, tp_blocks=20),
}


def config(size: str = "tiny") -> dict:
    s = SIZES[size]
    return {
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {
            "output_size": s["d"], "attention_heads": s["heads"], "linear_units": s["units"],
            "num_blocks": s["blocks"], "tp_blocks": s["tp_blocks"], "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1, "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True, "kernel_size": 11,
            "sanm_shfit": 0, "selfattention_layer_type": "sanm",
        },
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
                          "lfr_m": 7, "lfr_n": 6, "cmvn_file": None},
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True, "ignore_nan_grad": True},
        "specaug": None,
        "normalize": None,
        "input_size": 560,
    }


def train_bpe(path: Path) -> int:
    """Train the tiny BPE model into `path`; returns its vocabulary size.

    Without a dummy prefix, like the released BPE: FunASR's timestamp path (SenseVoiceSmall.inference,
    output_timestamp) takes the first four pieces of the decoded text to be the four tags and re-encodes
    each piece on its own to one id, which a BPE that puts "▁" in front of every text would break. Every
    word is also a line of its own, so the vocabulary has pieces for words without "▁" too, as the released
    one has (a piece "▁lazy" encoded alone loses its "▁": FunASR then needs "lazy" to be one piece)."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT + sorted({w for line in TEXT for w in line.split()})), model_writer=model, model_type="bpe", vocab_size=VOCAB_SIZE,
        hard_vocab_limit=False, character_coverage=1.0, user_defined_symbols=TAGS, num_threads=1,
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, add_dummy_prefix=False, minloglevel=2)
    path.write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(path))
    return sp.get_piece_size()


def build(out_dir: Path, size: str = "tiny", seed: int = 0) -> Path:
    import torch
    import yaml
    from funasr.register import tables

    import funasr.models.sense_voice.model  # noqa: F401  (registers SenseVoiceSmall)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = config(size)
    write_cmvn(out_dir / "am.mvn", seed=seed)
    vocab_size = train_bpe(out_dir / BPE_FILE)
    torch.manual_seed(seed)
    model = tables.model_classes.get(conf["model"])(
        **conf["model_conf"], encoder=conf["encoder"], encoder_conf=conf["encoder_conf"], ctc_conf=conf["ctc_conf"],
        input_size=conf["input_size"], vocab_size=vocab_size)
    with torch.no_grad():  # the query embeddings (language, event/emotion, textnorm) must matter
        model.embed.weight.normal_(0.0, 1.0)
    torch.save(model.state_dict(), out_dir / "model.pt")
    (out_dir / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True, sort_keys=False))
    (out_dir / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition",
        "model": {"type": "funasr"}, "file_path_metas": {
            "init_param": "model.pt", "config": "config.yaml", "tokenizer_conf": {"bpemodel": BPE_FILE},
            "frontend_conf": {"cmvn_file": "am.mvn"}},
    }, indent=2))
    return out_dir


__all__ = ["VERSION", "build", "config", "TAGS"]
