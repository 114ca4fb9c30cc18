"""funasr-triton: FunASR speech recognition served by NVIDIA Triton (runtime side: no torch, no funasr)."""

__version__ = "0.1.0"
