"""One exporter per model stage: FunASR hub directory in, Triton model version directory out."""
