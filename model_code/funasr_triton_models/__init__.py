"""The code of the Triton python-backend models (model_repository/<model>/1/model.py), as one package.

Each `model.py` is thin (its config checked in `initialize`, its tensors, one call into this package); what
they share and the numpy ports live here. It imports nothing of funasr_triton, funasr_triton_export or
loadtest, and nothing heavy at package level: importing a port needs numpy (+ onnxruntime, kaldi-native-fbank,
scipy/scikit-learn where it says), never Triton; only `stage`, `bls` and `job_backend` import
`triton_python_backend_utils` and so run only inside Triton's python backend.

  stage              config checks, input tensors, per-request errors, BLS calls (every model.py)
  batching           requests into padded onnxruntime batches by length (paraformer, sensevoice)
  paraformer         SeACo-Paraformer's ragged requests in padded onnxruntime batches (paraformer, cpu profiles)
  bls                BLS calls several models make: itn, streaming_asr's 2-pass finals (asr, punc, itn)
  features           the wav frontends: load_cmvn, kaldi fbank, apply_lfr, OnlineFrontend (streaming, per-stream
                     FrontendState), AsrFrontend (offline: Paraformer, SenseVoice)
  hotwords           hotword strings -> SeACo-Paraformer token rows (feature_extractor)
  asr_text           Paraformer tokens/CIF peaks -> text, words, timestamps (asr_decode, streaming_asr)
  fsmn_vad           FSMN-VAD port: offline, offline-as-a-stream, streaming (vad, pipeline, transcribe, streaming_asr)
  paraformer_online  streaming Paraformer port (streaming_asr)
  streams            streaming_asr's streams: VAD + Paraformer + finals re-decoded over BLS
  ct_punc            CT-Transformer punctuation port (punc)
  sensevoice_text    SenseVoice CTC decoding and tags (sensevoice)
  speaker_features   speaker-embedding fbank (speaker_embedding)
  sentences, longfile, job_backend, diarize, diarize_cluster
                     the long-file job of pipeline and transcribe (LongFileJob, its BLS backend, diarization)

Installed with the project (`pip install -e .`: pyproject.toml finds it under model_code/), or alone into a
Triton image (`pip install ./model_code`: model_code/pyproject.toml, the `models` extra's dependencies).
"""
