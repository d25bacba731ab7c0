"""Running a click group the way every sendense command behaves: usage errors
are one line and exit 2, a SendenseError is one line and exit 1."""

from __future__ import annotations

import sys

import click

from sendense_tools.errors import SendenseError


def run(group: click.Group, prog: str, prefix: str | None = None) -> None:
    """Run `group` as the program `prog`; messages start with `prefix` (default: prog)."""
    label = prefix or prog
    try:
        rv = group.main(prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo(f"{label}: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"{label}: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except SendenseError as exc:
        click.echo(f"{label}: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(f"{label}: interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
