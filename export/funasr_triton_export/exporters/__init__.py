"""One exporter per model stage: FunASR hub directory in, Triton model version directory out.

The speaker-embedding features (embedding.json "features") are the served code's
(funasr_triton_models.speaker_features.DEFAULT_OPTIONS): CAM++ uses them as they are; pyannote's WeSpeaker
overrides some (wespeaker.py). Nothing is imported here: `funasr-triton` imports this package for its command
line in the frontend image, which has no model code.
"""
