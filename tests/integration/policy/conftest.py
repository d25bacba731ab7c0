"""A simulator with ten VMs in the cluster, each with one small seeded disk, and a VM folder
DC0/vm/pol holding two of them and a template (which a folder policy leaves out)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sendense_tools.lab.seed import seed_vm
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.props import wait_task
from tests.fixtures.vcsim import VM_NAME, VcsimLab, seeded_vcsim

DISK = 16 << 20
BY_NAME = [f"DC0_C0_RP0_VM{n}" for n in (1, 4, 5, 7, 8, 9)]
IN_FOLDER = ["DC0_C0_RP0_VM2", "DC0_C0_RP0_VM3"]
TEMPLATE = "DC0_C0_RP0_VM6"
FOLDER = "DC0/vm/pol"


@pytest.fixture(scope="package")
def vcsim() -> Iterator[VcsimLab]:
    with seeded_vcsim("-vms", "10", sizes=[DISK], seed="policy") as lab:
        session = lab.session()
        try:
            for name in BY_NAME + IN_FOLDER:
                seed_vm(session, name, [DISK], seed="policy")
            dc = session.content.rootFolder.childEntity[0]
            folder = session.call(dc.vmFolder.CreateFolder, "pol")
            template = find_vm(session, TEMPLATE)
            wait_task(session, session.call(template.PowerOffVM_Task), "power off")
            session.call(template.MarkAsTemplate)
            moved = [find_vm(session, n) for n in [*IN_FOLDER, TEMPLATE]]
            wait_task(session, session.call(folder.MoveIntoFolder_Task, moved), "move")
        finally:
            session.close()
        yield lab


__all__ = ["BY_NAME", "FOLDER", "IN_FOLDER", "TEMPLATE", "VM_NAME"]
