"""One seeded simulator for the vSphere restore tests: each test removes what it creates."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pyVmomi import vim

from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.props import wait_task
from tests.fixtures.vcsim import VcsimLab, seeded_vcsim


@pytest.fixture(scope="package")
def vcsim() -> Iterator[VcsimLab]:
    with seeded_vcsim() as lab:
        yield lab


@pytest.fixture
def session(vcsim):
    s = vcsim.session()
    yield s
    s.close()


@dataclass(frozen=True)
class Elsewhere:
    """A VM folder and a resource pool other than the seeded VM's, to restore into."""

    folder: str  # path below the datacenter
    folder_obj: vim.Folder
    pool: str  # path below the host folder
    pool_obj: vim.ResourcePool


def _pool_spec() -> vim.ResourceConfigSpec:
    def alloc() -> vim.ResourceAllocationInfo:
        return vim.ResourceAllocationInfo(
            reservation=0,
            limit=-1,
            expandableReservation=True,
            shares=vim.SharesInfo(level="normal", shares=0),
        )

    return vim.ResourceConfigSpec(cpuAllocation=alloc(), memoryAllocation=alloc())


@pytest.fixture(scope="package")
def elsewhere(vcsim) -> Iterator[Elsewhere]:
    s = vcsim.session()
    try:
        dc = s.content.rootFolder.childEntity[0]
        folder = s.call(dc.vmFolder.CreateFolder, "restores")
        root_pool = find_vm(s, vcsim.vm).resourcePool
        pool = s.call(root_pool.CreateResourcePool, "restore-pool", _pool_spec())
        yield Elsewhere("vm/restores", folder, "DC0_C0/Resources/restore-pool", pool)
        wait_task(s, s.call(folder.Destroy_Task), "remove the test folder")
        wait_task(s, s.call(pool.Destroy_Task), "remove the test pool")
    finally:
        s.close()
