"""The seed-compatible call-centre surface: `POST /api` (FunASR + pyannote shape) and seed 003's `POST /transcribe`."""
