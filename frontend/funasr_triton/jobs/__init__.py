"""Durable transcription jobs: a store (store.py), a queue (queue.py, huey), workers in the frontend
process (runner.py), and the native `/v1/jobs` API (router.py). FileTrans and DashScope routes are
other wire shapes over the same jobs (filetrans_api/, dashscope_api/)."""
