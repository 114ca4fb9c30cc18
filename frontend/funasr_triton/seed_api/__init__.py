"""The seed-compatible call-centre surface: `POST /api` (FunASR + pyannote shape)."""
