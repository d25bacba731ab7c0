"""`sendense restore start|list|show|cancel`: the hub's restore API from the command line.

Exit codes: 0 the restore completed (or the request was taken), 1 it failed or was
cancelled (or the hub could not be reached), 2 bad usage or a request the hub refused
(its one-line message is shown).
"""

from __future__ import annotations

from typing import Any, get_args

import click
from rich.table import Table

from sendense_tools.api.cli import (
    FINAL,
    call,
    checksum_text,
    echo_json,
    follow,
    hub_option,
    json_option,
    list_path,
    raise_if_unsuccessful,
    records_of,
    run_refusing,
    token_option,
    wide_console,
)
from sendense_tools.backup.progress import DiskBars
from sendense_tools.hub.schemas import Status

STATUSES: tuple[str, ...] = get_args(Status)


def _verified(disk: dict[str, Any]) -> str:
    verified = disk.get("verified")
    return "-" if verified is None else ("yes" if verified else "NO")


def disk_table(record: dict[str, Any]) -> Table:
    """Per disk: what was written, and the point's checksum against the read-back one."""
    table = Table(title=f"restore {record['id']}: {record.get('vm')} -> {record.get('name')}")
    for col in ("disk", "capacity", "written", "verified"):
        table.add_column(col, justify="left" if col in ("disk", "verified") else "right")
    # A hash is checked by copying it: never shorten it with an ellipsis.
    table.add_column("expected (restore point)", overflow="fold")
    table.add_column("read back (new VM)", overflow="fold")
    for d in record.get("disks") or []:
        table.add_row(
            d["disk_id"],
            f"{d.get('capacity') or 0:,}",
            f"{d.get('bytes_written') or 0:,}",
            _verified(d),
            checksum_text(d.get("expected_checksum")) or "-",
            checksum_text(d.get("checksum")) or "-",
        )
    return table


def summary_lines(record: dict[str, Any]) -> list[str]:
    """The record's facts beside the disks, one per line."""
    where = "  ".join(
        f"{key} {record.get(key) or '-'}" for key in ("datastore", "folder", "resource_pool")
    )
    lines = [
        f"status {record['status']}  phase {record.get('phase') or '-'}"
        f"  backup {record.get('backup_id')}  node {record.get('node')}",
        f"new VM {record.get('name')} ({record.get('moref') or 'not created'})  {where}"
        f"  power on {'yes' if record.get('power_on') else 'no'}",
    ]
    if record.get("error"):
        lines.append(f"error: {record['error']}")
    lines += [f"warning: {w}" for w in record.get("warnings") or []]
    return lines


def print_record(record: dict[str, Any]) -> None:
    console = wide_console()
    console.print(disk_table(record))
    for line in summary_lines(record):
        console.print(line, highlight=False, markup=False)


def list_table(records: list[dict[str, Any]]) -> Table:
    table = Table()
    for col in ("id", "backup", "vm", "new VM", "node", "status", "created", "finished"):
        table.add_column(col)
    table.add_column("verified", justify="right")
    for r in records:
        disks = r.get("disks") or []
        table.add_row(
            r["id"],
            r.get("backup_id") or "",
            r.get("vm") or "",
            r.get("name") or "",
            r.get("node") or "",
            r["status"],
            str(r.get("created_at") or ""),
            str(r.get("finished_at") or ""),
            f"{sum(1 for d in disks if d.get('verified'))}/{len(disks)}",
        )
    return table


@click.group()
def restore() -> None:
    """Restores: a restore point back into vCenter as a new VM (start, list, show, cancel)."""


@restore.command("start")
@click.option("--backup", "backup_id", required=True, help="the restore point (a backup id)")
@click.option("--to", "name", required=True, help="the new VM's name (it must not exist)")
@click.option("--datastore", default=None, help="default: the source VM's")
@click.option("--folder", default=None, help="VM folder path; default: the source VM's")
@click.option("--resource-pool", default=None, help="default: the source VM's")
@click.option("--power-on", is_flag=True, help="power the new VM on once its disks are verified")
@click.option("--wait", is_flag=True, help="show progress until the restore ends")
@hub_option
@token_option
@json_option
def start(
    backup_id: str,
    name: str,
    datastore: str | None,
    folder: str | None,
    resource_pool: str | None,
    power_on: bool,
    wait: bool,
    hub_url: str,
    token_file: str,
    as_json: bool,
) -> None:
    """Restore backup ID as a new VM NAME; with --wait, follow it until its disks are checked."""
    body = {
        "name": name,
        "datastore": datastore,
        "folder": folder,
        "resource_pool": resource_pool,
        "power_on": power_on,
    }
    path = f"/api/v1/backups/{backup_id}/restore"
    record = run_refusing(call(hub_url, token_file, "POST", path, body))
    if wait and record["status"] not in FINAL:
        with DiskBars(enabled=not as_json, lines=True) as bars:

            def seen(r: dict[str, Any]) -> None:
                bars.phase(r.get("phase"))
                for d in r.get("disks") or []:
                    total = d.get("bytes_total") or d.get("capacity") or 0
                    bars.update(d["disk_id"], d.get("bytes_written") or 0, total)

            record = run_refusing(
                follow(hub_url, token_file, f"/api/v1/restores/{record['id']}", seen)
            )
    if as_json:
        echo_json(record)
    elif wait:
        print_record(record)
    else:
        click.echo(f"restore {record['id']} {record['status']}")
    raise_if_unsuccessful("restore", record)


@restore.command("list")
@click.option("--node", default=None, help="only this node's")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="only this status")
@click.option("--backup", "backup_id", default=None, help="only restores of this point")
@hub_option
@token_option
@json_option
def list_cmd(
    node: str | None,
    status: str | None,
    backup_id: str | None,
    hub_url: str,
    token_file: str,
    as_json: bool,
) -> None:
    """Restore records, newest first."""
    filters = (("node", node), ("status", status), ("backup", backup_id))
    path = list_path("/api/v1/restores", filters)
    records = records_of(run_refusing(call(hub_url, token_file, "GET", path)), "restores")
    if as_json:
        echo_json(records)
    else:
        wide_console().print(list_table(records))


@restore.command("show")
@click.argument("restore_id")
@hub_option
@token_option
@json_option
def show(restore_id: str, hub_url: str, token_file: str, as_json: bool) -> None:
    """One restore: per disk whether it is verified, the point's and the read-back checksum."""
    record = run_refusing(call(hub_url, token_file, "GET", f"/api/v1/restores/{restore_id}"))
    if as_json:
        echo_json(record)
    else:
        print_record(record)


@restore.command("cancel")
@click.argument("restore_id")
@hub_option
@token_option
@json_option
def cancel(restore_id: str, hub_url: str, token_file: str, as_json: bool) -> None:
    """Cancel a running restore: the node removes the VM and files it created."""
    path = f"/api/v1/restores/{restore_id}/cancel"
    record = run_refusing(call(hub_url, token_file, "POST", path, {}))
    if as_json:
        echo_json(record)
    else:
        click.echo(f"restore {restore_id} {record.get('status', 'cancelling')}")
