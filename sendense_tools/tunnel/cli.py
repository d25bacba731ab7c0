"""`sendense tunnel` commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from sendense_tools.config import load_config
from sendense_tools.tunnel.config import StatusSection, TunnelConfig
from sendense_tools.tunnel.status import process_alive, read_status

DEFAULT_CONFIG = "/etc/sendense/tunnel.toml"

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="tunnel.toml",
)


@click.group()
def tunnel() -> None:
    """SSH tunnel from this node to the hub (forwards NBD ports and the APIs)."""


@tunnel.command()
@config_option
def run(config_path: str) -> None:
    """Run the tunnel supervisor in the foreground (systemd Type=notify)."""
    from sendense_tools.tunnel.supervisor import run_tunnel

    run_tunnel(load_config(config_path, TunnelConfig))


@tunnel.command()
@config_option
def check(config_path: str) -> None:
    """Pre-flight checks: key file, pinned host key, hub reachable, login and forwards work."""
    from sendense_tools.tunnel.check import run_checks

    results = run_checks(load_config(config_path, TunnelConfig))
    for r in results:
        click.echo(f"{'PASS' if r.ok else 'FAIL'}  {r.name:<12} {r.detail}")
    if not all(r.ok for r in results):
        sys.exit(1)


@tunnel.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(config_path: str, as_json: bool) -> None:
    """Show the tunnel's state; exit status 1 unless it is connected."""
    if Path(config_path).exists() or config_path != DEFAULT_CONFIG:
        status_file = load_config(config_path, TunnelConfig).status.file
    else:
        status_file = StatusSection().file
    data = read_status(status_file)
    # A status file left by a process that died says nothing about now.
    if not process_alive(data.get("pid")):
        data["connected"] = False
        data["forwards_up"] = 0
        data["last_error"] = f"tunnel process {data.get('pid')} is not running"
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _print_status(data)
    if not data.get("connected"):
        sys.exit(1)


def _print_status(data: dict) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    state = "[green]connected[/]" if data.get("connected") else "[red]not connected[/]"
    table.add_row("state", state)
    table.add_row("hub", str(data.get("hub")))
    table.add_row("since", str(data.get("since") or "-"))
    table.add_row("connections", f"{data.get('connections_up')}/{data.get('connections')}")
    table.add_row("forwards up", f"{data.get('forwards_up')}/{data.get('forwards_total')}")
    table.add_row("nbd forwards", f"{data.get('nbd_listen')}: {data.get('nbd_targets') or '-'}")
    table.add_row("reverse forward", "up" if data.get("reverse_up") else "down")
    table.add_row("reconnects", str(data.get("reconnects")))
    if data.get("backoff_seconds") is not None:
        table.add_row(
            "next attempt", f"in {data['backoff_seconds']} s (at {data.get('next_attempt_at')})"
        )
    if data.get("last_error"):
        table.add_row("last error", f"{data['last_error']} ({data.get('last_error_at') or '-'})")
    table.add_row("pid", str(data.get("pid")))
    Console().print(table)
