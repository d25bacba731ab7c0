"""`sendense tunnel` commands."""

from __future__ import annotations

import click


@click.group()
def tunnel() -> None:
    """tunnel commands."""
