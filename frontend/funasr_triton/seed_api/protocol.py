"""Wire models of the seed-compatible /api (pydantic only)."""
from __future__ import annotations

from pydantic import BaseModel


class SeedLine(BaseModel):
    line: int
    speaker: str
    start_time: float
    end_time: float
    text: str


class SeedResponse(BaseModel):
    code: int = 0
    msg: str = "ok"
    data: list[SeedLine]


class SeedErrorResponse(BaseModel):
    code: int
    msg: str
    data: list[SeedLine] = []
