"""`sendense backup` commands: `run` one backup by hand; start/list/show/verify via the hub."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from rich.console import Console

from sendense_tools.backup import hubcli, prunecli
from sendense_tools.backup.executor import (
    BackupOptions,
    BackupOutcome,
    Hooks,
    backup_vm,
)
from sendense_tools.backup.mode import PreviousDisk
from sendense_tools.backup.progress import DiskBars, summary_table
from sendense_tools.backup.targets import TargetMismatch
from sendense_tools.config import read_secret
from sendense_tools.errors import SendenseError
from sendense_tools.nbd.buffers import DEFAULT_BUDGET, MIN_BUDGET, PROCESS_BUDGET, configure
from sendense_tools.nbd.endpoint import NbdEndpoint, parse_nbd_targets, targets_from_host_port
from sendense_tools.vsphere.connection import (
    VcenterParams,
    VsphereError,
    VsphereSession,
    normalize_thumbprint,
)
from sendense_tools.vsphere.inventory import describe_vm

T = TypeVar("T")


@click.group()
def backup() -> None:
    """VM backups: run one here, or ask the hub (start, list, show, verify)."""


def run_until_signal(make: Callable[[], Awaitable[T]]) -> T:
    """Run `make()` with SIGTERM/SIGINT cancelling it, so its `finally` blocks clean up."""

    async def main() -> T:
        task = asyncio.ensure_future(make())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise SendenseError("backup interrupted; the snapshot was removed") from None


def _parse_targets(text: str) -> dict[str, NbdEndpoint]:
    try:
        return parse_nbd_targets(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--nbd-targets") from None


def parse_changed_since(text: str) -> dict[str, PreviousDisk]:
    """ "disk0=ID,disk1=ID" -> the previous point's change id per disk (ids hold no comma)."""
    out: dict[str, PreviousDisk] = {}
    for item in text.split(","):
        disk_id, sep, change_id = item.partition("=")
        disk_id, change_id = disk_id.strip(), change_id.strip()
        if not sep or not disk_id or not change_id:
            raise click.BadParameter(f"{item.strip()!r} is not DISK=CHANGE_ID",
                                     param_hint="--changed-since")  # fmt: skip
        if disk_id in out:
            raise click.BadParameter(f"{disk_id} is named twice", param_hint="--changed-since")
        out[disk_id] = PreviousDisk(change_id)
    return out


def _host_port_targets(
    params: VcenterParams, vm: str, host: str, port: int
) -> dict[str, NbdEndpoint]:
    """The seed's form: disk N of the VM on port P+N (needs the VM's disk list)."""
    session = VsphereSession.connect(params)
    try:
        disk_ids = [d.disk_id for d in describe_vm(session, vm).disks]
    finally:
        session.close()
    try:
        return targets_from_host_port(host, port, disk_ids)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--nbd-port") from None


@backup.command("run")
@click.option("--vcenter", "vcenter_url", required=True, help="https://HOST[:PORT][/sdk]")
@click.option("--vm", required=True, help="VM name or moref")
@click.option("--nbd-targets", default=None, help="disk0:nbd://H:P/EXPORT,disk1:...")
@click.option("--nbd-host", default=None, help="with --nbd-port: disk N on port P+N")
@click.option("--nbd-port", type=click.IntRange(1, 65535), default=None)
@click.option(
    "--transport", type=click.Choice(["https", "vddk", "file"]), default="https", show_default=True
)
@click.option("--user", default="administrator@vsphere.local", show_default=True)
@click.option(
    "--password-file",
    default="/etc/sendense/vcenter-password",
    show_default=True,
    help="vCenter password, file mode 0600",
)
@click.option("--insecure", is_flag=True, help="do NOT verify vCenter's certificate (labs only)")
@click.option("--thumbprint", default="", help="pin vCenter's certificate SHA-1 (xx:xx:...)")
@click.option("--ca-file", default="", help="CA bundle to verify vCenter with")
@click.option("--connections", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--file-root", default="", help="file transport: DIR/<vm>/<disk>-flat.vmdk")
@click.option("--vddk-libdir", default="/opt/vmware-vix-disklib-distrib", show_default=True)
@click.option(
    "--retry-for",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="seconds to keep retrying dropped NBD connections",
)
@click.option(
    "--memory-budget",
    type=click.IntRange(min=MIN_BUDGET),
    default=DEFAULT_BUDGET,
    show_default=True,
    help="bytes of copy buffers all disks share, like node.toml's [backup] memory_budget",
)
@click.option("--quiesce", is_flag=True, help="quiesce the guest file systems for the snapshot")
@click.option(
    "--mode",
    type=click.Choice(["auto", "full", "incremental"]),
    default="auto",
    show_default=True,
    help="incremental: fail rather than fall back to a full",
)
@click.option(
    "--changed-since",
    default=None,
    help="disk0=CHANGE_ID,...: copy only what changed since; the targets must be overlays",
)
@click.option("--job-id", default=None, help="names the snapshot sendense-<job-id>")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def run_cmd(
    vcenter_url: str,
    vm: str,
    nbd_targets: str | None,
    nbd_host: str | None,
    nbd_port: int | None,
    transport: str,
    user: str,
    password_file: str,
    insecure: bool,
    thumbprint: str,
    ca_file: str,
    connections: int,
    file_root: str,
    vddk_libdir: str,
    retry_for: float,
    memory_budget: int,
    quiesce: bool,
    mode: str,
    changed_since: str | None,
    job_id: str | None,
    as_json: bool,
) -> None:
    """Back up every disk of VM from ONE snapshot to NBD targets."""
    if insecure and thumbprint:
        raise click.UsageError("--insecure and --thumbprint exclude each other")
    if thumbprint:
        try:
            normalize_thumbprint(thumbprint)
        except VsphereError as exc:
            raise click.BadParameter(str(exc), param_hint="--thumbprint") from None
    if nbd_targets and (nbd_host or nbd_port):
        raise click.UsageError("give --nbd-targets or --nbd-host/--nbd-port, not both")
    if not nbd_targets and not (nbd_host and nbd_port):
        raise click.UsageError("give --nbd-targets, or both --nbd-host and --nbd-port")
    # Malformed targets are bad usage: found before touching vCenter.
    targets = _parse_targets(nbd_targets) if nbd_targets else {}
    previous = parse_changed_since(changed_since) if changed_since else None
    if mode == "incremental" and previous is None:
        raise click.UsageError("--mode incremental needs --changed-since")
    password = read_secret(password_file, "vCenter password")
    params = VcenterParams(vcenter_url, user, password, thumbprint, insecure, ca_file)
    if not targets:
        targets = _host_port_targets(params, vm, nbd_host or "", nbd_port or 0)
    options = BackupOptions(
        transport=transport,  # type: ignore[arg-type]
        connections_per_disk=connections,
        quiesce=quiesce,
        file_root=file_root,
        vddk_libdir=vddk_libdir,
        password_file=os.path.abspath(password_file),
        retry_for=retry_for,
    )
    configure(memory_budget)
    job = job_id or uuid.uuid4().hex[:12]
    with DiskBars(enabled=not as_json) as bars:
        hooks = Hooks(
            on_progress=lambda p: bars.update(p.disk_id, p.bytes_done, p.bytes_total),
            on_vm=lambda info: [bars.add(d.disk_id, d.capacity) for d in info.disks],
        )
        try:
            outcome: BackupOutcome = run_until_signal(
                lambda: backup_vm(
                    params,
                    vm,
                    targets,
                    job,
                    options,
                    hooks,
                    mode=mode,  # type: ignore[arg-type]
                    changed_since=previous,
                )
            )
        except TargetMismatch as exc:
            raise click.UsageError(str(exc)) from None
    _print_outcome(outcome, as_json)


def _print_outcome(outcome: BackupOutcome, as_json: bool) -> None:
    data = outcome.as_dict()
    data["copy_buffers"] = {"budget": PROCESS_BUDGET.total, "peak": PROCESS_BUDGET.peak_bytes}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    console = Console()
    console.print(summary_table(data["disks"], f"{outcome.vm} ({outcome.moref})"))
    why = f" ({outcome.mode_reason})" if outcome.mode_reason else ""
    console.print(f"{outcome.mode}{why}")
    console.print(
        f"snapshot {outcome.snapshot} created and removed; {len(outcome.disks)} disk(s) "
        f"in {outcome.seconds:.1f} s"
    )
    buffers = data["copy_buffers"]
    console.print(
        f"copy buffers: peak {buffers['peak'] >> 20} MiB of a {buffers['budget'] >> 20} MiB budget"
    )
    if outcome.leftovers_removed:
        console.print(f"removed leftover snapshot(s): {', '.join(outcome.leftovers_removed)}")


hubcli.register(backup)
prunecli.register(backup)
