"""What both NLS surfaces share, REST `aliyun_api/` and WebSocket `nls_ws/`: status codes, ids, `vocabulary_id`.

A surface package never imports another surface; what two surfaces share lives here, below them.
(FileTrans, a separate product, keeps its own `StatusCode` list in `filetrans_api/protocol.py`.)
"""
from __future__ import annotations

import uuid
from enum import IntEnum

from .app.hotwords import parse_hotwords
from .vocabularies.registry import looks_like_id, vocabulary_words


class NlsStatus(IntEnum):
    """NLS `status` codes (Alibaba docs; funasr-api `app/core/exceptions.py`)."""
    SUCCESS = 20000000
    DEFAULT_CLIENT_ERROR = 40000000
    AUTHENTICATION_FAILED = 40000001
    INVALID_MESSAGE = 40000002
    INVALID_PARAMETER = 40000003
    IDLE_TIMEOUT = 40000004
    TOO_MANY_REQUESTS = 40000005
    TRIAL_EXPIRED = 40000010
    UNSUPPORTED_SAMPLE_RATE = 41010101
    DEFAULT_SERVER_ERROR = 50000000
    INTERNAL_GRPC_ERROR = 50000001


def new_id() -> str:
    """A 32-hex NLS id (task_id, message_id)."""
    return uuid.uuid4().hex


async def vocabulary_hotwords(app, vocabulary_id: str | None) -> list[str]:
    """NLS `vocabulary_id`: a stored vocabulary's id (vocab-…), or inline words as funasr-api takes them
    ("词 20 词 15")."""
    if looks_like_id(vocabulary_id):
        return await vocabulary_words(app, vocabulary_id)
    return parse_hotwords(vocabulary_id)
