"""The mark a restore leaves on the VM it creates: extraConfig `sendense.restore=<job id>`.

A restarted node destroys a half-made VM only when it carries its crashed
restore's mark, never a VM someone else made under the same name.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.props import read_props, wait_task

TAG_KEY = "sendense.restore"
TAG_TIMEOUT = 300.0


def tag_vm(session: VsphereSession, vm: Any, job_id: str) -> None:
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=TAG_KEY, value=job_id)])
    task = session.call(vm.ReconfigVM_Task, spec)
    wait_task(session, task, f"mark {vm._moId} as restore {job_id}", TAG_TIMEOUT)


def tag_of(session: VsphereSession, vm: Any) -> str | None:
    """The restore job id a VM's extraConfig names, or None."""
    options = read_props(session, vm, ["config.extraConfig"]).get("config.extraConfig") or []
    return next((o.value for o in options if o.key == TAG_KEY), None)
