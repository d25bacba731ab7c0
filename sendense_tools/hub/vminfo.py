"""What a node says about a VM, checked before the hub trusts it with paths and sizes."""

from __future__ import annotations

import re
from typing import Any

from sendense_tools.api.fields import MAX_INT64
from sendense_tools.hub.errors import NodeError, NoDisks

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(value: str) -> str:
    """A path/export component from a VM name: no separators, no leading dot."""
    cleaned = _UNSAFE.sub("_", value).lstrip(".")
    return cleaned[:64] or "vm"


def check_vm_info(node: str, vm: str, info: object) -> dict[str, Any]:
    def bad(why: str) -> NodeError:
        return NodeError(f"node {node} described VM {vm!r} badly: {why}")

    if not isinstance(info, dict) or not isinstance(info.get("disks"), list):
        raise bad("no disk list")
    if not isinstance(info.get("name"), str) or not info["name"]:
        raise bad("no name")
    if not info["disks"]:
        raise NoDisks(vm)
    seen = set()
    for disk in info["disks"]:
        if not isinstance(disk, dict) or not isinstance(disk.get("disk_id"), str):
            raise bad("a disk without disk_id")
        capacity = disk.get("capacity")
        if not isinstance(capacity, int) or not 0 < capacity <= MAX_INT64 or capacity % 512:
            raise bad(f"{disk['disk_id']} capacity {capacity!r} is not a positive multiple of 512")
        if disk["disk_id"] in seen or not re.fullmatch(r"[A-Za-z0-9._-]+", disk["disk_id"]):
            raise bad(f"disk id {disk['disk_id']!r} is duplicated or unusable")
        seen.add(disk["disk_id"])
    return info
