"""Structured event log: one logfmt line per event on stdout, for the journal."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TextIO


def _quote(value: object) -> str:
    text = "" if value is None else str(value)
    if text and not any(c in text for c in ' "=\\\n\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def format_event(event: str, level: str = "info", **fields: object) -> str:
    parts = [f"ts={datetime.now(UTC).isoformat(timespec='milliseconds')}", f"level={level}"]
    parts.append(f"event={_quote(event)}")
    parts.extend(f"{key}={_quote(value)}" for key, value in fields.items())
    return " ".join(parts)


def log_event(
    event: str, level: str = "info", *, stream: TextIO | None = None, **fields: object
) -> None:
    out = stream or sys.stdout
    out.write(format_event(event, level, **fields) + "\n")
    out.flush()
