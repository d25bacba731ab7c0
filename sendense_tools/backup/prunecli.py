"""`sendense backup prune`: the hub applies its policies' retention, and says what it did.

Exit codes: 0 the prune completed, 1 it failed (or the hub could not be reached),
2 bad usage or a prune the hub refused (one already running, an unknown policy).
"""

from __future__ import annotations

import re
from typing import Any

import click
from rich.table import Table

from sendense_tools.api.cli import (
    call,
    echo_json,
    hub_option,
    json_option,
    run_refusing,
    token_option,
    wide_console,
)
from sendense_tools.errors import SendenseError
from sendense_tools.policy.model import NAME_PATTERN


def _vm_table(vm: dict[str, Any]) -> Table:
    policy = vm.get("policy") or "no policy"
    table = Table(title=f"{vm['vm']} on {vm['node']} (policy {policy})")
    for col in ("point", "created", "outcome"):
        table.add_column(col, overflow="fold")
    rows = [(k, "kept: " + ", ".join(k["reasons"])) for k in vm["kept"]]
    for r in vm["removed"]:
        how = f"merged into {r['into']}" if r["action"] == "merge" else "deleted"
        rows.append((r, f"removed: {how} ({r['bytes']:,} bytes)"))
    for point, outcome in sorted(rows, key=lambda row: row[0]["created_at"], reverse=True):
        table.add_row(point["id"], point["created_at"], outcome)
    return table


def summary(run: dict[str, Any]) -> str:
    """The run in one line: `prune: N points removed (M merged, B bytes), K kept`."""
    removed = [r for vm in run["vms"] for r in vm["removed"]]
    merged = sum(r["action"] == "merge" for r in removed)
    kept = sum(len(vm["kept"]) for vm in run["vms"])
    verb = "would be removed" if run["dry_run"] else "removed"
    head = "prune (dry run)" if run["dry_run"] else "prune"
    return (
        f"{head}: {len(removed)} points {verb} ({merged} merged, {run['merged_bytes']:,} bytes),"
        f" {kept} kept"
    )


def print_run(run: dict[str, Any]) -> None:
    console = wide_console()
    for vm in run["vms"]:
        if vm["skipped"]:
            console.print(f"{vm['vm']} on {vm['node']}: skipped: {vm['skipped']}")
        else:
            console.print(_vm_table(vm))
    click.echo(summary(run))


def _policy(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(NAME_PATTERN, value):
        raise click.BadParameter(f"{value!r} is not a policy name ({NAME_PATTERN})")
    return value


def register(group: click.Group) -> None:
    @group.command("prune")
    @click.option("--dry-run", is_flag=True, help="show what would be removed, change nothing")
    @click.option("--policy", default=None, callback=_policy, help="only this policy's VMs")
    @click.option("--node", default=None, help="only this node's points (a node token: its own)")
    @hub_option
    @token_option
    @json_option
    def prune(
        dry_run: bool,
        policy: str | None,
        node: str | None,
        hub_url: str,
        token_file: str,
        as_json: bool,
    ) -> None:
        """Remove the restore points no policy keeps (merging those others build on)."""
        body = {"dry_run": dry_run, "policy": policy, "node": node}
        # Merging big points takes as long as it takes: no client-side limit.
        run = run_refusing(call(hub_url, token_file, "POST", "/api/v1/prune", body, None))
        if as_json:
            echo_json(run)
        else:
            print_run(run)
        if run["status"] != "completed":
            raise SendenseError(f"prune {run['id']} {run['status']}: {run.get('error')}")


__all__ = ["register", "summary"]
