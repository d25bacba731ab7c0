"""The table `make demo` ends with: what the backup wrote, checked against the seed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class DemoFacts:
    record: dict  # the hub's backup record
    seed: dict  # {"vm", "disks": [{"disk_id", "sha256", ...}]} from the lab seeding
    snapshots_left: list[str]
    exposure: dict[str, float]  # unit -> systemd-analyze security score


def _seconds(record: dict) -> float:
    start = datetime.fromisoformat(record["created_at"])
    end = datetime.fromisoformat(record["finished_at"])
    return max((end - start).total_seconds(), 1e-6)


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
    )
    console.print("[bold green]demo: all checks passed[/]" if ok else "[bold red]demo: FAILED[/]")
    return ok
