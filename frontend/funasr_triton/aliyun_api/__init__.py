"""Alibaba Cloud NLS REST surface (一句话识别): `POST /stream/v1/asr`."""
