"""Datastore URLs, vCenter URL parsing and thumbprints (pure functions)."""

from __future__ import annotations

import hashlib

import pytest

from sendense_tools.vsphere.connection import (
    VsphereError,
    normalize_thumbprint,
    parse_vcenter_url,
    sha1_thumbprint,
)
from sendense_tools.vsphere.datastore import folder_url
from sendense_tools.vsphere.inventory import split_datastore_file


def test_folder_url_quotes_path_and_parameters_like_virt_v2v():
    ep = parse_vcenter_url("https://vc.example:8443/sdk")
    url = folder_url(ep, "Folder A/DC 1", "[data store 1] my vm/my vm.vmdk")
    assert url == (
        "https://vc.example:8443/folder/my%20vm/my%20vm-flat.vmdk"
        "?dcPath=Folder%20A%2FDC%201&dsName=data%20store%201"
    )


def test_default_port_is_left_out_of_the_url():
    ep = parse_vcenter_url("vc.example")
    assert folder_url(ep, "DC", "[ds] a/b.vmdk").startswith("https://vc.example/folder/a/b-flat")


@pytest.mark.parametrize("bad", ["http://vc", "https://", "https://vc:notaport"])
def test_bad_vcenter_urls_are_refused(bad):
    with pytest.raises(VsphereError):
        parse_vcenter_url(bad)


def test_thumbprints_are_normalised_and_checked():
    der = b"certificate bytes"
    want = ":".join(hashlib.sha1(der).hexdigest()[i : i + 2] for i in range(0, 40, 2))
    assert sha1_thumbprint(der) == want
    assert normalize_thumbprint(want.upper().replace(":", "")) == want
    with pytest.raises(VsphereError, match="SHA-1"):
        normalize_thumbprint("12:34")


def test_datastore_file_must_name_a_datastore():
    assert split_datastore_file("[LocalDS_0] vm/disk.vmdk") == ("LocalDS_0", "vm/disk.vmdk")
    with pytest.raises(VsphereError):
        split_datastore_file("vm/disk.vmdk")
