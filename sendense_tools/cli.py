"""The `sendense` console entry point: one group per component."""

from __future__ import annotations

import sys

import click

from sendense_tools import __version__
from sendense_tools.backup.cli import backup
from sendense_tools.errors import SendenseError
from sendense_tools.hub.cli import hub
from sendense_tools.node.cli import node
from sendense_tools.tunnel.cli import tunnel


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sendense")
def cli() -> None:
    """Sendense appliance: VMware backups through an SSH tunnel to a qemu-nbd hub."""


cli.add_command(tunnel)
cli.add_command(node)
cli.add_command(hub)
cli.add_command(backup)


def main() -> None:
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("sendense: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        # Usage errors: one line, exit 2.
        click.echo(f"sendense: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except SendenseError as exc:
        click.echo(f"sendense: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("sendense: interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
