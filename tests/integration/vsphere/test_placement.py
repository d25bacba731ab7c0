"""resolve_placement and ensure_name_free against the simulator's inventory."""

from __future__ import annotations

import pytest

from sendense_tools.vsphere.hardware import default_hardware, hardware_of
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.placement import (
    InvalidVmName,
    UnknownDatastore,
    UnknownFolder,
    UnknownResourcePool,
    VmExists,
    ensure_name_free,
    resolve_placement,
)
from sendense_tools.vsphere.props import wait_task


@pytest.fixture
def recorded(vcsim, session):
    return hardware_of(session, find_vm(session, vcsim.vm))


def test_nothing_named_places_the_vm_where_the_source_lives(vcsim, session, recorded):
    vm = find_vm(session, vcsim.vm)
    p = resolve_placement(session, recorded, None, None, None)
    assert p.datastore_obj == vm.datastore[0] and p.datastore == vm.datastore[0].name
    assert p.folder_obj == vm.parent and p.folder == recorded["folder"]
    assert p.resource_pool_obj == vm.resourcePool
    assert p.resource_pool == recorded["resource_pool"]
    assert p.datacenter == recorded["datacenter"] == p.datacenter_obj.name


def test_folder_and_pool_by_path_or_by_unique_name(session, recorded, elsewhere):
    by_path = resolve_placement(session, recorded, None, elsewhere.folder, elsewhere.pool)
    by_name = resolve_placement(session, recorded, None, "restores", "restore-pool")
    for p in (by_path, by_name):
        assert p.folder_obj == elsewhere.folder_obj and p.folder == "vm/restores"
        assert p.resource_pool_obj == elsewhere.pool_obj
        assert p.resource_pool == "DC0_C0/Resources/restore-pool"


def test_an_ambiguous_folder_name_asks_for_its_path(session, recorded, elsewhere):
    vm_folder = elsewhere.folder_obj.parent
    dups = [session.call(f.CreateFolder, "twin") for f in (vm_folder, elsewhere.folder_obj)]
    try:
        with pytest.raises(UnknownFolder) as err:
            resolve_placement(session, recorded, None, "twin", None)
        message = str(err.value)
        assert "vm/twin" in message and "vm/restores/twin" in message and "path" in message
        p = resolve_placement(session, recorded, None, "vm/restores/twin", None)
        assert p.folder_obj == dups[1]
    finally:
        for f in dups:
            wait_task(session, session.call(f.Destroy_Task), "remove a test folder")


@pytest.mark.parametrize(
    ("field", "error"),
    [("datastore", UnknownDatastore), ("folder", UnknownFolder),
     ("resource_pool", UnknownResourcePool)],
)  # fmt: skip
def test_an_unknown_place_is_refused_naming_it_and_where_it_was_looked_for(
    session, recorded, field, error
):
    asked = {"datastore": None, "folder": None, "resource_pool": None, field: "no-such-place"}
    with pytest.raises(error) as err:
        resolve_placement(session, recorded, **asked)
    message = str(err.value)
    assert "'no-such-place'" in message and recorded["datacenter"] in message
    assert "\n" not in message


def test_a_point_without_hardware_goes_to_the_first_of_each(session):
    hw = default_hardware([{"disk_id": "disk0", "capacity": 1 << 20}])
    p = resolve_placement(session, hw, None, None, None)
    dc = session.content.rootFolder.childEntity[0]
    assert p.datacenter_obj == dc and p.folder_obj == dc.vmFolder
    assert p.datastore_obj in dc.datastore
    assert p.resource_pool_obj == dc.hostFolder.childEntity[0].resourcePool


def test_the_name_of_an_existing_vm_is_taken(vcsim, session):
    with pytest.raises(VmExists) as err:
        ensure_name_free(session, vcsim.vm)
    assert vcsim.vm in str(err.value)
    ensure_name_free(session, "restored-lab-vm")


def test_a_name_like_a_moref_is_checked_as_a_name(vcsim, session):
    # The seeded VM's moref is not a VM *name*: it is free.
    ensure_name_free(session, find_vm(session, vcsim.vm)._moId)


@pytest.mark.parametrize("name", ["a/b", "", " padded", "x%2fy", "[ds] x"])
def test_an_unusable_name_is_refused(session, name):
    with pytest.raises(InvalidVmName):
        ensure_name_free(session, name)


def test_a_leftover_directory_on_the_datastore_takes_the_name(session, recorded):
    p = resolve_placement(session, recorded, None, None, None)
    fm = session.content.fileManager
    session.call(fm.MakeDirectory, f"[{p.datastore}] leftover", p.datacenter_obj, False)
    try:
        ensure_name_free(session, "leftover")  # no VM has the name
        with pytest.raises(VmExists, match=r"\[LocalDS_0\] leftover/ already exists"):
            ensure_name_free(session, "leftover", p)
    finally:
        task = session.call(
            fm.DeleteDatastoreFile_Task, f"[{p.datastore}] leftover", p.datacenter_obj
        )
        wait_task(session, task, "remove the test directory")
