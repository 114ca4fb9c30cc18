"""Hotword vocabularies stored on the server and named by `vocabulary_id` (Alibaba's clients pass ids)."""
