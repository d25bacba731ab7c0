"""`python -m sendense_tools.tunnel ...`: the tunnel commands on their own.

Same commands and exit codes as `sendense tunnel ...`, without importing the
hub, node or backup code: what a minimal node unit (and the tunnel tests) run.
"""

from __future__ import annotations

import sys

import click

from sendense_tools.errors import SendenseError
from sendense_tools.tunnel.cli import tunnel


def main() -> None:
    try:
        tunnel.main(prog_name="sendense tunnel", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"sendense: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except SendenseError as exc:
        click.echo(f"sendense: error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
