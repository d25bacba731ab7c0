"""One soak job: request a backup, land its fault at the planned moment, wait
(bounded) for the job to end on the hub and the node, judge it, and put things
right after a loss, as an operator would, so that one loss does not cascade."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import urllib.error
from dataclasses import dataclass, field

from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.snapshots import list_snapshots, remove_snapshot
from tests.fixtures.faults import FAULTS, Injection, Injector, kill, nbdkits, qemu_nbds
from tests.fixtures.stack import Stack
from tests.fixtures.vcsim import VcsimLab
from tests.integration.soak.observe import ACTIVE, Observer, differences

STALL_TIMEOUT = float(os.environ.get("SENDENSE_SOAK_STALL_TIMEOUT", 20))
# A job must end within this: the stall timeout, the node's own retries, and a margin.
JOB_TIMEOUT = float(os.environ.get("SENDENSE_SOAK_JOB_TIMEOUT", 3 * STALL_TIMEOUT + 30))
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


class Soak:
    def __init__(
        self, stack: Stack, lab: VcsimLab, expected: dict[str, str], rng: random.Random
    ) -> None:
        self.stack = stack
        self.lab = lab
        self.expected = expected
        self.see = Observer(stack, lab)
        self.injector = Injector(stack, lab, rng)

    def run(self, n: int, planned: Planned, scale: float) -> Outcome:
        """Job `n`, its fault `planned.fraction * scale` seconds after the request."""
        out = Outcome(n, planned)
        before = self.see.all_ids()
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
            new = (self.see.ids(limit=10) or set()) - before
            return next(iter(new), None)

        def ended() -> bool:
            if poster.is_alive():
                return False
            found = backup_id()
            if found is None:
                return "error" in answer  # refused before any record existed
            rec = self.see.record(found)
            return rec is not None and rec["status"] not in ACTIVE

        started = time.monotonic()
        poster = threading.Thread(target=request, name=f"soak-post-{n}", daemon=True)
        poster.start()
        if planned.fault != "none":
            time.sleep(planned.fraction * scale)
            out.phase = self.see.phase(backup_id())
            out.injection = self.injector.inject(planned.fault, backup_id, ended)
        deadline = started + JOB_TIMEOUT
        while not ended() and time.monotonic() < deadline:
            time.sleep(0.1)
        poster.join(max(0.0, deadline - time.monotonic()))
        out.seconds = time.monotonic() - started
        out.backup_id = backup_id()
        self._judge(out, answer)
        if out.losses:
            self._clean_up(out)
        return out

    def _judge(self, out: Outcome, answer: dict) -> None:
        if out.backup_id is None:
            out.status = "refused"
            out.error = answer.get("error")
            if not out.error:
                out.losses.append("no record and no error from POST /api/v1/backups")
        else:
            rec = self.see.record(out.backup_id) or {}
            out.status, out.error = rec.get("status", "?"), rec.get("error")
            if out.status in ACTIVE or out.status == "?":
                out.losses.append(f"never ended: still {out.status} after {JOB_TIMEOUT:.0f} s")
            else:
                self._judge_ended(out)
            if out.status == "completed":
                out.losses += differences(rec, self.expected)
        if out.planned.fault == "none" and out.status != "completed":
            out.losses.append("the control job (no fault) did not complete")
        out.losses += self.see.leftovers()

    def _judge_ended(self, out: Outcome) -> None:
        assert out.backup_id is not None
        if out.status != "completed" and not out.error:
            out.losses.append(f"{out.status} without a reason")
        # The node removes its snapshot after the hub may have closed the record.
        if self.see.node_running(out.backup_id, NODE_GRACE):
            out.losses.append(
                f"node job still running {NODE_GRACE:.0f} s after the hub's record says "
                f"{out.status}"
            )
        node = self.see.node_job(out.backup_id) or {}
        if (
            out.planned.fault in HUB_SIDE
            and node.get("status") == "completed"
            and out.status != "completed"
        ):
            out.losses.append(f"the node's copy completed but the hub says {out.status}")

    def _clean_up(self, out: Outcome) -> None:
        if out.backup_id and (self.see.record(out.backup_id) or {}).get("status") in ACTIVE:
            with contextlib.suppress(OSError):
                self.stack.api("POST", f"/api/v1/backups/{out.backup_id}/cancel", direct=True)
        if out.backup_id and self.see.node_running(out.backup_id, 0):
            self.see.node_job(out.backup_id, "POST", "/cancel")
            if self.see.node_running(out.backup_id, NODE_GRACE):
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
        for path in self.see.stray_files():
            path.unlink(missing_ok=True)
        for path in self.see.key_files():
            if path.is_file():
                path.unlink()
