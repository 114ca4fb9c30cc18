"""Durable transcription jobs: a store (store.py), a queue (queue.py, huey) and workers in the frontend
process (runner.py). The native `/v1/jobs` API (openai_api/jobs.py), FileTrans (filetrans_api/) and DashScope
(dashscope_api/) are wire shapes over the same jobs."""
