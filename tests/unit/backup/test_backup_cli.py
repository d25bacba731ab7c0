"""`sendense backup run --changed-since/--mode`: parsed and refused before vCenter is touched."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from sendense_tools.backup.cli import backup, parse_changed_since
from sendense_tools.backup.mode import PreviousDisk

ID0 = "52 de c0 d9 3a 70 13 5b-21 5e 8b 46 1a 2b c9 0e/7"


def test_changed_since_gives_each_disk_its_change_id_spaces_and_all():
    got = parse_changed_since(f"disk0={ID0}, disk1=52 aa-bb/3")
    assert got == {"disk0": PreviousDisk(ID0), "disk1": PreviousDisk("52 aa-bb/3")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("disk0", "'disk0' is not DISK=CHANGE_ID"),
        ("disk0=", "'disk0=' is not DISK=CHANGE_ID"),
        ("=x/1", "'=x/1' is not DISK=CHANGE_ID"),
        ("disk0=a/1,disk0=b/2", "disk0 is named twice"),
    ],
)
def test_malformed_changed_since_is_bad_usage(text, message):
    with pytest.raises(click.BadParameter, match=message):
        parse_changed_since(text)


def test_mode_incremental_without_changed_since_exits_2_before_reading_secrets(tmp_path):
    result = CliRunner().invoke(
        backup,
        ["run", "--vcenter", "https://127.0.0.1:1", "--vm", "vm", "--nbd-targets",
         "disk0:nbd://127.0.0.1:10100/x", "--mode", "incremental",
         "--password-file", str(tmp_path / "missing")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--mode incremental needs --changed-since" in result.output


def test_a_memory_budget_below_the_minimum_is_bad_usage_before_reading_secrets(tmp_path):
    result = CliRunner().invoke(
        backup,
        ["run", "--vcenter", "https://127.0.0.1:1", "--vm", "vm", "--nbd-targets",
         "disk0:nbd://127.0.0.1:10100/x", "--memory-budget", "1048576",
         "--password-file", str(tmp_path / "missing")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--memory-budget" in result.output and "134217728" in result.output
