"""Files that are whole or absent after a crash: written aside, then renamed into place."""

from __future__ import annotations

import os
from pathlib import Path


def replace_durably(tmp: str | Path, target: str | Path) -> None:
    """rename() the fsynced `tmp` over `target`, then fsync the folder so that the rename
    itself survives a power loss: a reader finds the old file or the new one, never half."""
    os.replace(tmp, target)
    dir_fd = os.open(Path(target).parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
