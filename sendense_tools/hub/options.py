"""qemu-nbd's target options, and the fallbacks this machine's repository needs."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    shared: int = 10
    cache: str = "none"
    aio: str = "io_uring"
    detect_zeroes: str = "unmap"
    ready_timeout: float = 30.0
    # A restore's export: the point is served, never written (discard and zero
    # detection are write options, so they go too).
    read_only: bool = False

    def qemu_args(self) -> list[str]:
        args = [f"--shared={self.shared}", "--persistent", "-f", "qcow2"]
        args += [f"--cache={self.cache}", f"--aio={self.aio}"]
        if self.read_only:
            return ["-r", *args]
        return [*args, "--discard=unmap", f"--detect-zeroes={self.detect_zeroes}"]


def direct_io_works(directory: str | Path) -> bool:
    """Whether O_DIRECT files can be opened in `directory` (not on tmpfs, for one)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".odirect-") as tmp:
        try:
            fd = os.open(tmp.name, os.O_RDWR | os.O_DIRECT)
        except OSError:
            return False
        os.close(fd)
    return True


def aio_works(aio: str, cache: str, directory: str | Path) -> bool:
    """Whether qemu can open an image in `directory` with this aio/cache pair."""
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".aio-probe-") as tmp:
        tmp.truncate(1024 * 1024)
        tmp.flush()
        probe = subprocess.run(
            ["qemu-io", "-f", "raw", "-t", cache, "-i", aio, "-c", "read 0 4096", tmp.name],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    return probe.returncode == 0


def effective_options(opts: ExportOptions, repository: str | Path) -> ExportOptions:
    """Fall back to what this machine supports: O_DIRECT (not on tmpfs), then aio mode.

    aio=native takes a 1024-event kernel AIO context per qemu-nbd, so 101 exports
    need fs.aio-max-nr >= 103424 (the default 65536 stops at 64); io_uring has no
    such limit and measured as fast here, so it is the default.
    """
    cache, aio = opts.cache, opts.aio
    if cache in ("none", "directsync") and not direct_io_works(repository):
        log.warning("O_DIRECT is not supported under %s: using cache=writeback", repository)
        cache = "writeback"
    if aio == "native" and cache not in ("none", "directsync"):
        aio = "threads"
    if aio != "threads" and not aio_works(aio, cache, repository):
        log.warning("qemu cannot use aio=%s under %s: using aio=threads", aio, repository)
        aio = "threads"
    return ExportOptions(opts.shared, cache, aio, opts.detect_zeroes, opts.ready_timeout)
