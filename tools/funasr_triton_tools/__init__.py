"""The tools on top of funasr_triton and funasr_triton_export: the `funasr-triton` command, benchmarks, diarization
evaluation, synthetic espeak-ng speech."""
