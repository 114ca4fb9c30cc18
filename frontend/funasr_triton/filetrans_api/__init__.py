"""Alibaba FileTrans (录音文件识别) RPC API over durable jobs."""
