"""The mark a restore leaves on the VM it creates: extraConfig `sendense.restore=<job id>`.

A restarted node destroys a half-made VM only when it carries its crashed
restore's mark, never a VM someone else made under the same name.
"""

from __future__ import annotations

from typing import Any

from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.props import read_props

TAG_KEY = "sendense.restore"


def tag(job_id: str) -> dict[str, str]:
    """The extraConfig create_vm sets in the VM's own create spec: no moment untagged."""
    return {TAG_KEY: job_id}


def tag_of(session: VsphereSession, vm: Any) -> str | None:
    """The restore job id a VM's extraConfig names, or None."""
    options = read_props(session, vm, ["config.extraConfig"]).get("config.extraConfig") or []
    return next((o.value for o in options if o.key == TAG_KEY), None)
