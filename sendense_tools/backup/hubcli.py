"""`sendense backup start|list|show|verify`: the hub's backup API from the command line."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from sendense_tools.api.cli import (
    FINAL,
    call,
    chain_of,
    checksum_text,
    echo_json,
    follow,
    hub_option,
    json_option,
    list_path,
    raise_if_unsuccessful,
    records_of,
    token_option,
)
from sendense_tools.api.client import ApiClient
from sendense_tools.backup.progress import DiskBars
from sendense_tools.config import read_secret
from sendense_tools.errors import SendenseError

MODES = ("auto", "full", "incremental")


def _checksum(disk: dict[str, Any]) -> str:
    return checksum_text(disk.get("checksum"), disk.get("sha256"))


def _disk_table(record: dict[str, Any]) -> Table:
    table = Table(title=f"backup {record['id']}: {record['vm']} on {record['node']}")
    for col in ("disk", "capacity", "copied", "port"):
        table.add_column(col)
    table.add_column("checksum", overflow="fold")
    table.add_column("qcow2", overflow="fold")
    for d in record.get("disk_results") or []:
        table.add_row(
            d["disk_id"],
            f"{d.get('capacity') or 0:,}",
            f"{d.get('bytes_copied') or 0:,}",
            str(d.get("nbd_port") or ""),
            _checksum(d),
            d.get("qcow2_path") or "",
        )
    return table


def _chain_table(chain: list[dict[str, Any]]) -> Table:
    table = Table(title="restore point chain (full first)")
    for col in ("backup", "mode", "status", "created", "bytes moved"):
        table.add_column(col)
    table.add_column("checksum", overflow="fold")
    for r in chain:
        disks = r.get("disk_results") or []
        table.add_row(
            r["id"],
            r.get("mode") or "-",
            r["status"],
            str(r.get("created_at") or ""),
            f"{sum(d.get('bytes_copied') or 0 for d in disks):,}",
            "\n".join(f"{d['disk_id']} {_checksum(d) or '-'}" for d in disks),
        )
    return table


def _print_record(record: dict[str, Any], chain: list[dict[str, Any]] | None = None) -> None:
    console = Console()
    console.print(_disk_table(record))
    mode = record.get("mode") or "-"
    if record.get("mode_reason"):
        mode += f" ({record['mode_reason']})"
    console.print(
        f"status {record['status']}  mode {mode}  snapshot {record.get('snapshot') or '-'}"
    )
    if record.get("error"):
        console.print(f"error: {record['error']}")
    if chain:
        console.print(_chain_table(chain))


async def _chain(hub_url: str, token_file: str, backup_id: str) -> list[dict[str, Any]]:
    async with ApiClient(hub_url, read_secret(token_file, "API token")) as api:
        return await chain_of(api, backup_id)


async def _wait(hub_url: str, token_file: str, backup_id: str, bars: DiskBars) -> dict:
    def seen(record: dict[str, Any]) -> None:
        for d in record.get("disk_results") or []:
            total = d.get("bytes_total") or d.get("capacity") or 0
            bars.update(d["disk_id"], d.get("bytes_copied") or 0, total)

    return await follow(hub_url, token_file, f"/api/v1/backups/{backup_id}", seen)


def _link(record: dict[str, Any]) -> dict[str, Any]:
    """One point of a chain, as `show --json` lists it."""
    disks = record.get("disk_results") or []
    return {
        "id": record["id"],
        "mode": record.get("mode"),
        "status": record["status"],
        "created_at": record.get("created_at"),
        "finished_at": record.get("finished_at"),
        "bytes_copied": sum(d.get("bytes_copied") or 0 for d in disks),
        "checksums": {d["disk_id"]: d.get("checksum") for d in disks},
    }


def register(group: click.Group) -> None:
    @group.command("start")
    @hub_option
    @click.option("--vm", required=True, help="VM name or moref")
    @click.option("--node", default=None, help="node id (default: the token's node)")
    @click.option(
        "--mode",
        type=click.Choice(MODES),
        default="auto",
        show_default=True,
        help="auto: an incremental when the node has the evidence, else a full;"
        " incremental: fail rather than copy everything",
    )
    @token_option
    @click.option("--wait", is_flag=True, help="show progress until the backup ends")
    @json_option
    def start(
        hub_url: str,
        vm: str,
        node: str | None,
        mode: str,
        token_file: str,
        wait: bool,
        as_json: bool,
    ) -> None:
        """Ask the hub for a backup of VM; with --wait, follow it to the end."""
        body = {"vm": vm, "mode": mode} | ({"node": node} if node else {})
        record = asyncio.run(call(hub_url, token_file, "POST", "/api/v1/backups", body))
        if wait and record["status"] not in FINAL:
            with DiskBars(enabled=not as_json) as bars:
                record = asyncio.run(_wait(hub_url, token_file, record["id"], bars))
        if as_json:
            echo_json(record)
        elif wait:
            _print_record(record)
        else:
            click.echo(f"backup {record['id']} {record['status']}")
        raise_if_unsuccessful("backup", record)

    @group.command("list")
    @hub_option
    @token_option
    @click.option("--vm", default=None, help="only this VM")
    @click.option("--status", default=None, help="only this status")
    @json_option
    def list_cmd(
        hub_url: str, token_file: str, vm: str | None, status: str | None, as_json: bool
    ) -> None:
        """Backup records, newest first."""
        path = list_path("/api/v1/backups", (("vm", vm), ("status", status)))
        records = records_of(asyncio.run(call(hub_url, token_file, "GET", path)), "backups")
        if as_json:
            echo_json(records)
            return
        table = Table()
        for col in ("id", "vm", "node", "status", "created", "finished", "disks"):
            table.add_column(col)
        for r in records:
            table.add_row(
                r["id"],
                r["vm"],
                r["node"],
                r["status"],
                str(r.get("created_at") or ""),
                str(r.get("finished_at") or ""),
                str(len(r.get("disk_results") or [])),
            )
        Console().print(table)

    @group.command("show")
    @click.argument("backup_id")
    @hub_option
    @token_option
    @json_option
    def show(backup_id: str, hub_url: str, token_file: str, as_json: bool) -> None:
        """One backup record with its disks, and the chain of points it belongs to."""
        chain = asyncio.run(_chain(hub_url, token_file, backup_id))
        record = chain[-1]
        if as_json:
            echo_json(record | {"chain": [_link(r) for r in chain]})
        else:
            _print_record(record, chain)

    @group.command("verify")
    @click.argument("backup_id")
    @hub_option
    @token_option
    @json_option
    def verify(backup_id: str, hub_url: str, token_file: str, as_json: bool) -> None:
        """Have the hub recompute the point's checksums from its whole chain and compare."""
        path = f"/api/v1/backups/{backup_id}/verify"
        result = asyncio.run(call(hub_url, token_file, "POST", path, {}))
        if as_json:
            echo_json(result)
        else:
            table = Table(title=f"verify {backup_id}")
            for col in ("disk", "match", "recorded", "recomputed"):
                table.add_column(col, overflow="fold")
            for d in result.get("disks") or []:
                recorded = {
                    "checksum": d.get("recorded_checksum"),
                    "sha256": d.get("recorded_sha256"),
                }
                found = {"checksum": d.get("checksum"), "sha256": d.get("sha256")}
                table.add_row(
                    d["disk_id"],
                    "yes" if d.get("match") else "NO",
                    _checksum(recorded),
                    _checksum(found) or d.get("error") or "",
                )
            Console().print(table)
        if not result.get("ok"):
            raise SendenseError(f"backup {backup_id} does not match its recorded checksum")


__all__ = ["register"]
