"""`sendense backup start|list|show|verify`: the hub's backup API from the command line."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import click
from rich.console import Console
from rich.table import Table

from sendense_tools.api.client import ApiClient
from sendense_tools.backup.progress import DiskBars
from sendense_tools.config import read_secret
from sendense_tools.errors import SendenseError

DEFAULT_HUB_URL = "http://127.0.0.1:8082"
DEFAULT_TOKEN_FILE = "/etc/sendense/api-token"
FINAL = ("completed", "failed", "cancelled")
POLL_SECONDS = 1.0

hub_option = click.option(
    "--hub",
    "hub_url",
    envvar="SENDENSE_HUB_URL",
    default=DEFAULT_HUB_URL,
    show_default=True,
    help="hub API URL (env SENDENSE_HUB_URL)",
)
token_option = click.option(
    "--token-file",
    envvar="SENDENSE_TOKEN_FILE",
    default=DEFAULT_TOKEN_FILE,
    show_default=True,
    help="API token file, mode 0600 (env SENDENSE_TOKEN_FILE)",
)
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


async def _call(hub_url: str, token_file: str, method: str, path: str, body: Any = None) -> Any:
    token = read_secret(token_file, "API token")
    async with ApiClient(hub_url, token) as api:
        return await api.request(method, path, body)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _records(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        data = data.get("backups", [])
    return list(data or [])


def _disk_table(record: dict[str, Any]) -> Table:
    table = Table(title=f"backup {record['id']}: {record['vm']} on {record['node']}")
    for col in ("disk", "capacity", "copied", "port"):
        table.add_column(col)
    table.add_column("SHA-256", overflow="fold")
    table.add_column("qcow2", overflow="fold")
    for d in record.get("disk_results") or []:
        table.add_row(
            d["disk_id"],
            f"{d.get('capacity') or 0:,}",
            f"{d.get('bytes_copied') or 0:,}",
            str(d.get("nbd_port") or ""),
            d.get("sha256") or "",
            d.get("qcow2_path") or "",
        )
    return table


def _print_record(record: dict[str, Any]) -> None:
    console = Console()
    console.print(_disk_table(record))
    console.print(f"status {record['status']}  snapshot {record.get('snapshot') or '-'}")
    if record.get("error"):
        console.print(f"error: {record['error']}")


async def _wait(hub_url: str, token_file: str, backup_id: str, bars: DiskBars) -> dict:
    token = read_secret(token_file, "API token")
    async with ApiClient(hub_url, token) as api:
        while True:
            record = await api.get(f"/api/v1/backups/{backup_id}")
            for d in record.get("disk_results") or []:
                total = d.get("bytes_total") or d.get("capacity") or 0
                bars.update(d["disk_id"], d.get("bytes_copied") or 0, total)
            if record["status"] in FINAL:
                return record
            await asyncio.sleep(POLL_SECONDS)


def register(group: click.Group) -> None:
    @group.command("start")
    @hub_option
    @click.option("--vm", required=True, help="VM name or moref")
    @click.option("--node", default=None, help="node id (default: the token's node)")
    @token_option
    @click.option("--wait", is_flag=True, help="show progress until the backup ends")
    @json_option
    def start(
        hub_url: str, vm: str, node: str | None, token_file: str, wait: bool, as_json: bool
    ) -> None:
        """Ask the hub for a backup of VM; with --wait, follow it to the end."""
        body = {"vm": vm} | ({"node": node} if node else {})
        record = asyncio.run(_call(hub_url, token_file, "POST", "/api/v1/backups", body))
        if wait and record["status"] not in FINAL:
            with DiskBars(enabled=not as_json) as bars:
                record = asyncio.run(_wait(hub_url, token_file, record["id"], bars))
        if as_json:
            _echo_json(record)
        elif wait:
            _print_record(record)
        else:
            click.echo(f"backup {record['id']} {record['status']}")
        if record["status"] in ("failed", "cancelled"):
            raise SendenseError(
                f"backup {record['id']} {record['status']}: {record.get('error') or 'no reason'}"
            )

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
        query = urlencode({k: v for k, v in (("vm", vm), ("status", status)) if v})
        path = "/api/v1/backups" + (f"?{query}" if query else "")
        records = _records(asyncio.run(_call(hub_url, token_file, "GET", path)))
        if as_json:
            _echo_json(records)
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
        """One backup record with its disks."""
        record = asyncio.run(_call(hub_url, token_file, "GET", f"/api/v1/backups/{backup_id}"))
        if as_json:
            _echo_json(record)
        else:
            _print_record(record)

    @group.command("verify")
    @click.argument("backup_id")
    @hub_option
    @token_option
    @json_option
    def verify(backup_id: str, hub_url: str, token_file: str, as_json: bool) -> None:
        """Have the hub re-read the backup's qcow2 files and compare their SHA-256."""
        path = f"/api/v1/backups/{backup_id}/verify"
        result = asyncio.run(_call(hub_url, token_file, "POST", path, {}))
        if as_json:
            _echo_json(result)
        else:
            table = Table(title=f"verify {backup_id}")
            for col in ("disk", "match", "recorded SHA-256", "qcow2 SHA-256"):
                table.add_column(col)
            for d in result.get("disks") or []:
                table.add_row(
                    d["disk_id"],
                    "yes" if d.get("match") else "NO",
                    d.get("recorded_sha256") or "",
                    d.get("sha256") or d.get("error") or "",
                )
            Console().print(table)
        if not result.get("ok"):
            raise SendenseError(f"backup {backup_id} does not match its recorded SHA-256")


__all__ = ["DEFAULT_HUB_URL", "DEFAULT_TOKEN_FILE", "register"]
