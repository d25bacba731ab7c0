"""`sendense hub` commands."""

from __future__ import annotations

import click


@click.group()
def hub() -> None:
    """hub commands."""
