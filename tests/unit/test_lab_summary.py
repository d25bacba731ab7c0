import io

import pytest
from rich.console import Console

from sendense_tools.lab.summary import DemoFacts, Incremental, render

SEED = {"vm": "vm0", "disks": [{"disk_id": "disk0", "sha256": "a" * 64}]}


def record(sha: str = "a" * 64, status: str = "completed") -> dict:
    return {
        "id": "b1",
        "vm": "vm0",
        "status": status,
        "snapshot": "sendense-b1",
        "created_at": "2026-11-25T10:00:00+00:00",
        "finished_at": "2026-11-25T10:00:04+00:00",
        "disk_results": [
            {"disk_id": "disk0", "capacity": 8_000_000, "sha256": sha, "sha256_qcow2": sha}
        ],
    }


GOOD_SCORES = {"sendense-hub": 1.3, "sendense-node": 1.2, "sendense-tunnel": 1.2}


def run(facts: DemoFacts) -> tuple[bool, str]:
    out = io.StringIO()
    ok = render(facts, Console(file=out, width=120))
    return ok, out.getvalue()


def test_all_checks_pass_and_rate_is_shown():
    ok, text = run(DemoFacts(record(), SEED, [], GOOD_SCORES))
    assert ok
    assert "2.0" in text  # 8 MB in 4 s
    assert "all checks passed" in text


def test_sha_mismatch_fails():
    ok, text = run(DemoFacts(record(sha="b" * 64), SEED, [], GOOD_SCORES))
    assert not ok and "NO" in text


def test_leftover_snapshot_fails():
    ok, _ = run(DemoFacts(record(), SEED, ["sendense-b1"], GOOD_SCORES))
    assert not ok


def test_weak_hardening_fails():
    ok, _ = run(DemoFacts(record(), SEED, [], {**GOOD_SCORES, "sendense-hub": 4.2}))
    assert not ok


def test_failed_backup_fails():
    ok, _ = run(DemoFacts(record(status="failed"), SEED, [], GOOD_SCORES))
    assert not ok


def link(r: dict) -> dict:
    moved = sum(d.get("bytes_copied") or 0 for d in r["disk_results"])
    keys = ("id", "mode", "status", "created_at", "finished_at")
    return {k: r.get(k) for k in keys} | {"bytes_copied": moved}


def incremental(**changes) -> Incremental:
    full = record() | {"mode": "full", "parent": None}
    full["disk_results"][0]["bytes_copied"] = 8_000_000
    inc = {
        "id": "b2",
        "vm": "vm0",
        "status": "completed",
        "mode": "incremental",
        "mode_reason": None,
        "parent": "b1",
        "snapshot": "sendense-b2",
        "created_at": "2026-11-25T10:01:00+00:00",
        "finished_at": "2026-11-25T10:01:01+00:00",
        "disk_results": [{"disk_id": "disk0", "capacity": 8_000_000, "bytes_copied": 262_144}],
    } | changes.pop("record", {})
    inc["chain"] = changes.pop("chain", [link(full), link(inc)])
    facts = {
        "record": inc,
        "changed": {"disks": [{"disk_id": "disk0", "changed_bytes": 262_144, "sha256": "c" * 64}]},
        "verify": {"ok": True},
        "contents": {"disk0": "c" * 64},
    } | changes
    return Incremental(**facts)


def test_a_full_then_an_incremental_pass_and_show_bytes_seconds_and_match():
    ok, text = run(DemoFacts(record(), SEED, [], GOOD_SCORES, incremental()))
    assert ok, text
    assert "8,000,000" in text and "262,144" in text  # bytes each point moved
    assert "0.25 of the full's time" in text  # 1 s against 4 s
    assert "NO" not in text
    assert "all checks passed" in text


@pytest.mark.parametrize(
    "bad",
    [
        {"contents": {"disk0": "d" * 64}},  # the point does not read as the changed VM
        {"verify": {"ok": False}},  # the chain does not recompute to the recorded checksum
        {"record": {"mode": "full", "parent": None, "mode_reason": "CBT was just enabled"}},
        {"record": {"status": "failed", "error": "disk0: changed areas differ"}},
        {"chain": []},
    ],
)
def test_an_incremental_that_is_wrong_fails_the_demo(bad):
    ok, text = run(DemoFacts(record(), SEED, [], GOOD_SCORES, incremental(**bad)))
    assert not ok
    assert "demo: FAILED" in text
