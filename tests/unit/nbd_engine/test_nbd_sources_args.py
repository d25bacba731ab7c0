"""nbdkit argument lists. VDDK cannot run here (no VMware library): its arguments are
checked as a list only — no real VDDK is involved in these tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sendense_tools.nbd.curl import nbdkit_curl_args, nbdkit_extentlist_args, write_extentlist
from sendense_tools.nbd.sources import (
    SourceError,
    VddkArgs,
    https_source,
    nbdkit_argv,
    nbdkit_vddk_args,
    vddk_source,
    vddk_target,
)


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


def vddk(snapshot: str | None, file: str) -> VddkArgs:
    return VddkArgs(
        server="vc.example",
        user="backup@vsphere.local",
        password_file="/etc/sendense/vcenter-password",
        thumbprint="AA:BB:CC",
        vm_moref="vm-77",
        snapshot_moref=snapshot,
        file=file,
        libdir="/opt/vmware-vix-disklib-distrib",
        port=8443,
    )


COMMON = [
    "--filter=multi-conn", "--filter=blocksize", "vddk", "server=vc.example",
    "user=backup@vsphere.local", "password=+/etc/sendense/vcenter-password",
    "thumbprint=AA:BB:CC", "vm=moref=vm-77",
]  # fmt: skip
TAIL = ["transports=nbdssl:nbd", "libdir=/opt/vmware-vix-disklib-distrib"]
LIMITS = ["multi-conn-mode=disable", "maxdata=2M", "port=8443"]


def test_mock_vddk_read_mode_argv_is_exact():
    """A backup's read of a snapshot (no real VDDK: the command line only)."""
    args = nbdkit_vddk_args(vddk("snapshot-7", "[ds1] web/web.vmdk"))
    argv = nbdkit_argv(Path("/s/nbd.sock"), Path("/s/nbdkit.pid"), args, readonly=True)
    assert argv == [
        "nbdkit", "--foreground", "--exit-with-parent", "--readonly", "--unix", "/s/nbd.sock",
        "--pidfile", "/s/nbdkit.pid", "--filter=cacheextents", *COMMON, "snapshot=snapshot-7",
        *TAIL, "file=[ds1] web/web.vmdk", *LIMITS,
    ]  # fmt: skip


def test_mock_vddk_write_mode_argv_is_exact():
    """A restore's write into the new VM's own disk: no -r, no snapshot=, no extents cache
    (no real VDDK: the command line only)."""
    args = nbdkit_vddk_args(vddk(None, "[ds1] new/new_disk0.vmdk"))
    argv = nbdkit_argv(Path("/s/nbd.sock"), Path("/s/nbdkit.pid"), args, readonly=False)
    assert argv == [
        "nbdkit", "--foreground", "--exit-with-parent", "--unix", "/s/nbd.sock",
        "--pidfile", "/s/nbdkit.pid", *COMMON, *TAIL, "file=[ds1] new/new_disk0.vmdk", *LIMITS,
    ]  # fmt: skip


def test_a_vddk_source_reads_a_snapshot_and_a_target_writes_without_one():
    with pytest.raises(ValueError, match="snapshot_moref is required"):
        vddk_source(vddk(None, "[ds1] new/new_disk0.vmdk"))
    with pytest.raises(ValueError, match="no snapshot_moref"):
        vddk_target(vddk("snapshot-7", "[ds1] web/web.vmdk"))


async def test_mock_vddk_target_starts_nbdkit_writable(tmp_path, monkeypatch):
    """A stand-in `nbdkit` (VDDK cannot run here) records the command vddk_target runs."""
    record = tmp_path / "argv"
    fake = tmp_path / "bin" / "nbdkit"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\necho "error: no VDDK" >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    with pytest.raises(SourceError, match=r"vddk target .*new_disk0\.vmdk.*no VDDK"):
        async with vddk_target(vddk(None, "[ds1] new/new_disk0.vmdk")):
            pass
    argv = record.read_text().splitlines()
    assert "--readonly" not in argv and "vddk" in argv
    assert "file=[ds1] new/new_disk0.vmdk" in argv
    assert not any(a.startswith("snapshot=") for a in argv)


def test_allocated_areas_become_an_extent_list_in_front_of_curl(tmp_path: Path):
    assert nbdkit_extentlist_args(None) == ([], [])
    path = write_extentlist(tmp_path / "extents", [(0, 65536), (1 << 20, 0), (2 << 20, 131072)])
    # one "offset length" line per area (empty ones dropped); gaps are holes to nbdkit
    assert Path(path).read_text() == "0 65536\n2097152 131072\n"
    assert nbdkit_extentlist_args(path) == (["--filter=extentlist"], [f"extentlist={path}"])
