"""Per-VM figures from the store's rows and real files, the repository's from statvfs,
and a policy's allowance from systemd's own reading of its schedule."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sendense_tools.hub.vmstats import (
    RepositoryFigures,
    max_age,
    repository_figures,
    schedule_interval,
    unix_time,
    vm_figures,
)
from sendense_tools.policy.calendar import interval
from sendense_tools.policy.model import Policy

MiB = 1 << 20


def sparse_file(path: Path, chunks: dict[int, int]) -> Path:
    """A 64 MiB sparse file with data only at the given offsets (offset -> length)."""
    with path.open("wb") as f:
        f.truncate(64 * MiB)
        for offset, length in chunks.items():
            f.seek(offset)
            f.write(os.urandom(length))
        f.flush()
        os.fsync(f.fileno())
    return path


def row(node, vm, point, finished, policy, path):
    return {"node": node, "vm": vm, "id": point, "finished_at": finished, "policy": policy,
            "qcow2_path": str(path) if path else None}  # fmt: skip


def test_a_vms_figures_come_from_its_points_and_their_files(tmp_path):
    full0 = sparse_file(tmp_path / "full-disk0", {0: 3 * MiB})
    full1 = sparse_file(tmp_path / "full-disk1", {32 * MiB: MiB})
    inc0 = sparse_file(tmp_path / "inc-disk0", {MiB: 64 * 1024})
    nightly = Policy(vms=["web01"], schedule="*-*-* 02:00:00", randomized_delay=1800)
    rows = [
        row("n1", "web01", "full", "2026-11-29T02:10:00+00:00", "nightly", full0),
        row("n1", "web01", "full", "2026-11-29T02:10:00+00:00", "nightly", full1),
        # Backed up by hand after the policy's points: the VM stays the policy's.
        row("n1", "web01", "inc", "2026-11-30T09:00:05+00:00", None, inc0),
        row("n1", "web01", "inc", "2026-11-30T09:00:05+00:00", None, tmp_path / "gone"),
        row("n2", "db01", "x", "2026-11-30T03:00:00+00:00", "weekly", None),
    ]
    web, db = vm_figures(rows, {"n1": {"nightly": nightly}})
    assert (web.node, web.vm, web.policy, web.points) == ("n1", "web01", "nightly", 2)
    assert web.last_finished_at == datetime(2026, 11, 30, 9, 0, 5, tzinfo=UTC).timestamp()
    held = sum(os.stat(p).st_blocks * 512 for p in (full0, full1, inc0))
    assert held >= 4 * MiB and web.stored_bytes == held
    assert web.max_age == interval("*-*-* 02:00:00") + 1800 + 3600 == 91800
    # db01's policy is not one this hub has for n2: no allowance to alert on.
    assert (db.policy, db.points, db.stored_bytes, db.max_age) == ("weekly", 1, 0, None)


def test_a_vm_only_ever_backed_up_by_hand_has_no_policy():
    (figures,) = vm_figures([row("n1", "web01", "a", "2026-11-30T09:00:00+00:00", None, None)], {})
    assert (figures.policy, figures.max_age) == ("", None)


def test_the_allowance_follows_the_schedule_and_the_delay():
    hourly = Policy(vms=["a"], schedule="hourly", randomized_delay=0)
    twice = Policy(vms=["a"], schedule="*-*-* 06,18:00:00", randomized_delay=600)
    assert max_age(hourly) == 3600 + 3600
    assert max_age(twice) == 12 * 3600 + 600 + 3600
    # A schedule that fires once has no interval: nothing to be late against.
    assert max_age(Policy(vms=["a"], schedule="2099-01-01 00:00:00")) is None
    assert schedule_interval("not a calendar") is None


def test_timestamps_are_read_as_utc():
    assert unix_time("2026-12-01T10:00:00+00:00") == unix_time("2026-12-01T10:00:00")
    assert unix_time("2026-12-01T11:00:00+01:00") == unix_time("2026-12-01T10:00:00+00:00")
    assert unix_time(None) is None


def test_the_repository_figures_are_statvfs_as_df_reads_it(tmp_path):
    # Others write to this filesystem meanwhile: compare with a statvfs that did not
    # change across the call (bounded retries).
    for _ in range(20):
        before = os.statvfs(tmp_path)
        figures = repository_figures(str(tmp_path))
        if os.statvfs(tmp_path) == before:
            break
    else:
        pytest.fail("the filesystem never held still for 20 tries")
    assert figures == RepositoryFigures(
        size=before.f_blocks * before.f_frsize,
        used=(before.f_blocks - before.f_bfree) * before.f_frsize,
        free=before.f_bavail * before.f_frsize,
    )
    assert repository_figures(str(tmp_path / "missing")) is None
