import io

from rich.console import Console

from sendense_tools.lab.summary import DemoFacts, render

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
