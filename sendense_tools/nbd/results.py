"""What a disk copy reports: its progress, its result, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass

from sendense_tools.errors import SendenseError


class CopyError(SendenseError):
    """The copy failed; the message is one line naming the disk."""


class CopyCancelled(SendenseError):
    """The copy was cancelled on request."""


@dataclass
class CopyProgress:
    disk_id: str
    bytes_done: int  # guest bytes confirmed on the target (data written + zero ranges)
    bytes_total: int  # the capacity, or the areas' bytes


@dataclass
class CopyResult:
    disk_id: str
    capacity: int
    bytes_copied: int  # data bytes written
    bytes_zero: int  # bytes skipped or written as zeroes
    sha256: str | None  # of the whole guest content (a full)
    seconds: float
    retries: int
    checksum: dict | None = None  # blkhash of the whole disk (a full, or areas [(0, size)])
    changes: dict | None = None  # of the areas copied (an areas copy)
