"""The demo's last table: the first (full) restore point back as a new VM, each disk's
checksum as the point recorded it against the one the node read back from the new VM,
and the new VM's disk files against the point's qcow2 read through `qemu-nbd -r`."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Restored:
    record: dict  # `sendense restore show --json`
    point: dict  # the restored point's backup record (`sendense backup show --json`)
    newest: str  # the id of the VM's newest point once the restore had ended
    point_contents: dict[str, str]  # disk id -> SHA-256 of the point through qemu-nbd -r
    vm_disks: dict  # `lab disks --json` of the new VM: {"disks": [{"disk_id", "sha256", ...}]}


def _text(checksum: dict | None) -> str:
    return f"{checksum['algorithm']}:{checksum['checksum']}" if checksum else "-"


def render_restored(facts: Restored, console: Console, incremental_id: str | None) -> bool:
    """Print the restore's table; True when the new VM's disks are the point's."""
    record, point = facts.record, facts.point
    recorded = {d["disk_id"]: d.get("checksum") for d in point.get("disk_results") or []}
    files = {d["disk_id"]: d["sha256"] for d in facts.vm_disks.get("disks") or []}
    table = Table(title=f"restore {record['id']}: point {point['id']} -> new VM {record['name']}")
    for col in ("disk", "point's checksum", "read back from the new VM"):
        table.add_column(col, overflow="fold")
    table.add_column("verified")
    table.add_column("files = qemu-nbd -r of the point")
    disks = record.get("disks") or []
    all_ok = bool(disks) and {d["disk_id"] for d in disks} == set(recorded)
    for d in disks:
        disk_id = d["disk_id"]
        checksum_ok = (
            d.get("verified") is True
            and recorded.get(disk_id) is not None
            and d.get("checksum") == recorded[disk_id] == d.get("expected_checksum")
        )
        same_bits = files.get(disk_id) is not None and files[disk_id] == facts.point_contents.get(
            disk_id
        )
        all_ok &= checksum_ok and same_bits
        table.add_row(
            disk_id,
            _text(recorded.get(disk_id)),
            _text(d.get("checksum")),
            "yes" if checksum_ok else "NO",
            "yes" if same_bits else "NO",
        )
    console.print(table)
    console.print(
        f"status {record['status']}; new VM {record['name']} ({record.get('moref') or '-'})"
        f" on {record.get('datastore') or '-'}; the newest point is {facts.newest}",
        highlight=False,
    )
    for warning in record.get("warnings") or []:
        console.print(f"warning: {warning}", highlight=False, markup=False)
    if record.get("error"):
        console.print(f"[red]error: {record['error']}[/]")
    first_point = record.get("backup_id") == point["id"] and point.get("mode") in (None, "full")
    # The restore reads a point; it must not have become or made the newest one.
    newest_kept = facts.newest != point["id"] and (
        incremental_id is None or facts.newest == incremental_id
    )
    if not newest_kept:
        console.print(f"[red]the newest point is {facts.newest}, not the incremental[/]")
    return record["status"] == "completed" and all_ok and first_point and newest_kept
