"""The OpenAI Audio API surface (`/v1`): transcriptions (json, text, srt, vtt, verbose_json, diarized_json, SSE),
translations (refused: Paraformer does not translate), models, and our /v1 extensions in the same error shape:
jobs (`jobs.py`) and vocabularies (`vocabularies.py`). `protocol.py` holds the wire models, `serving.py` turns a
form into options and a transcript into the wire model (no HTTP), the routers only read and answer HTTP."""
