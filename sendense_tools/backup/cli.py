"""`sendense backup` commands."""

from __future__ import annotations

import click


@click.group()
def backup() -> None:
    """backup commands."""
