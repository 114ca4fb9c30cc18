"""DashScope async transcription (recorded-file API) over durable jobs."""
