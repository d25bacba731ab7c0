"""The VMs below a VM folder, named by its inventory path ("DC0/vm/prod")."""

from __future__ import annotations

from pyVmomi import vim

from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.props import view_props


class FolderNotFound(VsphereError):
    pass


def vms_below(session: VsphereSession, path: str) -> dict[str, str]:
    """moref -> name of every VM (templates excluded) anywhere below the folder at `path`,
    vCenter's own inventory path: datacenter / vmFolder name / subfolders."""
    index = session.content.searchIndex
    folder = session.call(index.FindByInventoryPath, path.strip("/"))
    if not isinstance(folder, vim.Folder):
        raise FolderNotFound(f"folder {path!r} not found in vCenter")
    found = view_props(session, folder, [vim.VirtualMachine], ["name", "config.template"])
    return {vm._moId: props["name"] for vm, props in found if not props.get("config.template")}
