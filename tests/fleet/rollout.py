"""ansible-playbook runs of the fleet, and the rollout's batches read from its log.

The rollout runs with ansible.posix.profile_tasks, whose line at every task
carries the time since the playbook started: a batch of nodes starts at the
first task after its PLAY banner and ends where the next one starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.fleet.podman import FleetError

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "playbooks"
NODE_PLAY = "PLAY [Roll out the nodes in batches]"
ELAPSED = re.compile(r"\(\d+:\d\d:\d\d\.\d+\)\s+(\d+):(\d\d):(\d\d\.\d+)")
HOST = re.compile(r"^\w+: \[([^\]\s]+)")


@dataclass(frozen=True)
class Batch:
    hosts: int
    seconds: float


def ansible_playbook(
    inventory: Path, playbooks: list[str], log: Path, forks: int, *extra: str
) -> float:
    """Run the playbooks (output to log); the wall time. FleetError names the log on failure."""
    binary = Path(sys.executable).with_name("ansible-playbook")
    env = os.environ | {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    argv = [str(binary), "-i", str(inventory), "-f", str(forks), *extra]
    argv += [str(PLAYBOOKS / p) for p in playbooks]
    start = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    wall = time.monotonic() - start
    if done.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise FleetError(
            f"ansible-playbook {' '.join(playbooks)} failed (exit {done.returncode}, log {log}):\n"
            + "\n".join(tail)
        )
    return wall


def _seconds(match: re.Match[str]) -> float:
    h, m, s = match.groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def batches(log_text: str, total: float) -> list[Batch]:
    """The node batches of a rollout log: hosts in each and its seconds."""
    starts: list[float] = []
    hosts: list[set[str]] = []
    in_batch = False
    for line in log_text.splitlines():
        if line.startswith("PLAY ["):
            in_batch = line.startswith(NODE_PLAY)
            if in_batch:
                starts.append(-1.0)
                hosts.append(set())
            continue
        if not in_batch:
            continue
        if starts[-1] < 0 and (m := ELAPSED.search(line)):
            starts[-1] = _seconds(m)
        if m := HOST.match(line):
            hosts[-1].add(m.group(1))
    ends = [*starts[1:], total][: len(starts)]
    return [
        Batch(len(h), round(end - start, 1))
        for h, start, end in zip(hosts, starts, ends, strict=True)
        if start >= 0
    ]
