"""One exporter per model stage: FunASR hub directory in, Triton model version directory out."""

# torchaudio.compliance.kaldi.fbank's defaults with 80 mel bins, on [-1, 1] samples, then per-window mean
# subtraction: the speaker-embedding features (embedding.json "features"). CAM++ uses them as they are;
# pyannote's WeSpeaker overrides some (exporters/wespeaker.py). Must stay in step with
# funasr_triton_models.speaker_features.DEFAULT_OPTIONS.
SPEAKER_FBANK_DEFAULTS = {
    "sample_frequency": 16000.0,
    "num_mel_bins": 80,
    "frame_length": 25.0,
    "frame_shift": 10.0,
    "dither": 0.0,
    "window_type": "povey",
    "preemphasis_coefficient": 0.97,
    "remove_dc_offset": True,
    "round_to_power_of_two": True,
    "snip_edges": True,
    "low_freq": 20.0,
    "high_freq": 0.0,
    "energy_floor": 1.0,
    "raw_energy": True,
    "use_energy": False,
    "use_log_fbank": True,
    "use_power": True,
    "htk_compat": False,
    "waveform_scale": 1.0,
    "subtract_mean": True,
}
