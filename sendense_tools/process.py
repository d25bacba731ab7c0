"""Child processes: how one ended, in words for a log line, and one that dies with us."""

from __future__ import annotations

import shutil
import signal


def dying_with_parent(argv: list[str], sig: str = "TERM") -> list[str]:
    """`argv` under setpriv --pdeathsig: if the daemon dies without cleaning up, the
    kernel sends `sig` to the child (where setpriv exists; else `argv` as it is)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", sig, *argv] if setpriv else argv


def describe_exit(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"killed by {name} (status {rc})"
    return f"exit status {rc}"
