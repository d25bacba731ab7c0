"""`sendense hub` commands."""

from __future__ import annotations

import click


@click.group()
def hub() -> None:
    """hub commands."""


@hub.command()
@click.option(
    "--config",
    "config_path",
    default="/etc/sendense/hub.toml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="hub.toml",
)
def serve(config_path: str) -> None:
    """Run the hub API, NBD port allocator and qemu-nbd supervisor (foreground)."""
    from sendense_tools.hub.service import serve as run_service

    run_service(config_path)
