"""`sendense node` commands."""

from __future__ import annotations

import asyncio
import logging

import click

from sendense_tools.node.service import serve


@click.group()
def node() -> None:
    """The node daemon: vCenter access and backups for the hub."""


@node.command("serve")
@click.option(
    "--config",
    "config_path",
    default="/etc/sendense/node.toml",
    show_default=True,
    help="node.toml",
)
def serve_cmd(config_path: str) -> None:
    """Run the node API (foreground; systemd Type=notify)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(config_path))
