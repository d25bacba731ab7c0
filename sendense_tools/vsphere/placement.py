"""Where a restored VM goes: datacenter, datastore, VM folder and resource pool, checked.

Everything is looked up before anything is created, so that a wrong name is refused
with nothing left behind. A folder or pool is given as its path below the datacenter
("vm/restores", "DC0_C0/Resources", as `hardware_of` records them) or as a name that
is unique in the datacenter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.datastore import file_url, probe_url
from sendense_tools.vsphere.inventory import vms_named
from sendense_tools.vsphere.props import read_props, view_props

# How many candidates an error message lists.
SHOWN = 10
# Characters vCenter escapes in names, or that would make the name a path on the datastore.
NAME_FORBIDDEN = set('/\\%[]"')


class UnknownDatacenter(VsphereError):
    pass


class UnknownDatastore(VsphereError):
    pass


class UnknownFolder(VsphereError):
    pass


class UnknownResourcePool(VsphereError):
    pass


class VmExists(VsphereError):
    pass


class InvalidVmName(VsphereError):
    pass


@dataclass(frozen=True)
class Placement:
    datacenter: str  # inventory path, as dcPath wants it
    datacenter_obj: vim.Datacenter
    datastore: str
    datastore_obj: vim.Datastore
    folder: str  # path below the datacenter: "vm/restores"
    folder_obj: vim.Folder
    resource_pool: str  # path below the datacenter's host folder: "DC0_C0/Resources"
    resource_pool_obj: vim.ResourcePool


def _shown(names: list[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more if names else "none"


def _paths(found: list[tuple[Any, dict]], stop: set[str]) -> dict[str, tuple[str, Any]]:
    """moref -> (path, object) for `found` (name and parent read), paths ending at `stop`.

    `stop` holds the morefs whose names the paths leave out (the root and above).
    """
    by_id = {obj._moId: (props.get("name", ""), props.get("parent"), obj) for obj, props in found}
    out = {}
    for moid, (_, _, obj) in by_id.items():
        names, cur = [], moid
        while cur in by_id and cur not in stop:
            name, parent, _ = by_id[cur]
            names.append(name)
            cur = parent._moId if parent is not None else None
        out[moid] = ("/".join(reversed(names)), obj)
    return out


def _pick(
    wanted: str, candidates: list[tuple[str, Any]], error: type[VsphereError], what: str, where: str
) -> tuple[str, Any]:
    """The candidate whose path is `wanted`, else the only one whose last name is."""
    wanted = wanted.strip("/")
    for path, obj in candidates:
        if path == wanted:
            return path, obj
    named = [(path, obj) for path, obj in candidates if path.rsplit("/", 1)[-1] == wanted]
    if len(named) == 1:
        return named[0]
    if named:
        paths = _shown([p for p, _ in named])
        raise error(f"{what} {wanted!r} in {where} is ambiguous ({paths}): give its path")
    raise error(
        f"{what} {wanted!r} not found in {where} (it has: {_shown([p for p, _ in candidates])})"
    )


def _datacenter(session: VsphereSession, wanted: str | None) -> tuple[str, vim.Datacenter]:
    root = session.content.rootFolder
    found = view_props(session, root, [vim.Datacenter, vim.Folder], ["name", "parent"])
    paths = _paths(found, {root._moId})
    dcs = [(p, obj) for p, obj in paths.values() if isinstance(obj, vim.Datacenter)]
    if not dcs:
        raise UnknownDatacenter("vCenter has no datacenter")
    if wanted is None:
        return dcs[0]
    return _pick(wanted, dcs, UnknownDatacenter, "datacenter", "vCenter")


def _datastore(
    session: VsphereSession, dc_path: str, dc: vim.Datacenter, wanted: str | None
) -> tuple[str, vim.Datastore]:
    found = view_props(session, dc, [vim.Datastore], ["name"])
    stores = [(props.get("name", ""), obj) for obj, props in found]
    for name, obj in stores:
        if wanted is None or name == wanted:
            return name, obj
    raise UnknownDatastore(
        f"datastore {wanted!r} not found in datacenter {dc_path} "
        f"(it has: {_shown([n for n, _ in stores])})"
        if wanted is not None
        else f"datacenter {dc_path} has no datastore"
    )


def _folder(
    session: VsphereSession, dc_path: str, dc: vim.Datacenter, wanted: str | None
) -> tuple[str, vim.Folder]:
    top = read_props(session, dc, ["vmFolder"])["vmFolder"]
    found = [(top, read_props(session, top, ["name", "parent"]))]
    found += view_props(session, top, [vim.Folder], ["name", "parent"])
    folders = list(_paths(found, {dc._moId}).values())
    if wanted is None:
        return next((p, obj) for p, obj in folders if obj._moId == top._moId)
    return _pick(wanted, folders, UnknownFolder, "VM folder", f"datacenter {dc_path}")


def _pool(
    session: VsphereSession, dc_path: str, dc: vim.Datacenter, wanted: str | None
) -> tuple[str, vim.ResourcePool]:
    top = read_props(session, dc, ["hostFolder"])["hostFolder"]
    types = [vim.ResourcePool, vim.ComputeResource, vim.Folder]
    found = view_props(session, top, types, ["name", "parent"])
    paths = _paths(found, {top._moId})
    pools = [(p, obj) for p, obj in paths.values() if isinstance(obj, vim.ResourcePool)]
    if not pools:
        raise UnknownResourcePool(f"datacenter {dc_path} has no resource pool")
    if wanted is None:
        return pools[0]
    return _pick(wanted, pools, UnknownResourcePool, "resource pool", f"datacenter {dc_path}")


def resolve_placement(
    session: VsphereSession,
    hardware: dict,
    datastore: str | None,
    folder: str | None,
    resource_pool: str | None,
) -> Placement:
    """The checked placement; None takes the hardware's value, and a None there the first."""
    dc_path, dc = _datacenter(session, hardware.get("datacenter"))
    ds_name, ds = _datastore(session, dc_path, dc, datastore or hardware.get("datastore"))
    folder_path, folder_obj = _folder(session, dc_path, dc, folder or hardware.get("folder"))
    pool_path, pool = _pool(session, dc_path, dc, resource_pool or hardware.get("resource_pool"))
    return Placement(dc_path, dc, ds_name, ds, folder_path, folder_obj, pool_path, pool)


def vm_directory(placement: Placement, name: str) -> str:
    return f"[{placement.datastore}] {name}"


def check_name(name: str) -> None:
    if not name or any(c in NAME_FORBIDDEN for c in name) or name != name.strip():
        raise InvalidVmName(
            f"VM name {name!r} is not usable: it must not be empty, have spaces around it "
            f"or contain any of {''.join(sorted(NAME_FORBIDDEN))}"
        )


def ensure_directory_free(session: VsphereSession, placement: Placement, name: str) -> None:
    """Refuse when "[ds] <name>/" exists already: its files are not ours to overwrite or remove."""
    url = file_url(session.endpoint, placement.datacenter, vm_directory(placement, name) + "/")
    status = probe_url(url, session.session_cookie(), session.trust)
    if status != 404:
        raise VmExists(
            f"datastore directory {vm_directory(placement, name)}/ already exists "
            f"(HTTP {status}): choose another name or remove it"
        )


def ensure_name_free(
    session: VsphereSession, name: str, placement: Placement | None = None
) -> None:
    """Refuse a name that is unusable or that any VM or template in vCenter has; with
    `placement`, also one whose directory exists on the datastore."""
    check_name(name)
    taken = vms_named(session, name)
    if taken:
        ids = ", ".join(vm._moId for vm in taken)
        raise VmExists(f"a VM named {name!r} already exists in vCenter ({ids})")
    if placement is not None:
        ensure_directory_free(session, placement, name)
