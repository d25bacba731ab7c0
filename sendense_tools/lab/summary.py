"""The tables `make demo` ends with: what the full wrote, checked against the seed, the
incremental after the lab's change, checked against the changed VM, and the full
restored as a new VM (lab/restored.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rich.console import Console
from rich.table import Table

from sendense_tools.lab.restored import Restored, render_restored


@dataclass(frozen=True)
class DemoFacts:
    record: dict  # the hub's backup record
    seed: dict  # {"vm", "disks": [{"disk_id", "sha256", ...}]} from the lab seeding
    snapshots_left: list[str]
    exposure: dict[str, float]  # unit -> systemd-analyze security score
    incremental: Incremental | None = None
    restored: Restored | None = None


@dataclass(frozen=True)
class Incremental:
    """The last point: an incremental made after `lab change`."""

    record: dict  # `sendense backup show --json` of it: the record and its "chain"
    changed: dict  # `lab change --json`: {"disks": [{"disk_id", "changed_bytes", "sha256"}]}
    verify: dict  # `sendense backup verify --json` of it (recomputed from the chain)
    contents: dict[str, str]  # disk id -> SHA-256 of the point read through qemu-nbd -r


def _seconds(record: dict) -> float:
    start = datetime.fromisoformat(record["created_at"])
    end = datetime.fromisoformat(record["finished_at"])
    return max((end - start).total_seconds(), 1e-6)


def _incremental_ok(inc: Incremental) -> tuple[bool, bool]:
    """(the point is a completed incremental on a chain from a full, its checksums match)."""
    record, chain = inc.record, inc.record.get("chain") or []
    chained = (
        record["status"] == "completed"
        and record.get("mode") == "incremental"
        and len(chain) >= 2
        and chain[0].get("mode") == "full"
        and chain[-1]["id"] == record["id"]
        and all(link["status"] == "completed" for link in chain)
    )
    wanted = {d["disk_id"]: d["sha256"] for d in inc.changed["disks"]}
    match = bool(inc.verify.get("ok")) and bool(wanted) and inc.contents == wanted
    return chained, match


def render_points(inc: Incremental, console: Console) -> bool:
    """The incremental's chain, full first; True when the incremental is right."""
    chained, match = _incremental_ok(inc)
    chain = inc.record.get("chain") or [inc.record]
    table = Table(title=f"restore points of {inc.record['vm']}: the incremental's chain")
    for col in ("backup", "mode", "bytes moved", "seconds", "checksum match"):
        table.add_column(col, justify="right" if col in ("bytes moved", "seconds") else "left")
    for link in chain:
        last = link["id"] == inc.record["id"]
        table.add_row(
            link["id"],
            link.get("mode") or "-",
            f"{link.get('bytes_copied') or 0:,}",
            f"{_seconds(link):.1f}",
            ("yes" if match else "NO") if last else "(verified when made)",
        )
    console.print(table)
    changed = sum(d["changed_bytes"] for d in inc.changed["disks"])
    console.print(
        f"changed on the VM: {changed:,} bytes; the incremental moved "
        f"{chain[-1].get('bytes_copied') or 0:,} in "
        f"{_seconds(chain[-1]) / _seconds(chain[0]):.2f} of the full's time"
    )
    if not chained:
        console.print(
            f"[red]the last point is {inc.record.get('mode')} ({inc.record['status']}):"
            f" {inc.record.get('mode_reason') or inc.record.get('error') or ''}[/]"
        )
    return chained and match


def render(facts: DemoFacts, console: Console) -> bool:
    """Print the summary; True when every check passed."""
    record = facts.record
    seeded = {d["disk_id"]: d["sha256"] for d in facts.seed["disks"]}
    seconds = _seconds(record)
    snapshot_removed = record.get("snapshot") not in facts.snapshots_left and not any(
        s.startswith("sendense-") for s in facts.snapshots_left
    )
    table = Table(title=f"backup {record['id']} of {record['vm']}: {record['status']}")
    for col in ("disk", "bytes", "seconds", "MB/s", "SHA-256 match", "snapshot removed"):
        table.add_column(col, justify="right" if col in ("bytes", "seconds", "MB/s") else "left")
    all_match = True
    total = 0
    for d in record["disk_results"]:
        size = d.get("capacity") or d.get("bytes_total") or 0
        total += size
        match = d.get("sha256") == seeded.get(d["disk_id"]) == d.get("sha256_qcow2")
        all_match &= match
        table.add_row(
            d["disk_id"],
            f"{size:,}",
            f"{seconds:.1f}",
            f"{size / seconds / 1e6:.1f}",
            "yes" if match else "NO",
            "yes" if snapshot_removed else "NO",
        )
    table.add_row(
        "all",
        f"{total:,}",
        f"{seconds:.1f}",
        f"{total / seconds / 1e6:.1f}",
        "yes" if all_match else "NO",
        "yes" if snapshot_removed else "NO",
        style="bold",
    )
    console.print(table)
    points_ok = render_points(facts.incremental, console) if facts.incremental is not None else True
    restored_ok = True
    if facts.restored is not None:
        newest = facts.incremental.record["id"] if facts.incremental is not None else None
        restored_ok = render_restored(facts.restored, console, newest)
    hardened = all(score <= 1.5 for score in facts.exposure.values())
    scores = "  ".join(f"{unit} {score:.1f}" for unit, score in sorted(facts.exposure.items()))
    console.print(f"systemd-analyze security exposure (1.5 or lower): {scores}")
    ok = (
        record["status"] == "completed"
        and all_match
        and set(seeded) == {d["disk_id"] for d in record["disk_results"]}
        and snapshot_removed
        and hardened
        and len(facts.exposure) == 3
        and points_ok
        and restored_ok
    )
    console.print("[bold green]demo: all checks passed[/]" if ok else "[bold red]demo: FAILED[/]")
    return ok
