"""Where a job's files live: `<repository>/<vm>/<backup id>/disk<N>.qcow2`."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from sendense_tools.hub.vminfo import safe_name


class Repository:
    def __init__(self, root: str | Path) -> None:
        # Absolute: an overlay records its backing file's path as given.
        self.root = Path(root).absolute()

    def job_dir(self, vm: str, job_id: str) -> Path:
        return self.root / safe_name(vm) / job_id

    def disk_path(self, vm: str, job_id: str, index: int) -> Path:
        return self.job_dir(vm, job_id) / f"disk{index}.qcow2"

    @staticmethod
    def export_name(vm: str, job_id: str, index: int) -> str:
        return f"{safe_name(vm)}-{job_id[:8]}-disk{index}"

    def remove_job(self, vm: str, job_id: str) -> None:
        """A failed or cancelled job's images go: only restore points stay."""
        folder = self.job_dir(vm, job_id)
        shutil.rmtree(folder, ignore_errors=True)
        # The VM's folder goes with its last job; one still holding points stays.
        with contextlib.suppress(OSError):
            folder.parent.rmdir()
