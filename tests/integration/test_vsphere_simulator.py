"""The vSphere layer against the real vCenter simulator (seeded 3-disk VM)."""

from __future__ import annotations

import hashlib
import urllib.request

import pytest

from sendense_tools.vsphere.connection import VsphereError
from sendense_tools.vsphere.datastore import resolve_disk_url
from sendense_tools.vsphere.inventory import VmNotFound, describe_vm, find_vm
from sendense_tools.vsphere.snapshots import (
    create_snapshot,
    list_snapshots,
    remove_leftovers,
    remove_snapshot,
    snapshot_disks,
)
from tests.fixtures.vcsim import SEEDED_SIZES


@pytest.fixture
def session(vcsim):
    s = vcsim.session()
    yield s
    s.close()


def test_seeded_vm_lists_three_disks_in_key_order(vcsim, session):
    info = describe_vm(session, vcsim.vm)
    assert [d.disk_id for d in info.disks] == ["disk0", "disk1", "disk2"]
    assert [d.capacity for d in info.disks] == SEEDED_SIZES
    assert [d.key for d in info.disks] == sorted(d.key for d in info.disks)
    assert all(d.file.startswith("[") and d.file.endswith(".vmdk") for d in info.disks)
    assert info.moref.startswith("vm-")
    by_moref = describe_vm(session, info.moref)
    assert by_moref.name == vcsim.vm


def test_datastore_file_over_folder_url_has_seeded_sha256(vcsim, session):
    info = describe_vm(session, vcsim.vm)
    cookie = session.session_cookie()
    ctx = session.trust.context
    for disk, seeded in zip(info.disks, vcsim.disks, strict=True):
        url = resolve_disk_url(session.trust, info.datacenter, disk.file, cookie)
        h = hashlib.sha256()
        req = urllib.request.Request(url, headers={"Cookie": cookie})
        with urllib.request.urlopen(req, context=ctx) as resp:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == seeded.sha256


def test_unknown_vm_is_a_clear_error(session):
    with pytest.raises(VmNotFound, match="no-such-vm"):
        find_vm(session, "no-such-vm")
    with pytest.raises(VmNotFound):
        find_vm(session, "vm-999999")


def test_snapshot_create_read_remove(vcsim, session):
    vm = find_vm(session, vcsim.vm)
    assert list_snapshots(session, vm) == []
    snap = create_snapshot(session, vm, "sendense-t1")
    try:
        names = [s.name for s in list_snapshots(session, vm)]
        assert names == ["sendense-t1"]
        disks = snapshot_disks(session, snap)
        assert [d.capacity for d in disks] == SEEDED_SIZES
    finally:
        remove_snapshot(session, snap)
    assert list_snapshots(session, vm) == []


def test_leftover_cleanup_removes_only_our_snapshots(vcsim, session):
    vm = find_vm(session, vcsim.vm)
    create_snapshot(session, vm, "sendense-crashed-job", owner="site-a")
    theirs = create_snapshot(session, vm, "customer-snapshot")
    # Another appliance on the same vCenter, mid-backup: not ours to remove.
    other = create_snapshot(session, vm, "sendense-running-elsewhere", owner="site-b")
    try:
        removed = remove_leftovers(session, vm, owner="site-a")
        assert removed == ["sendense-crashed-job"]
        assert sorted(s.name for s in list_snapshots(session, vm)) == [
            "customer-snapshot",
            "sendense-running-elsewhere",
        ]
    finally:
        remove_snapshot(session, theirs)
        remove_snapshot(session, other)
    assert list_snapshots(session, vm) == []


def test_tls_verification_is_on_unless_asked(vcsim):
    # The simulator's self-signed certificate is not in the CA store.
    with pytest.raises(VsphereError, match="not trusted"):
        vcsim.session(insecure=False)


def test_pinned_thumbprint_connects_and_a_wrong_one_is_refused(vcsim):
    s = vcsim.session(thumbprint=vcsim.thumbprint.upper())
    try:
        assert describe_vm(s, vcsim.vm).name == vcsim.vm
    finally:
        s.close()
    wrong = ":".join(["00"] * 20)
    with pytest.raises(VsphereError, match="thumbprint mismatch"):
        vcsim.session(thumbprint=wrong)
