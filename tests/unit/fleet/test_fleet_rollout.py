"""The rollout's node batches, read from a profile_tasks log."""

from __future__ import annotations

from tests.fleet.rollout import batches

STAMP = "Tuesday 01 December 2026  20:{m:02d}:{s:02d} +0000 (0:00:01.000)       {e} *****"

LOG = "\n".join(
    [
        "PLAY [Build the wheelhouse on the controller] ****",
        "TASK [Check for a source checkout] ****",
        STAMP.format(m=0, s=1, e="0:00:00.500"),
        "ok: [localhost]",
        "PLAY [Roll out the hubs] ****",
        "TASK [sendense_runtime : Copy the wheelhouse] ****",
        STAMP.format(m=0, s=2, e="0:00:02.000"),
        "changed: [sds-hub]",
        "PLAY [Roll out the nodes in batches] ****",
        "TASK [sendense_runtime : Copy the wheelhouse] ****",
        STAMP.format(m=1, s=0, e="0:01:00.000"),
        "changed: [sds-node-01]",
        "ok: [sds-node-01 -> sds-hub]",
        "PLAY [Roll out the nodes in batches] ****",
        "TASK [sendense_runtime : Copy the wheelhouse] ****",
        STAMP.format(m=2, s=30, e="0:02:30.000"),
        "changed: [sds-node-02]",
        "changed: [sds-node-03]",
        "fatal: [sds-node-04]: FAILED! => {}",
        "PLAY RECAP ****",
        "sds-node-01                : ok=40   changed=20",
    ]
)


def test_each_batch_has_its_hosts_and_runs_until_the_next_starts():
    got = batches(LOG, total=300.0)
    assert [(b.hosts, b.seconds) for b in got] == [(1, 90.0), (3, 150.0)]


def test_a_log_without_node_batches_has_none():
    assert batches("PLAY [Roll out the hubs] ****\nok: [sds-hub]\n", total=10.0) == []
