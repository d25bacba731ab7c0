"""nbdkit argument lists. VDDK cannot run here (no VMware library): its arguments are
checked as a list only — no real VDDK is involved in these tests."""

from __future__ import annotations

import pytest

from sendense_tools.nbd.sources import VddkArgs, https_source, nbdkit_curl_args, nbdkit_vddk_args


def test_vddk_args_without_real_vddk():
    args = nbdkit_vddk_args(
        VddkArgs(
            server="vc.example",
            user="backup@vsphere.local",
            password_file="/etc/sendense/vcenter-password",
            thumbprint="AA:BB:CC",
            vm_moref="vm-42",
            snapshot_moref="snapshot-7",
            file="[ds1] vm/vm.vmdk",
            libdir="/opt/vmware-vix-disklib-distrib",
        )
    )
    plugin = args.index("vddk")
    # filters come before the plugin; one connection, 2 MiB requests, as virt-v2v runs it
    assert set(args[:plugin]) == {
        "--filter=cacheextents",
        "--filter=multi-conn",
        "--filter=blocksize",
    }
    params = args[plugin + 1 :]
    for expected in (
        "server=vc.example",
        "user=backup@vsphere.local",
        "password=+/etc/sendense/vcenter-password",  # read from the file, not argv
        "thumbprint=AA:BB:CC",
        "vm=moref=vm-42",
        "snapshot=snapshot-7",
        "transports=nbdssl:nbd",
        "file=[ds1] vm/vm.vmdk",
        "libdir=/opt/vmware-vix-disklib-distrib",
        "multi-conn-mode=disable",
        "maxdata=2M",
    ):
        assert expected in params
    assert not any(p.startswith("port=") for p in params)


def test_curl_args_verify_modes_and_secret_file():
    url = "https://vc/folder/vm/vm-flat.vmdk?dcPath=DC0&dsName=ds1"
    strict = nbdkit_curl_args(url, "/run/x/cookie")
    assert strict[0] == "curl" and f"url={url}" in strict
    assert "cookie=+/run/x/cookie" in strict and "protocols=https" in strict
    assert not any(a.startswith(("sslverify", "cainfo")) for a in strict)
    assert "sslverify=false" in nbdkit_curl_args(url, None, verify=False)
    assert "cainfo=/etc/ca.pem" in nbdkit_curl_args(url, None, verify="/etc/ca.pem")
    with pytest.raises(ValueError, match="only https"):
        nbdkit_curl_args("file:///etc/passwd")


def test_curl_args_replace_the_default_ca_directory_when_given_one():
    url = "https://vc/folder/vm/vm-flat.vmdk?dcPath=DC0&dsName=ds1"
    args = nbdkit_curl_args(url, None, verify="/run/x/anchor.pem", capath="/run/x/no-capath")
    assert "cainfo=/run/x/anchor.pem" in args and "capath=/run/x/no-capath" in args
    assert not any(a.startswith("capath=") for a in nbdkit_curl_args(url))


def test_a_pinned_certificate_cannot_be_combined_with_no_verification():
    url = "https://vc/folder/vm/vm-flat.vmdk"
    with pytest.raises(ValueError, match="exclude each other"):
        https_source(url, verify=False, anchor_pem="-----BEGIN CERTIFICATE-----")
