"""One exporter per model stage: FunASR hub directory in, Triton model version directory out."""

# torchaudio.compliance.kaldi.fbank's defaults with 80 mel bins, on [-1, 1] samples, then per-window mean
# subtraction: the speaker-embedding features (embedding.json "features"), as the served code defines them.
# CAM++ uses them as they are; pyannote's WeSpeaker overrides some (exporters/wespeaker.py).
from funasr_triton_models.speaker_features import DEFAULT_OPTIONS as SPEAKER_FBANK_DEFAULTS

__all__ = ["SPEAKER_FBANK_DEFAULTS"]
