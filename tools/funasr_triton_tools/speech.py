"""Synthetic Mandarin speech (espeak-ng + ffmpeg) for tests and benchmarks: no recordings needed."""
from __future__ import annotations

import subprocess

import numpy as np

SR = 16000

SENTENCES = [
    "今天天气很好，我们去公园散步吧。",
    "语音识别服务需要快速而且准确。",
    "请把会议记录发给我，谢谢。",
    "北京是中国的首都，有很多名胜古迹。",
    "他明天早上八点坐火车去上海。",
    "这个模型可以识别普通话和一些英语单词。",
    "我们的客服电话是一二三四五六七。",
    "人工智能正在改变很多行业。",
    "请问附近有没有地铁站？",
    "下雨了，记得带伞。",
    "阿里巴巴达摩院发布了新的语音模型。",
    "欢迎使用离线语音转写服务。",
]


def espeak(text: str, voice: str = "cmn", speed: int = 160, pitch: int = 50) -> np.ndarray:
    """Speak `text` with espeak-ng and return 16 kHz mono float32 samples in [-1, 1]."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        check=True, capture_output=True,
    ).stdout
    pcm = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-ac", "1", "-ar", str(SR),
         "-f", "s16le", "pipe:1"],
        input=wav, check=True, capture_output=True,
    ).stdout
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
