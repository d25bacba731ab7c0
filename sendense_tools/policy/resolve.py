"""Which VMs a policy names at this moment: its names and morefs as given, and every
VM below its folder, looked up in vCenter at each run (a folder's content changes).

A VM that two of the node's policies reach (one by name, another by its folder) is
refused for both: its backups would run twice and its retention would be ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyVmomi import vim

from sendense_tools.policy.model import Policy
from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.folders import vms_below
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.props import read_props


@dataclass(frozen=True)
class Target:
    name: str
    moref: str
    via: str  # "by name" or "folder DC0/vm/prod": how the policy reached it


@dataclass
class Resolved:
    targets: list[Target] = field(default_factory=list)
    # What could not be backed up, and why (one line each): the VM as given -> reason.
    failures: dict[str, str] = field(default_factory=dict)
    # The folder is not there: the whole policy cannot run.
    error: str | None = None


def resolve(session: VsphereSession, policy: Policy) -> Resolved:
    out = Resolved()
    morefs: set[str] = set()
    for given in policy.vms:
        try:
            vm: vim.VirtualMachine = find_vm(session, given)
            name = read_props(session, vm, ["name"])["name"]
        except VsphereError as exc:
            out.failures[given] = str(exc)
            continue
        if vm._moId not in morefs:
            morefs.add(vm._moId)
            out.targets.append(Target(name, vm._moId, "by name"))
    if policy.folder:
        try:
            below = vms_below(session, policy.folder)
        except VsphereError as exc:
            out.error = str(exc)
            return out
        for moref, name in sorted(below.items(), key=lambda item: item[1]):
            if moref not in morefs:
                morefs.add(moref)
                out.targets.append(Target(name, moref, f"folder {policy.folder}"))
    return out


def resolve_all(session: VsphereSession, policies: dict[str, Policy]) -> dict[str, Resolved]:
    """Every policy of the node resolved, a VM reached by two of them refused in both."""
    resolved = {name: resolve(session, p) for name, p in sorted(policies.items())}
    owners: dict[str, list[tuple[str, Target]]] = {}
    for name, r in resolved.items():
        for t in r.targets:
            owners.setdefault(t.moref, []).append((name, t))
    for claims in owners.values():
        if len(claims) < 2:
            continue
        how = " and ".join(f"{name} ({t.via})" for name, t in claims)
        for name, t in claims:
            r = resolved[name]
            r.targets.remove(t)
            r.failures[t.name] = f"VM {t.name} is in two policies: {how}"
    return resolved
