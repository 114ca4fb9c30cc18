"""The OpenAI Audio API surface (`/v1`): transcriptions (json, text, srt, vtt, verbose_json, diarized_json, SSE),
translations (refused: Paraformer does not translate) and models. `protocol.py` holds the wire models,
`router.py` parses, calls the service and renders."""
