"""What every table of the hub database shares: JSON columns, timestamps, active states."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

ACTIVE = ("pending", "running")


def loads(text: str | None) -> Any:
    """A JSON column's value (NULL: None)."""
    return json.loads(text) if text is not None else None


def dump(value: Any) -> str | None:
    return json.dumps(value) if value is not None else None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
