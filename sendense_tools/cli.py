"""The `sendense` console entry point: one group per component."""

from __future__ import annotations

import click

from sendense_tools import __version__
from sendense_tools.backup.cli import backup
from sendense_tools.clirun import run
from sendense_tools.hub.cli import hub
from sendense_tools.node.cli import node
from sendense_tools.policy.cli import policy
from sendense_tools.restore.cli import restore
from sendense_tools.tunnel.cli import tunnel


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sendense")
def cli() -> None:
    """Sendense appliance: VMware backups through an SSH tunnel to a qemu-nbd hub."""


cli.add_command(tunnel)
cli.add_command(node)
cli.add_command(hub)
cli.add_command(backup)
cli.add_command(restore)
cli.add_command(policy)


def main() -> None:
    run(cli, "sendense")
