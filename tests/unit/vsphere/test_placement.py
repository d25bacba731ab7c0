"""How a folder or pool is found among the datacenter's: by path, or by a unique name."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from sendense_tools.vsphere.placement import UnknownFolder, _paths, _pick

DC = vim.Datacenter("datacenter-2")


def folder(moid: str) -> vim.Folder:
    return vim.Folder(moid)


def tree() -> list[tuple[str, object]]:
    top, a, b, ax, bx = (folder(f"group-{n}") for n in range(5))
    found = [
        (top, {"name": "vm", "parent": DC}),
        (a, {"name": "a", "parent": top}),
        (b, {"name": "b", "parent": top}),
        (ax, {"name": "x", "parent": a}),
        (bx, {"name": "x", "parent": b}),
    ]
    return list(_paths(found, {DC._moId}).values())


def test_paths_stop_below_the_root():
    assert sorted(p for p, _ in tree()) == ["vm", "vm/a", "vm/a/x", "vm/b", "vm/b/x"]


def test_a_path_or_a_unique_name_picks_one():
    assert _pick("vm/b/x", tree(), UnknownFolder, "VM folder", "DC0")[0] == "vm/b/x"
    assert _pick("/vm/a/", tree(), UnknownFolder, "VM folder", "DC0")[0] == "vm/a"
    assert _pick("b", tree(), UnknownFolder, "VM folder", "DC0")[0] == "vm/b"


def test_an_ambiguous_or_unknown_name_is_one_line_naming_the_candidates():
    with pytest.raises(UnknownFolder, match=r"'x' in DC0 is ambiguous \(vm/a/x, vm/b/x\)"):
        _pick("x", tree(), UnknownFolder, "VM folder", "DC0")
    with pytest.raises(UnknownFolder, match=r"'nope' not found in DC0 \(it has: vm, "):
        _pick("nope", tree(), UnknownFolder, "VM folder", "DC0")
