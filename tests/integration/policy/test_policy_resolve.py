"""Policies resolved against the simulator: names and morefs as given, a folder's
VMs (templates left out), and a VM two policies reach refused in both."""

from __future__ import annotations

from sendense_tools.policy.model import Policy
from sendense_tools.policy.resolve import resolve, resolve_all
from sendense_tools.vsphere.inventory import find_vm
from tests.fixtures.vcsim import VcsimLab
from tests.integration.policy.conftest import BY_NAME, FOLDER, IN_FOLDER


def test_a_moref_resolves_to_its_vm_name(vcsim: VcsimLab) -> None:
    session = vcsim.session()
    try:
        moref = find_vm(session, BY_NAME[1])._moId
        r = resolve(session, Policy(vms=[BY_NAME[0], moref, BY_NAME[1]]))
    finally:
        session.close()
    assert [(t.name, t.moref) for t in r.targets][1] == (BY_NAME[1], moref)
    # The same VM by moref and by name is backed up once.
    assert [t.name for t in r.targets] == [BY_NAME[0], BY_NAME[1]]
    assert r.failures == {} and r.error is None


def test_a_folder_is_every_vm_below_it_but_its_templates(vcsim: VcsimLab) -> None:
    session = vcsim.session()
    try:
        r = resolve(session, Policy(folder=FOLDER))
    finally:
        session.close()
    assert sorted(t.name for t in r.targets) == sorted(IN_FOLDER)
    assert {t.via for t in r.targets} == {f"folder {FOLDER}"}


def test_unknown_names_and_folders_say_which(vcsim: VcsimLab) -> None:
    session = vcsim.session()
    try:
        r = resolve(session, Policy(vms=["no-such-vm", "vm-999999"], folder="DC0/vm/nope"))
    finally:
        session.close()
    assert r.targets == []
    assert set(r.failures) == {"no-such-vm", "vm-999999"}
    assert "not found" in r.failures["no-such-vm"]
    assert r.error is not None and "DC0/vm/nope" in r.error


def test_a_vm_by_name_in_one_policy_and_by_folder_in_another_is_refused_in_both(
    vcsim: VcsimLab,
) -> None:
    shared = IN_FOLDER[0]
    policies = {
        "named": Policy(vms=[BY_NAME[0], shared]),
        "folder": Policy(folder=FOLDER),
    }
    session = vcsim.session()
    try:
        r = resolve_all(session, policies)
    finally:
        session.close()
    assert [t.name for t in r["named"].targets] == [BY_NAME[0]]
    assert [t.name for t in r["folder"].targets] == [IN_FOLDER[1]]
    for name in ("named", "folder"):
        reason = r[name].failures[shared]
        assert "named (by name)" in reason and f"folder (folder {FOLDER})" in reason
