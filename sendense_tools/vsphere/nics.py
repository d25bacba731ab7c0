"""A restored VM's network cards, found again by the network names its hardware recorded."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.devices import nic_class
from sendense_tools.vsphere.placement import Placement
from sendense_tools.vsphere.props import read_props, view_props

D = vim.vm.device
# Temporary keys of the new cards in the create spec (vCenter assigns the real ones).
FIRST_KEY = -500


def _networks(session: VsphereSession, placement: Placement) -> dict[str, Any]:
    found = view_props(session, placement.datacenter_obj, [vim.Network], ["name"])
    return {props.get("name", ""): obj for obj, props in found}


def _nic_backing(session: VsphereSession, name: str, net: Any) -> Any:
    if isinstance(net, vim.dvs.DistributedVirtualPortgroup):
        p = read_props(session, net, ["key", "config.distributedVirtualSwitch"])
        dvs = p["config.distributedVirtualSwitch"]
        uuid = read_props(session, dvs, ["uuid"])["uuid"]
        port = vim.dvs.PortConnection(switchUuid=uuid, portgroupKey=p["key"])
        return D.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    return D.VirtualEthernetCard.NetworkBackingInfo(deviceName=name, network=net)


def nic_specs(
    session: VsphereSession, hardware: dict, placement: Placement
) -> tuple[list[Any], list[str]]:
    """NIC specs by network name; a NIC whose network is gone comes back disconnected."""
    networks = _networks(session, placement)
    # A standard network to hold a NIC whose own is missing: a card needs some backing.
    spare = next(
        (
            n
            for n, obj in networks.items()
            if not isinstance(obj, vim.dvs.DistributedVirtualPortgroup | vim.OpaqueNetwork)
        ),
        None,
    )
    specs, warnings = [], []
    for n, nic in enumerate(hardware.get("nics") or []):
        connected = bool(nic.get("connected", True))
        net = networks.get(nic["network"])
        if net is None:
            if spare is None:
                warnings.append(
                    f"NIC {n} ({nic['type']}): network {nic['network']!r} not found in "
                    f"datacenter {placement.datacenter}, which has no standard network: left out"
                )
                continue
            warnings.append(
                f"NIC {n} ({nic['type']}): network {nic['network']!r} not found in datacenter "
                f"{placement.datacenter}: added disconnected, on {spare!r}"
            )
            network, net, connected = spare, networks[spare], False
        else:
            network = nic["network"]
        card = nic_class(nic["type"])(
            key=FIRST_KEY - n,
            backing=_nic_backing(session, network, net),
            addressType="generated",
            connectable=D.VirtualDevice.ConnectInfo(
                startConnected=connected, connected=False, allowGuestControl=True
            ),
        )
        specs.append(D.VirtualDeviceSpec(operation="add", device=card))
    return specs, warnings
