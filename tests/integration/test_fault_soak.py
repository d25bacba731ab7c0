"""The fault soak: a bounded sequence of backups through the whole stack (real hub,
node, tunnel, sshd, simulator, qemu-nbd, nbdkit), each hit by one fault at a moment
drawn from a seed: kill -9 of a qemu-nbd, of the node's nbdkit or of the node (started
again, as systemd would), a hub restart (SIGTERM or SIGKILL), sshd down for 10 s, or a
cancel. The first job has no fault and sets the time scale the others' delays use.

After each job ends (both the hub's record and the node's job), nothing it started
may outlive it and a completed one must be bit-identical to the source disks. Every
broken rule is a loss; the soak goes on (cleaning up like an operator would, so one
loss does not cascade) and fails at the end with every loss listed.

    SENDENSE_SOAK_SEED=1234 pytest -m soak      # replay a run
    SENDENSE_SOAK_JOBS, SENDENSE_SOAK_STALL_TIMEOUT, SENDENSE_SOAK_JOB_TIMEOUT,
    SENDENSE_SOAK_BUDGET (seconds for the whole soak)
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sendense_tools.hub.config import HubConfig
from sendense_tools.lab.seed import seed_vm
from sendense_tools.nbd.digest import sha256_of_image
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.snapshots import list_snapshots, remove_snapshot
from tests.fixtures.faults import FAULTS, Injection, Injector, kill, nbdkits, qemu_nbds, wait_gone
from tests.fixtures.sshd import TEST_NODE
from tests.fixtures.stack import Stack, running_stack
from tests.fixtures.vcsim import VcsimLab

pytestmark = pytest.mark.soak

DEFAULT_SEED = 20261201
SEED = int(os.environ.get("SENDENSE_SOAK_SEED", DEFAULT_SEED))
JOBS = int(os.environ.get("SENDENSE_SOAK_JOBS", 12))
STALL_TIMEOUT = float(os.environ.get("SENDENSE_SOAK_STALL_TIMEOUT", 20))
# A job must end within this: the stall timeout, the node's own retries, and a margin.
JOB_TIMEOUT = float(os.environ.get("SENDENSE_SOAK_JOB_TIMEOUT", 3 * STALL_TIMEOUT + 30))
# The whole soak's time: no new job starts after it (the jobs left out are a loss).
BUDGET = float(os.environ.get("SENDENSE_SOAK_BUDGET", 300))
# Small disks: a job copies in about a second, so faults land in every phase.
SIZES = [32 << 20, 16 << 20, 24 << 20]
ACTIVE = ("pending", "running")
# Faults land between 0 and this many control-job durations after the request.
LATEST = 1.0
# Faults that leave the node's copy whole: when the node says it completed, a restore
# point the hub then fails was failed for the hub's own trouble (DESIGN: never).
HUB_SIDE = ("none", "restart_hub", "kill_hub", "sshd_outage")
# Seconds the node gets, once the hub closed a record, to end its side (snapshot removal).
NODE_GRACE = 30.0


@dataclass
class Planned:
    fault: str  # "none" or one of FAULTS
    fraction: float  # of the control job's duration, from the request to the fault


@dataclass
class Outcome:
    n: int
    planned: Planned
    backup_id: str | None = None
    status: str = "?"
    error: str | None = None
    injection: Injection | None = None
    phase: str = ""  # what the hub's record showed as the fault landed
    seconds: float = 0.0
    losses: list[str] = field(default_factory=list)

    def line(self) -> str:
        hit = "" if self.injection is None else f" [{self.phase}: {self.injection.detail}]"
        return (
            f"job {self.n:2d} {self.planned.fault:<13} at {self.planned.fraction:.2f}: "
            f"{self.status} in {self.seconds:.1f} s{hit}"
            + (f" error={self.error!r}" if self.error else "")
            + "".join(f"\n    LOSS {loss}" for loss in self.losses)
        )


def plan(rng: random.Random, jobs: int) -> list[Planned]:
    """A control first; then every fault once and one more control, then random picks,
    in a shuffled order (all from `rng`, so a seed replays the same sequence)."""
    rest = [*FAULTS, "none"]
    rest += rng.choices([*FAULTS, "none"], k=max(0, jobs - 1 - len(rest)))
    rng.shuffle(rest)
    return [Planned("none", 0.0)] + [
        Planned(kind, rng.uniform(0, LATEST)) for kind in rest[: jobs - 1]
    ]


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


class Soak:
    def __init__(self, stack: Stack, lab: VcsimLab, expected: dict[str, str], seed: int) -> None:
        self.stack = stack
        self.lab = lab
        self.expected = expected
        self.rng = random.Random(seed)
        self.injector = Injector(stack, lab, self.rng)

    # -- the hub and node as seen from outside; None while one is restarting --

    def _get(self, path: str) -> dict | list | None:
        try:
            return self.stack.api("GET", path, direct=True)
        except (OSError, ValueError):
            return None

    def record(self, backup_id: str) -> dict | None:
        found = self._get(f"/api/v1/backups/{backup_id}")
        return found if isinstance(found, dict) else None

    def ids(self) -> set[str]:
        deadline = time.monotonic() + 60
        while (found := self._get(f"/api/v1/backups?vm={self.lab.vm}&limit=10000")) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the hub does not answer\n{self.stack.logs()}")
            time.sleep(0.1)
        return {r["id"] for r in found}

    def node_job(self, backup_id: str, method: str = "GET", action: str = "") -> dict | None:
        req = urllib.request.Request(
            f"{self.stack.node_url}/api/v1/backup/{backup_id}{action}",
            method=method,
            headers={"Authorization": f"Bearer {self.stack.node_token.read_text().strip()}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):  # 404 (a restarted node), refused, reset
            return None

    def phase(self, backup_id: str | None) -> str:
        rec = self.record(backup_id) if backup_id else None
        if rec is None:
            return "starting" if backup_id is None else "hub unreachable"
        if rec["status"] == "pending":
            return "starting"
        if rec["status"] != "running":
            return f"after the end ({rec['status']})"
        disks = rec["disk_results"]
        done = sum(d["bytes_copied"] for d in disks)
        total = sum(d["capacity"] for d in disks) or 1
        return "finalizing" if done >= total else f"copying {100 * done // total}%"

    # -- one job --------------------------------------------------------------

    def run(self, n: int, planned: Planned, scale: float) -> Outcome:
        out = Outcome(n, planned)
        before = self.ids()
        answer: dict = {}

        def request() -> None:
            try:
                answer["record"] = self.stack.api("POST", "/api/v1/backups", {"vm": self.lab.vm})
            except urllib.error.HTTPError as exc:
                answer["error"] = f"HTTP {exc.code}: {exc.read().decode(errors='replace')}"
            except OSError as exc:
                answer["error"] = f"{type(exc).__name__}: {exc}"

        def backup_id() -> str | None:
            if "record" in answer:
                return answer["record"]["id"]
            found = self._get(f"/api/v1/backups?vm={self.lab.vm}&limit=10")
            new = [r["id"] for r in found or [] if r["id"] not in before]
            return new[0] if new else None

        def ended() -> bool:
            if poster.is_alive():
                return False
            found = backup_id()
            if found is None:
                return "error" in answer  # refused before any record existed
            rec = self.record(found)
            return rec is not None and rec["status"] not in ACTIVE

        started = time.monotonic()
        poster = threading.Thread(target=request, name=f"soak-post-{n}", daemon=True)
        poster.start()
        if planned.fault != "none":
            time.sleep(planned.fraction * scale)
            out.phase = self.phase(backup_id())
            out.injection = self.injector.inject(planned.fault, backup_id, ended)
        deadline = started + JOB_TIMEOUT
        while not ended() and time.monotonic() < deadline:
            time.sleep(0.1)
        poster.join(max(0.0, deadline - time.monotonic()))
        out.seconds = time.monotonic() - started
        out.backup_id = backup_id()
        self._judge(out, answer)
        self._clean_up(out)
        return out

    def _judge(self, out: Outcome, answer: dict) -> None:
        if out.backup_id is None:
            out.status = "refused"
            out.error = answer.get("error")
            if not out.error:
                out.losses.append("no record and no error from POST /api/v1/backups")
        else:
            rec = self.record(out.backup_id) or {}
            out.status, out.error = rec.get("status", "?"), rec.get("error")
            if out.status in ACTIVE or out.status == "?":
                out.losses.append(f"never ended: still {out.status} after {JOB_TIMEOUT:.0f} s")
            else:
                if out.status != "completed" and not out.error:
                    out.losses.append(f"{out.status} without a reason")
                self._wait_node_done(out)
                node = self.node_job(out.backup_id) or {}
                if (
                    out.planned.fault in HUB_SIDE
                    and node.get("status") == "completed"
                    and out.status != "completed"
                ):
                    out.losses.append(f"the node's copy completed but the hub says {out.status}")
            if out.status == "completed":
                self._check_identical(out, rec)
        if out.planned.fault == "none" and out.status != "completed":
            out.losses.append("the control job (no fault) did not complete")
        self._check_nothing_left(out)

    def _node_running(self, backup_id: str, within: float) -> bool:
        deadline = time.monotonic() + within
        while (job := self.node_job(backup_id)) and job.get("status") == "running":
            if time.monotonic() > deadline:
                return True
            time.sleep(0.1)
        return False

    def _wait_node_done(self, out: Outcome) -> None:
        """The node removes its snapshot after the hub may have closed the record."""
        assert out.backup_id is not None
        if self._node_running(out.backup_id, NODE_GRACE):
            out.losses.append(
                f"node job still running {NODE_GRACE:.0f} s after the hub's record says "
                f"{out.status}"
            )

    def _check_identical(self, out: Outcome, rec: dict) -> None:
        disks = {d["disk_id"]: d for d in rec.get("disk_results", [])}
        if set(disks) != set(self.expected):
            out.losses.append(f"completed with disks {sorted(disks)}, not {sorted(self.expected)}")
            return
        for disk_id, sha in self.expected.items():
            path = Path(disks[disk_id]["qcow2_path"])
            try:
                got = sha256_of_image(path)  # read back from the file, not from any report
            except Exception as exc:
                out.losses.append(f"completed but {disk_id} unreadable: {exc}")
                continue
            if got != sha:
                out.losses.append(f"completed but {disk_id} differs from the source")

    def _check_nothing_left(self, out: Outcome) -> None:
        # Processes on their way out (a SIGTERMed qemu-nbd flushing) get a moment.
        if left := wait_gone(lambda: qemu_nbds(self.stack), 10):
            out.losses.append(f"orphan qemu-nbd: {'; '.join(map(str, left))}")
        if left := wait_gone(lambda: nbdkits(self.lab), 10):
            out.losses.append(f"orphan nbdkit: {'; '.join(map(str, left))}")
        metrics = self._get("/api/v1/nbd/metrics")
        pool = metrics["nodes"][TEST_NODE] if isinstance(metrics, dict) else None
        if pool is None:
            out.losses.append("the hub did not answer GET /api/v1/nbd/metrics")
        elif (
            pool["available"] != pool["total"] or pool["allocated"] or metrics["qemu_nbd_processes"]
        ):
            out.losses.append(
                f"slots not all free: {pool}, {metrics['qemu_nbd_processes']} qemu-nbd"
            )
        if allocations := self._get("/api/v1/nbd/ports"):
            out.losses.append(f"allocations left: {allocations}")
        if sockets := sorted((self.stack.sshd.socket_dir / TEST_NODE).iterdir()):
            out.losses.append(f"stale export sockets: {[s.name for s in sockets]}")
        if stray := self._stray_files():
            out.losses.append(f"files of no completed point: {[str(p) for p in stray]}")
        if keys := self._key_files():
            out.losses.append(f"key files left: {[str(p) for p in keys]}")
        if snaps := self._snapshots():
            out.losses.append(f"snapshots left on the VM: {[s.name for s in snaps]}")

    def _completed(self) -> set[str]:
        found = self._get("/api/v1/backups?status=completed&limit=10000") or []
        return {r["id"] for r in found}

    def _stray_files(self) -> list[Path]:
        # <repository>/<vm>/<backup_id>/...: anything else is no restore point's.
        completed = self._completed()
        repo = self.stack.repository
        files = [p for p in repo.rglob("*") if not p.is_dir()] if repo.exists() else []
        return [
            p
            for p in files
            if len(parts := p.relative_to(repo).parts) < 3 or parts[1] not in completed
        ]

    def _key_files(self) -> list[Path]:
        keys = self.stack.key_dir
        return sorted(keys.rglob("*")) if keys.exists() else []

    def _snapshots(self) -> list:
        session = self.lab.session()
        try:
            return list_snapshots(session, find_vm(session, self.lab.vm))
        finally:
            session.close()

    # -- after a loss: put things right as an operator would, so it does not cascade --

    def _clean_up(self, out: Outcome) -> None:
        if not out.losses:
            return
        if out.backup_id and (self.record(out.backup_id) or {}).get("status") in ACTIVE:
            with contextlib.suppress(OSError):
                self.stack.api("POST", f"/api/v1/backups/{out.backup_id}/cancel", direct=True)
        if out.backup_id and self._node_running(out.backup_id, 0):
            self.node_job(out.backup_id, "POST", "/cancel")
            if self._node_running(out.backup_id, NODE_GRACE):
                self.stack.restart("node", signal.SIGKILL)
        kill(qemu_nbds(self.stack))
        kill(nbdkits(self.lab))
        # A restart reconciles the hub's slots and sockets with what really runs.
        self.stack.restart("hub", signal.SIGTERM)
        session = self.lab.session()
        try:
            for snap in list_snapshots(session, find_vm(session, self.lab.vm)):
                remove_snapshot(session, snap)
        finally:
            session.close()
        for path in self._stray_files():
            path.unlink(missing_ok=True)
        for path in self._key_files():
            if path.is_file():
                path.unlink()


@pytest.fixture
def soak_stack(vcsim: VcsimLab, small_vm: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    with running_stack(vcsim, tmp_path, hub_sections=hub_sections()) as stack:
        yield stack


def test_fault_soak(
    vcsim: VcsimLab,
    small_vm: dict[str, str],
    soak_stack: Stack,
    capsys: pytest.CaptureFixture[str],
) -> None:
    soak = Soak(soak_stack, vcsim, small_vm, SEED)
    plans = plan(soak.rng, JOBS)
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
        if n == 0:
            scale = outcome.seconds
        outcomes.append(outcome)
        with capsys.disabled():
            print(outcome.line(), flush=True)

    statuses = collections.Counter(o.status for o in outcomes)
    faults = collections.Counter(o.planned.fault for o in outcomes if o.planned.fault != "none")
    missed = sum(1 for o in outcomes if o.injection is not None and not o.injection.hit)
    losses = [f"job {o.n} ({o.planned.fault}): {loss}" for o in outcomes for loss in o.losses]
    summary = (
        f"soak seed={SEED} jobs={len(outcomes)} "
        + " ".join(f"{s}={statuses[s]}" for s in ("completed", "failed", "cancelled", "refused"))
        + " faults: "
        + " ".join(f"{k}={faults[k]}" for k in FAULTS)
        + f" missed={missed} losses={len(losses)}"
        + f" (in {sum(1 for o in outcomes if o.losses)} jobs)"
        + f" seconds={time.monotonic() - started:.0f}"
    )
    with capsys.disabled():
        print(summary, flush=True)
    assert not losses, "\n".join([summary, *losses, soak_stack.logs()])
