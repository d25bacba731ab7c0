"""The seed's headline, run: 101 disks backed up at the same time, from four
simulator VMs (26+25+25+25 disks, two SCSI controllers each), through ONE real
tunnel (`sendense tunnel run` against a real sshd on loopback) into ONE hub, so
every one of the node's 101 slots carries a copy at once.

Prints the peak RSS of the node, hub and tunnel processes (each with its children:
the nbdkit sources, the qemu-nbd exports) and the wall time; throughput figures
live in bench/scale.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.scale import (
    ScaleLab,
    assert_bit_identical,
    assert_nothing_left,
    back_up_at_once,
    scale_vcsim,
    split_disks,
)
from tests.fixtures.stack import running_stack
from tests.fixtures.vcsim import SnapshotWatch

DISKS = 101
MIB = 1 << 20


@pytest.fixture(scope="module")
def scale_lab() -> Iterator[ScaleLab]:
    # Small disks (CI's time), each with its own content: a disk landing in another's
    # restore point shows in its checksum.
    counts = split_disks(DISKS)
    with scale_vcsim(counts, 6 * MIB, seed="scale101") as lab:
        yield lab


def test_101_disks_at_once_through_one_tunnel_and_one_hub(
    scale_lab: ScaleLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sum(len(vm.disks) for vm in scale_lab.vms) == DISKS
    with (
        running_stack(scale_lab.lab, tmp_path, nbd_count=DISKS) as stack,
        contextlib.ExitStack() as watches,
    ):
        seen = {
            vm.name: watches.enter_context(SnapshotWatch(scale_lab.of(vm), interval=0.2))
            for vm in scale_lab.vms
        }
        fan = back_up_at_once(stack, scale_lab.vms, timeout=600)
        watches.close()
        with capsys.disabled():  # the figures, also when a check below fails
            print(f"\n{DISKS} disks in {len(scale_lab.vms)} VMs at once: {fan.wall:.1f} s")
            for name, peak in fan.rss.peaks.items():
                print(peak.line(name))

        assert_bit_identical(scale_lab, fan, stack, tmp_path)
        # ONE snapshot per VM, the one its record names, held all its disks (the
        # checksums above are of what the node read from that snapshot).
        for vm in scale_lab.vms:
            assert seen[vm.name].seen == [fan.records[vm.name]["snapshot"]], vm.name
        assert_nothing_left(scale_lab, stack)
        # 202 NBD channels opened and closed at once never cost the tunnel its one
        # SSH connection (a copy would survive a reconnect, by retrying: not the point).
        tunnel_log = stack.proc("tunnel").log.read_text()
        assert tunnel_log.count("event=connected") == 1, tunnel_log
