"""Field types shared by the API models."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# SQLite stores INTEGER as signed 64-bit: a larger count would overflow it.
MAX_INT64 = 2**63 - 1
ByteCount = Annotated[int, Field(ge=0, le=MAX_INT64)]
