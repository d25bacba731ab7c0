"""How long a stop of the node takes at most, and so the unit's TimeoutStopSec.

A stop cancels the running backups. Each one first lets the vSphere call in
flight end (a snapshot being created is then removed, never left behind), then
waits up to `[backup] snapshot_remove_timeout` for its snapshot's removal, then
spools its final report and tries to send it. The node gives the backups that
long in total: one still ending after that is left, and since its record still
says `running`, the next start removes its snapshot and reports it failed.
systemd must not kill the node before it gave up by itself.
"""

from __future__ import annotations

import logging
import math
import os

from sendense_tools.node.config import BackupSection, NodeConfig

# For the vSphere call a cancel lands in (other than a removal: seconds).
CALL_MARGIN = 30.0
# For the final reports to reach the hub; what does not stays spooled.
REPORT_GRACE = 10.0
# For closing the API and exiting.
EXIT_MARGIN = 20.0


def backups_wait(backup: BackupSection) -> float:
    """How long a stop waits for its cancelled backups."""
    return backup.snapshot_remove_timeout + CALL_MARGIN


BACKUPS_WAIT_DEFAULT = backups_wait(BackupSection())


def timeout_stop_sec(cfg: NodeConfig) -> int:
    """The least TimeoutStopSec of sendense-node.service for `cfg` (660 by default)."""
    return math.ceil(backups_wait(cfg.backup) + REPORT_GRACE + EXIT_MARGIN)


def exit_now() -> None:
    """End the process at once, without waiting for the vSphere calls still in threads.

    Python would otherwise wait for them at exit (asyncio.run joins its executor),
    past the bound and into systemd's SIGKILL. Exit status 1: the stop was not clean.
    """
    logging.shutdown()
    os._exit(1)
