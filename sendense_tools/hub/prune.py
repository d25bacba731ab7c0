"""`POST /api/v1/prune`: one prune at a time inside the hub, planned then carried out.

A real run first finishes any merge a killed hub journaled, then removes points VM
by VM: a point nothing builds on loses its rows, then its folder; a point another
builds on is merged into it (hub/merge.py) under a journal row. Each run is a
`prune_runs` row, dry runs too. The start-up recovery holds the same lock.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from sendense_tools.hub.errors import PruneRunning
from sendense_tools.hub.merge import MergeError, backing_file, merge_disks, remove_temps
from sendense_tools.hub.prune_plan import BACKUP_RUNNING, Removal, VmPlan, plan
from sendense_tools.policy.model import Policy

if TYPE_CHECKING:
    from sendense_tools.hub.jobs import JobManager

log = logging.getLogger(__name__)

RECOVERING = "finishing the merges a stopped hub left"


class Pruner:
    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs
        self.store = jobs.store
        self.repository = jobs.repository
        # What holds the prune lock (a run's id, or the start-up recovery).
        self.busy: str | None = None
        self._tasks: set[asyncio.Task] = set()
        self._recovery: asyncio.Task | None = None

    def _policies(self, node: str) -> dict[str, Policy] | None:
        entry = self.jobs.nodes.get(node)
        return entry.policies if entry is not None else None

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _take(self, holder: str) -> None:
        if self.busy is not None:
            raise PruneRunning(self.busy if self.busy == RECOVERING else f"run {self.busy}")
        self.busy = holder

    # -- start-up and shut-down -----------------------------------------------

    def start_recovery(self) -> None:
        """At hub start: runs the last hub left are failed, journaled merges finish."""
        if failed := self.store.fail_running_prunes("hub restarted"):
            log.warning("marked %d unfinished prune runs failed: hub restarted", failed)
        self._take(RECOVERING)
        self._recovery = self._spawn(self._recover_alone())

    async def _recover_alone(self) -> None:
        try:
            await self.recover()
        except Exception as exc:  # the next prune tries again and reports it
            log.error("prune: finishing a journaled merge failed: %s", exc)
        finally:
            self.busy = None

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def recover(self) -> tuple[int, int]:
        """Finish every journaled merge, and remove the folders of points whose rows
        went; (points removed, bytes merged)."""
        merged, journals = 0, self.store.journaled_merges()
        for journal in journals:
            log.warning("prune: finishing the merge of %s into %s", journal["point"],
                        journal["child"])  # fmt: skip
            await asyncio.to_thread(remove_temps, journal)
            merged += await merge_disks(journal)
            row = self.store.job_row(journal["point"])
            self.store.finish_merge(
                journal["point"], journal["child"], row and row["parent"], journal["vm"]
            )
        for removal in self.store.removals():
            await self._remove_folder(removal["vm"], removal["point"])
        return len(journals), merged

    async def _remove_folder(self, vm: str, point: str) -> None:
        await asyncio.to_thread(self.repository.remove_job, vm, point)
        self.store.removed(point)

    # -- a run ----------------------------------------------------------------

    async def run(self, dry_run: bool, policy: str | None, node: str | None) -> dict[str, Any]:
        """One prune, to its end even if the caller hangs up; the run's record. A prune
        asked for while the start-up recovery runs waits for it (the timer's first run
        after a crash is not refused)."""
        if self._recovery is not None and not self._recovery.done():
            await asyncio.shield(self._recovery)
        run_id = str(uuid.uuid4())
        self._take(run_id)
        task = self._spawn(self._run(run_id, dry_run, policy, node))
        return await asyncio.shield(task)

    async def _run(
        self, run_id: str, dry_run: bool, policy: str | None, node: str | None
    ) -> dict[str, Any]:
        try:
            started = self.store.start_prune_run(run_id, dry_run, policy, node)
        except BaseException:
            self.busy = None
            raise
        totals = {"removed": 0, "merged": 0}
        plans: list[VmPlan] = []
        status, error = "completed", None
        try:
            if not dry_run:
                totals["removed"], totals["merged"] = await self.recover()
            plans = self._plan(policy, node)
            if dry_run:
                totals["removed"] = sum(len(p.removed) for p in plans)
                totals["merged"] = sum(r.bytes for p in plans for r in p.removed
                                       if r.action == "merge")  # fmt: skip
            else:
                for vm_plan in plans:
                    await self._carry_out(vm_plan, totals)
        except asyncio.CancelledError:
            status, error = "failed", "hub stopped"
            raise
        except Exception as exc:  # the run's end, with the reason, is what the caller gets
            log.error("prune %s failed: %s", run_id, exc)
            status, error = "failed", str(exc)
        finally:
            self.busy = None
            finished = self.store.end_prune_run(
                run_id, status, totals["removed"], totals["merged"], error
            )
        return {
            "id": run_id, "dry_run": dry_run, "policy": policy, "node": node, "status": status,
            "started_at": started, "finished_at": finished, "points_removed": totals["removed"],
            "merged_bytes": totals["merged"], "error": error,
            "vms": [p.public() for p in plans],
        }  # fmt: skip

    def _plan(self, policy: str | None, node: str | None) -> list[VmPlan]:
        points = [p | {"disks": self.store.disks(p["id"])}
                  for p in self.store.completed_points(node)]  # fmt: skip
        return plan(
            points,
            self._policies,
            self.store.point_readers(),
            lambda n, vm: self.store.active_job_for_vm(n, vm) is not None,
            policy,
        )

    async def _carry_out(self, vm_plan: VmPlan, totals: dict[str, int]) -> None:
        """The VM's removals in order; what was done stays in `removed`, the rest is
        dropped when a backup or restore of the VM started meanwhile."""
        planned, vm_plan.removed = vm_plan.removed, []
        for removal in planned:
            if self.store.active_job_for_vm(vm_plan.node, vm_plan.vm) is not None:
                vm_plan.skipped = BACKUP_RUNNING
                return
            reader = self.store.point_readers().get(removal.id)
            if reader is not None:
                vm_plan.skipped = f"point {removal.id} in use by restore {reader}"
                return
            if removal.action == "delete":
                self.store.delete_point(removal.id, vm_plan.vm)
                await self._remove_folder(vm_plan.vm, removal.id)
            else:
                removal.bytes = await self._merge(vm_plan, removal)
                totals["merged"] += removal.bytes
            totals["removed"] += 1
            vm_plan.removed.append(removal)
            log.info("prune: %s %s of %s (%s bytes)", removal.action, removal.id, vm_plan.vm,
                     removal.bytes)  # fmt: skip

    async def _merge(self, vm_plan: VmPlan, removal: Removal) -> int:
        assert removal.into is not None
        point = {d["disk_id"]: d["qcow2_path"] for d in self.store.disks(removal.id)}
        child = {d["disk_id"]: d["qcow2_path"] for d in self.store.disks(removal.into)}
        if point.keys() != child.keys():
            raise MergeError(
                f"point {removal.into} has disks {sorted(child)}, its base {removal.id}"
                f" {sorted(point)}: not merged"
            )
        disks = [
            {"disk_id": d, "point": point[d], "child": child[d],
             "backing": await backing_file(point[d])}
            for d in sorted(point)
        ]  # fmt: skip
        journal = {"point": removal.id, "child": removal.into, "disks": disks}
        self.store.begin_merge(removal.id, removal.into, vm_plan.node, vm_plan.vm, disks)
        merged = await merge_disks(journal)
        self.store.finish_merge(removal.id, removal.into, removal.parent, vm_plan.vm)
        await self._remove_folder(vm_plan.vm, removal.id)
        return merged
