"""The fleet's containers: the lab image booting systemd, on the fleet's own network.

Every container carries the fleet's label, so `down` removes whatever a run
left, whatever its size; names (sds-*) and the network (sds-fleet) never clash
with Molecule's (sdm-*, sdf-*) or the demo's (hub, node, vcenter).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.fleet.inventory import LABEL, NETWORK

ROOT = Path(__file__).resolve().parents[2]

IMAGE = "localhost/sendense-lab:latest"
BOOT_SECONDS = 180  # 20+ containers booting at once on 2 cores
BOOTED = ("running", "degraded")


class FleetError(RuntimeError):
    """A step of the fleet run failed; the message says which and why."""


def podman(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # The lab's runtime and ulimits (files/lab/containers.conf), as `make` exports them.
    conf = os.environ.get("CONTAINERS_CONF") or str(ROOT / "files" / "lab" / "containers.conf")
    env = os.environ | {"CONTAINERS_CONF": conf}
    done = subprocess.run(["podman", *argv], capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise FleetError(f"podman {' '.join(argv[:2])} failed: {done.stderr.strip()[-300:]}")
    return done


def up(names: list[str], image: str = IMAGE) -> None:
    """Create the network and the containers, and wait until systemd booted in each."""
    if podman("image", "exists", image, check=False).returncode != 0:
        raise FleetError(f"no lab image {image}: run `make setup` first")
    if podman("network", "exists", NETWORK, check=False).returncode != 0:
        podman("network", "create", "--label", LABEL, NETWORK)
    for name in names:
        if podman("container", "exists", name, check=False).returncode == 0:
            raise FleetError(f"container {name} exists already: run `make fleet-scale-down`")
        podman(
            "run", "-d", "--name", name, "--hostname", name, "--network", NETWORK,
            "--label", LABEL, "--systemd=always", image, "/sbin/init",
        )  # fmt: skip
    wait_booted(names)


def wait_booted(names: list[str], seconds: float = BOOT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    waiting = list(names)
    while waiting:
        state = {
            n: podman("exec", n, "systemctl", "is-system-running", check=False).stdout.strip()
            for n in waiting
        }
        waiting = [n for n in waiting if state[n] not in BOOTED]
        if waiting and time.monotonic() > deadline:
            first = waiting[0]
            raise FleetError(f"systemd in {first} is '{state[first]}' after {seconds:.0f} s")
        if waiting:
            time.sleep(1)


def _labelled() -> list[str]:
    found = podman("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}")
    return found.stdout.split()


def down(tries: int = 3) -> list[str]:
    """Remove every container and the network of the fleet; returns the removed names."""
    removed = _labelled()
    # A container still being exec'd into (an interrupted run) can outlive one `rm -f`.
    for _ in range(tries):
        left = _labelled()
        if not left:
            break
        podman("rm", "-f", "-t", "5", *left, check=False)
    if left := _labelled():
        raise FleetError(f"could not remove {', '.join(left)}: podman rm -f {' '.join(left)}")
    podman("network", "rm", NETWORK, check=False)
    return removed


def exec_(name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return podman("exec", name, *argv, check=check)


def cgroup_dir(name: str, controller: str) -> Path:
    """The container's cgroup (v1) directory of one controller."""
    path = podman("inspect", "-f", "{{.State.CgroupPath}}", name).stdout.strip()
    found = Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    if not found.is_dir():
        raise FleetError(f"no {controller} cgroup for {name} at {found}")
    return found
