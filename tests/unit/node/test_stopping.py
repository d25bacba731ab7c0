"""The node's stop is bounded by [backup] snapshot_remove_timeout, and the unit outwaits it."""

from __future__ import annotations

from sendense_tools.backup.executor import BackupOptions
from sendense_tools.config import parse_config
from sendense_tools.node.config import NodeConfig
from sendense_tools.node.service import backup_options
from sendense_tools.node.stopping import (
    BACKUPS_WAIT_DEFAULT,
    REPORT_GRACE,
    backups_wait,
    timeout_stop_sec,
)
from sendense_tools.vsphere.snapshots import REMOVE_TIMEOUT


def test_the_default_removal_wait_is_one_value_everywhere():
    cfg = parse_config({}, NodeConfig)
    assert cfg.backup.snapshot_remove_timeout == REMOVE_TIMEOUT == 600
    assert BackupOptions().snapshot_remove_timeout == REMOVE_TIMEOUT
    assert backups_wait(cfg.backup) == BACKUPS_WAIT_DEFAULT


def test_the_configured_removal_wait_reaches_the_backups():
    cfg = parse_config({"backup": {"snapshot_remove_timeout": 1800}}, NodeConfig)
    assert backup_options(cfg).snapshot_remove_timeout == 1800


def test_systemd_waits_longer_than_the_node_does():
    for timeout in (600, 60, 1800):
        cfg = parse_config({"backup": {"snapshot_remove_timeout": timeout}}, NodeConfig)
        # The stop waits for the removal (and the call it interrupted), then the reports.
        assert backups_wait(cfg.backup) > timeout
        assert timeout_stop_sec(cfg) > backups_wait(cfg.backup) + REPORT_GRACE
    # The value the role's sendense-node.service must carry by default.
    assert timeout_stop_sec(parse_config({}, NodeConfig)) == 660
