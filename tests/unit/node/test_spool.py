"""The spool: atomic 0600 JSON files that a crash leaves whole or not at all."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from sendense_tools.node.errors import SpoolError
from sendense_tools.node.spool import Spool, write_atomic


def test_records_and_reports_round_trip_in_0600_files(tmp_path):
    spool = Spool(tmp_path / "spool").open()
    spool.save_job({"job_id": "j1", "status": "running"})
    spool.save_report("j1", {"job_id": "j1", "status": "completed"}, {"status": "completed"})
    assert spool.jobs() == {"j1": {"job_id": "j1", "status": "running"}}
    assert spool.reports() == {
        "j1": {"job": {"job_id": "j1", "status": "completed"}, "report": {"status": "completed"}}
    }
    files = sorted(p for p in (tmp_path / "spool").rglob("*") if p.is_file())
    assert [p.relative_to(tmp_path / "spool").as_posix() for p in files] == [
        "jobs/j1.json",
        "reports/j1.json",
    ]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    spool.drop_report("j1")
    spool.forget_job("j1")
    assert spool.jobs() == {} and spool.reports() == {}


def test_a_rewrite_replaces_the_whole_file(tmp_path):
    path = tmp_path / "r.json"
    write_atomic(path, {"a": "x" * 10000})
    write_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from sendense_tools.node.spool import write_atomic
from sendense_tools.node.errors import SpoolError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_atomic(Path(sys.argv[1]), {"new": "x" * 100000})
except SpoolError as exc:
    print(exc)
"""


def test_a_write_that_runs_out_of_space_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    write_atomic(path, {"old": True})
    # A file size limit fails the write half way through, as a full disk does.
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith(f"cannot write {path}: File too large"), out
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_an_unusable_spool_directory_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SpoolError, match=r"spool directory .*file/spool"):
        Spool(tmp_path / "file" / "spool").open()


def test_files_someone_else_left_are_skipped(tmp_path):
    spool = Spool(tmp_path).open()
    (spool.jobs_dir / "junk.json").write_text("{not json")
    spool.save_job({"job_id": "ok"})
    assert list(spool.jobs()) == ["ok"]
