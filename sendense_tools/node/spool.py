"""What the node must not forget across a crash: its job records and undelivered final reports.

Two directories under `[node] spool_dir`, one JSON file per job id in each:

- `jobs/<id>.json`: the job as GET /api/v1/backup/{id} shows it, written when the
  job starts (status running) and again when it ends. A record still `running`
  at start-up is a job the node crashed in.
- `reports/<id>.json`: a final report the hub has not taken yet; written before
  the first attempt to send it and removed once the hub took or refused it.

Every write is atomic (a 0600 temporary file, fsync, rename, fsync of the
directory): a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from sendense_tools.durable import replace_durably
from sendense_tools.node.errors import SpoolError

log = logging.getLogger("sendense.node")


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """`data` as JSON in `path`, all or nothing (SpoolError names the file and why)."""
    text = json.dumps(data).encode()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        replace_durably(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SpoolError(f"cannot write {path}: {exc.strerror or exc}") from None


def _read_all(directory: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            # Cannot come from write_atomic; a file someone else put there is left alone.
            log.error("spool: ignoring unreadable %s: %s", path, exc)
            continue
        if isinstance(data, dict):
            out[path.stem] = data
    return out


class Spool:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.reports_dir = self.root / "reports"

    def open(self) -> Spool:
        """Create the directories (0700) if needed; SpoolError when that is impossible."""
        try:
            for d in (self.root, self.jobs_dir, self.reports_dir):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"spool directory {self.root}: {exc.strerror or exc}") from None
        return self

    def save_job(self, record: dict[str, Any]) -> None:
        write_atomic(self.jobs_dir / f"{record['job_id']}.json", record)

    def forget_job(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.jobs_dir / f"{job_id}.json").unlink()

    def jobs(self) -> dict[str, dict[str, Any]]:
        return _read_all(self.jobs_dir)

    def save_report(self, job_id: str, record: dict[str, Any], report: dict[str, Any]) -> None:
        """The final report, with the job record it goes with (a crash may come in between)."""
        write_atomic(self.reports_dir / f"{job_id}.json", {"job": record, "report": report})

    def drop_report(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.reports_dir / f"{job_id}.json").unlink()

    def reports(self) -> dict[str, dict[str, Any]]:
        """job id -> {"job": record, "report": report} for every undelivered final report."""
        return _read_all(self.reports_dir)
