"""The one internal error type; each API surface renders it in its own shape."""
from __future__ import annotations


class AsrError(Exception):
    """A failure with an HTTP-ish status: 4xx = the caller's input, 5xx = ours or Triton's."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request", param: str | None = None,
                 retry_after_s: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param
        self.retry_after_s = retry_after_s
