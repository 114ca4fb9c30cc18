"""Alibaba Cloud NLS real-time WebSocket surface (`/ws/v1`, `/ws/v1/asr`): SpeechTranscriber (实时语音识别) and
SpeechRecognizer (一句话识别) as Alibaba's SDKs speak them. `protocol.py` holds the wire models, `session.py`
parses, drives a StreamingService stream and renders its events, `router.py` is the endpoint."""
