"""The fault soak: a bounded sequence of backups through the whole stack (real hub,
node, tunnel, sshd, simulator, qemu-nbd, nbdkit), each hit by one fault at a moment
drawn from a seed: kill -9 of a qemu-nbd, of the node's nbdkit or of the node (started
again, as systemd would), a hub restart (SIGTERM or SIGKILL), sshd down for 10 s, or a
cancel. The first job has no fault; the quickest completed job so far sets the time
scale of the next fault's delay.

After each job ends (both the hub's record and the node's job), nothing it started
may outlive it and a completed one must be bit-identical to the source disks. Every
broken rule is a loss; the soak goes on and fails at the end with every loss listed.

    SENDENSE_SOAK_SEED=1234 pytest -m soak      # replay a run
    SENDENSE_SOAK_JOBS, SENDENSE_SOAK_STALL_TIMEOUT, SENDENSE_SOAK_JOB_TIMEOUT,
    SENDENSE_SOAK_BUDGET (seconds for the whole soak)
"""

from __future__ import annotations

import collections
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sendense_tools.hub.config import HubConfig
from sendense_tools.lab.seed import seed_vm
from tests.fixtures.faults import FAULTS
from tests.fixtures.stack import Stack, running_stack
from tests.fixtures.vcsim import VcsimLab
from tests.integration.soak.runner import STALL_TIMEOUT, Outcome, Soak, plan

pytestmark = pytest.mark.soak

DEFAULT_SEED = 20261201
SEED = int(os.environ.get("SENDENSE_SOAK_SEED", DEFAULT_SEED))
JOBS = int(os.environ.get("SENDENSE_SOAK_JOBS", 12))
# The whole soak's time: no new job starts after it (the jobs left out are a loss).
BUDGET = float(os.environ.get("SENDENSE_SOAK_BUDGET", 300))
# Small disks: a job copies in about a second, so faults land in every phase.
SIZES = [32 << 20, 16 << 20, 24 << 20]


def hub_sections() -> dict[str, dict]:
    # Hubs that predate `[jobs]` refuse unknown keys: only set it where it exists.
    if "jobs" in HubConfig.model_fields:
        return {"jobs": {"stall_timeout": STALL_TIMEOUT}}
    return {}


@pytest.fixture(scope="module")
def small_vm(vcsim: VcsimLab) -> dict[str, str]:
    session = vcsim.session()
    try:
        disks = seed_vm(session, vcsim.vm, SIZES, seed="soak")
    finally:
        session.close()
    return {d.disk_id: d.sha256 for d in disks}


@pytest.fixture
def soak_stack(vcsim: VcsimLab, small_vm: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    with running_stack(vcsim, tmp_path, hub_sections=hub_sections()) as stack:
        yield stack


def summary(outcomes: list[Outcome], seconds: float) -> str:
    statuses = collections.Counter(o.status for o in outcomes)
    faults = collections.Counter(o.planned.fault for o in outcomes)
    missed = sum(1 for o in outcomes if o.injection is not None and not o.injection.hit)
    losses = sum(len(o.losses) for o in outcomes)
    return (
        f"soak seed={SEED} jobs={len(outcomes)} "
        + " ".join(f"{s}={statuses[s]}" for s in ("completed", "failed", "cancelled", "refused"))
        + " faults: "
        + " ".join(f"{k}={faults[k]}" for k in FAULTS)
        + f" missed={missed} losses={losses} (in {sum(1 for o in outcomes if o.losses)} jobs)"
        + f" seconds={seconds:.0f}"
    )


def test_fault_soak(
    vcsim: VcsimLab,
    small_vm: dict[str, str],
    soak_stack: Stack,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(SEED)
    soak = Soak(soak_stack, vcsim, small_vm, rng)
    plans = plan(rng, JOBS)
    with capsys.disabled():
        print(f"\nsoak seed={SEED} jobs={len(plans)} stall_timeout={STALL_TIMEOUT:g} "
              f"(replay: SENDENSE_SOAK_SEED={SEED})", flush=True)  # fmt: skip
    started = time.monotonic()
    outcomes: list[Outcome] = []
    scale = 1.0
    for n, planned in enumerate(plans):
        if time.monotonic() - started > BUDGET:
            skipped = [p.fault for p in plans[n:]]
            outcomes[-1].losses.append(f"over the {BUDGET:.0f} s budget: not run {skipped}")
            break
        outcome = soak.run(n, planned, scale)
        # The quickest completed job so far: the first one runs cold, and an outage
        # stretches a job that still completes.
        if outcome.status == "completed":
            scale = outcome.seconds if n == 0 else min(scale, outcome.seconds)
        outcomes.append(outcome)
        with capsys.disabled():
            print(outcome.line(), flush=True)

    line = summary(outcomes, time.monotonic() - started)
    with capsys.disabled():
        print(line, flush=True)
    losses = [f"job {o.n} ({o.planned.fault}): {loss}" for o in outcomes for loss in o.losses]
    assert not losses, "\n".join([line, *losses, soak_stack.logs()])
