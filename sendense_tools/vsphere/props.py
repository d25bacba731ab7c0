"""Property-collector reads and task waits.

The simulator rejects whole-object reads in two places (a RemoveSnapshot
task's info.entity, a VM's unset snapshot), and so do some real vCenters
under load; reading only the named properties avoids both.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from pyVmomi import vim, vmodl

from sendense_tools.vsphere.connection import VsphereError, VsphereSession

PC = vmodl.query.PropertyCollector


def read_props(session: VsphereSession, obj: Any, paths: list[str]) -> dict[str, Any]:
    """The named properties of one managed object; unset properties are absent."""
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=obj, skip=False)],
        propSet=[PC.PropertySpec(type=type(obj), pathSet=paths, all=False)],
    )
    pc = session.content.propertyCollector
    result = session.call(pc.RetrieveContents, [spec])
    if not result:
        return {}
    return {p.name: p.val for p in result[0].propSet}


def view_props(
    session: VsphereSession, root: Any, types: list[type], paths: list[str]
) -> list[tuple[Any, dict[str, Any]]]:
    """(object, its named properties) for every object of `types` below `root`, in one call.

    The paths must exist on every listed type; unset properties are absent.
    """
    content = session.content
    view = session.call(content.viewManager.CreateContainerView, root, types, True)
    try:
        traverse = PC.TraversalSpec(
            name="view", path="view", skip=False, type=vim.view.ContainerView
        )
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
            propSet=[PC.PropertySpec(type=t, pathSet=paths, all=False) for t in types],
        )
        found = session.call(content.propertyCollector.RetrieveContents, [spec]) or []
    finally:
        session.call(view.Destroy)
    return [(o.obj, {p.name: p.val for p in o.propSet or []}) for o in found]


def _fault_text(fault: Any) -> str:
    if fault is None:
        return "unknown error"
    msg = getattr(fault, "localizedMessage", None) or getattr(fault, "msg", None)
    if not msg and getattr(fault, "fault", None) is not None:
        msg = getattr(fault.fault, "msg", None) or type(fault.fault).__name__
    return str(msg or type(fault).__name__)


class TaskError(VsphereError):
    """A vCenter task ended in error; `fault` is its vim fault, for callers that tell them apart."""

    def __init__(self, message: str, fault: Any) -> None:
        super().__init__(message)
        self.fault = fault


def wait_task(session: VsphereSession, task: vim.Task, what: str, timeout: float = 600.0) -> Any:
    """Wait for `task` on info.state only and return info.result; raise with info.error."""
    pc = session.content.propertyCollector
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=task, skip=False)],
        propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info.state"], all=False)],
    )
    flt = session.call(pc.CreateFilter, spec, True)
    deadline = time.monotonic() + timeout
    version = ""
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VsphereError(f"{what}: vCenter task did not finish in {timeout:.0f} s")
            opts = PC.WaitOptions(maxWaitSeconds=max(1, min(30, int(remaining))))
            update = session.call(pc.WaitForUpdatesEx, version, opts)
            if update is None:
                continue
            version = update.version
            state = None
            for fs in update.filterSet or []:
                for obj in fs.objectSet or []:
                    for change in obj.changeSet or []:
                        if change.name == "info.state":
                            state = change.val
            if state in ("success", "error"):
                break
    finally:
        with contextlib.suppress(vmodl.fault.ManagedObjectNotFound):
            session.call(flt.Destroy)
    info = read_props(session, task, ["info.error", "info.result"])
    if state == "error":
        fault = info.get("info.error")
        raise TaskError(f"{what}: {_fault_text(fault)}", fault)
    return info.get("info.result")
