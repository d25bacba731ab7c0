"""VMDK descriptors (checked by qemu-img, which reads VMware's format) and upload URLs."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from sendense_tools.vsphere.connection import VsphereError
from sendense_tools.vsphere.datastore import folder_url
from sendense_tools.vsphere.params import parse_vcenter_url
from sendense_tools.vsphere.upload import descriptor_text, upload_url

EP = parse_vcenter_url("https://vc.example:8443")


def ddb(text: str) -> dict[str, str]:
    return dict(re.findall(r'^ddb\.([\w.]+) = "([^"]*)"$', text, re.MULTILINE))


def test_the_descriptor_names_its_flat_extent_in_sectors():
    text = descriptor_text(3 << 30, "web_disk0-flat.vmdk", "pvscsi")
    assert 'createType="monolithicFlat"' in text.splitlines()
    extents = [line for line in text.splitlines() if line.startswith("RW ")]
    assert extents == [f'RW {(3 << 30) // 512} FLAT "web_disk0-flat.vmdk" 0']
    assert ddb(text)["adapterType"] == "pvscsi"


@pytest.mark.parametrize(
    ("adapter", "written", "heads"),
    [("lsilogic", "lsilogic", 255), ("lsilogic-sas", "lsisas1068", 255), ("ide", "ide", 16),
     ("sata", "ide", 16), ("buslogic", "buslogic", 255), ("nvme", "lsilogic", 255)],
)  # fmt: skip
def test_geometry_follows_the_adapter_and_fits_the_capacity(adapter, written, heads):
    capacity = 5 << 30  # below every cap
    d = ddb(descriptor_text(capacity, "d-flat.vmdk", adapter))
    assert d["adapterType"] == written and int(d["geometry.heads"]) == heads
    c, h, s = (int(d[k]) for k in ("geometry.cylinders", "geometry.heads", "geometry.sectors"))
    assert c * h * s <= capacity // 512 < (c + 1) * h * s


def test_huge_disks_cap_the_cylinders():
    assert ddb(descriptor_text(4 << 40, "d-flat.vmdk", "lsilogic"))["geometry.cylinders"] == "65535"
    assert ddb(descriptor_text(64 << 30, "d-flat.vmdk", "ide"))["geometry.cylinders"] == "16383"


def test_every_descriptor_is_a_new_disk():
    a, b = (descriptor_text(1 << 20, "d-flat.vmdk", "lsilogic") for _ in range(2))
    assert ddb(a)["uuid"] != ddb(b)["uuid"]
    assert ddb(a)["longContentID"] != ddb(b)["longContentID"]


@pytest.mark.parametrize(
    ("capacity", "name", "adapter", "why"),
    [(1000, "d-flat.vmdk", "lsilogic", "multiple of 512"), (0, "d-flat.vmdk", "lsilogic", "512"),
     (512, 'a"b-flat.vmdk', "lsilogic", "plain file name"),
     (512, "dir/d-flat.vmdk", "lsilogic", "plain file name"),
     (512, "d-flat.vmdk", "scsi", "adapter 'scsi'")],
)  # fmt: skip
def test_bad_descriptor_input_is_refused(capacity, name, adapter, why):
    with pytest.raises(VsphereError, match=why):
        descriptor_text(capacity, name, adapter)


def test_qemu_img_reads_the_pair_as_a_vmdk_of_that_size(tmp_path):
    capacity = 8 << 20
    flat = tmp_path / "vm_disk0-flat.vmdk"
    with open(flat, "wb") as f:
        f.truncate(capacity)
        f.seek(3 << 20)
        f.write(b"restored bytes")
    desc = tmp_path / "vm_disk0.vmdk"
    desc.write_text(descriptor_text(capacity, flat.name, "lsilogic"))
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(desc)],
            check=True, capture_output=True, text=True,
        ).stdout
    )  # fmt: skip
    assert info["format"] == "vmdk" and info["virtual-size"] == capacity
    assert info["format-specific"]["data"]["create-type"] == "monolithicFlat"
    raw = tmp_path / "out.raw"
    subprocess.run(
        ["qemu-img", "convert", "-f", "vmdk", "-O", "raw", str(desc), str(raw)], check=True
    )
    assert raw.read_bytes() == flat.read_bytes()
    assert os.path.getsize(raw) == capacity


def test_upload_url_is_the_exact_file_quoted_like_reads():
    url = upload_url(EP, "Site A/DC 1", "[ds 1] my vm/my vm_disk0.vmdk")
    assert url == (
        "https://vc.example:8443/folder/my%20vm/my%20vm_disk0.vmdk"
        "?dcPath=Site%20A%2FDC%201&dsName=ds%201"
    )
    # The read of the same disk goes to its flat file, quoted the same way.
    assert folder_url(EP, "Site A/DC 1", "[ds 1] my vm/my vm_disk0.vmdk") == url.replace(
        "my%20vm_disk0.vmdk", "my%20vm_disk0-flat.vmdk"
    )


def test_upload_url_needs_a_datastore_path():
    with pytest.raises(VsphereError, match="not '\\[datastore\\] path'"):
        upload_url(EP, "DC0", "vm/vm.vmdk")
