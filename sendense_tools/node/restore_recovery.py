"""At start: the restores the previous run crashed in get their half-made VM removed.

Only a VM this node's restore created is destroyed: the one its record names
(moref) or, when the node died while vCenter was still creating it, the VM of
that name, and in both cases only when its extraConfig carries the restore's
tag (`sendense.restore=<job id>`). The datastore files the restore was writing
are deleted after it. The restore is then reported `failed`. vCenter may be
down as the node starts: the clean-up is retried with backoff until it succeeds.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pyVmomi import vim, vmodl

from sendense_tools.errors import SendenseError
from sendense_tools.node.recovery import RETRIED, recover_book
from sendense_tools.node.restore_job import RestoreJob
from sendense_tools.node.restores import RestoreManager
from sendense_tools.restore.tag import tag_of
from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.inventory import find_vm, vms_named
from sendense_tools.vsphere.placement import resolve_placement
from sendense_tools.vsphere.vmcreate import delete_files, destroy_vm

log = logging.getLogger("sendense.node")
# Restore records live in this directory of the node's spool, apart from the backups'.
RESTORE_SPOOL = "restores"


def start_restore_recovery(
    restores: RestoreManager, retry_initial: float, retry_max: float
) -> list[str]:
    """Begin the start-up recovery of restores; returns the ids of the crashed ones."""
    return recover_book(
        restores, _clean_up, retry_initial, retry_max, (*RETRIED, vim.fault.VimFault), "restore"
    )


def _ours(session: VsphereSession, job: RestoreJob) -> Any | None:
    candidates: list[Any] = []
    if job.moref:
        with contextlib.suppress(SendenseError):
            candidates.append(find_vm(session, job.moref))
    candidates += vms_named(session, job.name)
    for vm in candidates:
        try:
            if tag_of(session, vm) == job.job_id:
                return vm
        except vmodl.fault.ManagedObjectNotFound:
            continue
    return None


def _clean_up(restores: RestoreManager, job: RestoreJob) -> str:
    session = VsphereSession.connect(restores.vcenter())
    try:
        vm = _ours(session, job)
        done = []
        if vm is not None:
            destroy_vm(session, vm)
            done.append(f"VM {job.name} destroyed")
        if job.datacenter and job.files:
            where = {"datacenter": job.datacenter}
            dc = resolve_placement(session, where, None, None, None).datacenter_obj
            for file in job.files:
                delete_files(session, dc, file)
            done.append("its datastore files deleted")
        return ", ".join(done) or f"it had created no VM {job.name}"
    finally:
        session.close()
