"""`python -m sendense_tools.lab seed|change|snapshots|disks|destroy|summary`: the lab's
vCenter simulator helpers."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import click
from rich.console import Console

from sendense_tools.clirun import run
from sendense_tools.config import read_secret
from sendense_tools.lab.change import change_vm, changed_as_dicts
from sendense_tools.lab.restored import Restored
from sendense_tools.lab.seed import parse_sizes, seed_vm, seeded_as_dicts
from sendense_tools.lab.summary import DemoFacts, Incremental, render
from sendense_tools.lab.vms import destroy_vm, disk_files, files_as_dicts
from sendense_tools.vsphere.connection import VcenterParams, VsphereSession
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.snapshots import list_snapshots

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """Lab helpers (vCenter simulator)."""


def vcenter_options(f: Callable) -> Callable:
    """The vCenter options, handed to the command as one `vc: LabVcenter` (and `vm_name`)."""

    @functools.wraps(f)
    def command(
        vcenter_url: str,
        user: str,
        password: str | None,
        password_file: str | None,
        insecure: bool,
        thumbprint: str,
        **kwargs: object,
    ) -> object:
        vc = LabVcenter(vcenter_url, user, password, password_file, insecure, thumbprint)
        return f(vc, **kwargs)

    for option in reversed(
        [
            click.option("--vcenter", "vcenter_url", required=True, help="https://HOST:PORT[/sdk]"),
            click.option("--vm", "vm_name", required=True, help="VM name or moref"),
            click.option("--user", default="user", show_default=True),
            click.option("--password", default=None, help="default: the simulator's 'pass'"),
            click.option("--password-file", type=click.Path(dir_okay=False), default=None),
            click.option("--insecure", is_flag=True, help="skip certificate checks (lab only)"),
            click.option("--thumbprint", default="", help="pinned SHA-1 thumbprint of vCenter"),
        ]
    ):
        command = option(command)
    return command


def connect(
    vcenter_url: str, user: str, password: str | None, password_file: str | None, **tls: object
) -> VsphereSession:
    if password_file:
        password = read_secret(password_file, "vCenter password")
    return VsphereSession.connect(VcenterParams(vcenter_url, user, password or "pass", **tls))


@dataclass(frozen=True)
class LabVcenter:
    vcenter_url: str
    user: str
    password: str | None
    password_file: str | None
    insecure: bool
    thumbprint: str

    def call(self, fn: Callable[[VsphereSession], T]) -> T:
        """fn(session) on a new session, closed afterwards."""
        session = connect(
            self.vcenter_url, self.user, self.password, self.password_file,
            thumbprint=self.thumbprint, insecure=self.insecure,
        )  # fmt: skip
        try:
            return fn(session)
        finally:
            session.close()


def echo_disks(vm_name: str, as_json: bool, dicts: list, lines: Iterable[str]) -> None:
    if as_json:
        click.echo(json.dumps({"vm": vm_name, "disks": dicts}, indent=2))
    else:
        for line in lines:
            click.echo(line)


@lab.command()
@vcenter_options
@click.option("--disks", required=True, help="disk sizes, e.g. 64M,32M,16M")
@click.option("--seed", default="sendense", show_default=True, help="content seed")
@click.option("--upload", is_flag=True, help="PUT through /folder even if the datastore is local")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def seed(
    vc: LabVcenter,
    vm_name: str,
    disks: str,
    seed: str,
    upload: bool,
    as_json: bool,
) -> None:
    """Replace the VM's disks by new ones of the given sizes, filled with known content."""
    try:
        sizes = parse_sizes(disks)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--disks") from None
    result = vc.call(lambda s: seed_vm(s, vm_name, sizes, seed=seed, upload=upload))
    lines = (f"{d.disk_id}  {d.capacity:>12}  {d.sha256}  {d.file}" for d in result)
    echo_disks(vm_name, as_json, seeded_as_dicts(result), lines)


@lab.command()
@vcenter_options
@click.option("--seed", default="change", show_default=True, help="content seed")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def change(
    vc: LabVcenter,
    vm_name: str,
    seed: str,
    as_json: bool,
) -> None:
    """Write scattered blocks of every disk of the VM (in the simulator's datastore)."""
    result = vc.call(lambda s: change_vm(s, vm_name, seed=seed))
    lines = (f"{d.disk_id}  {d.changed_bytes:>12}  {d.sha256}" for d in result)
    echo_disks(vm_name, as_json, changed_as_dicts(result), lines)


@lab.command()
@vcenter_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def snapshots(
    vc: LabVcenter,
    vm_name: str,
    as_json: bool,
) -> None:
    """List the VM's snapshots (the demo checks that a backup left none)."""
    names = vc.call(lambda s: [n.name for n in list_snapshots(s, find_vm(s, vm_name))])
    click.echo(json.dumps({"vm": vm_name, "snapshots": names}) if as_json else "\n".join(names))


@lab.command()
@vcenter_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def disks(
    vc: LabVcenter,
    vm_name: str,
    as_json: bool,
) -> None:
    """SHA-256 of each attached disk of the VM, read from the simulator's datastore."""
    found = vc.call(lambda s: disk_files(s, vm_name))
    lines = (f"{d.disk_id}  {d.capacity:>12}  {d.sha256}  {d.file}" for d in found)
    echo_disks(vm_name, as_json, files_as_dicts(found), lines)


@lab.command()
@vcenter_options
def destroy(
    vc: LabVcenter,
    vm_name: str,
) -> None:
    """Remove the VM and its files if it exists (a demo's earlier restore, say)."""
    removed = vc.call(lambda s: destroy_vm(s, vm_name))
    click.echo(f"removed VM {vm_name}" if removed else f"no VM {vm_name} to remove")


@lab.command()
@click.option("--record", type=click.File(), required=True, help="backup record JSON")
@click.option("--seed", "seed_file", type=click.File(), required=True, help="seed JSON")
@click.option("--snapshots", type=click.File(), required=True, help="`snapshots --json` output")
@click.option("--exposure", multiple=True, help="UNIT=SCORE from systemd-analyze security")
@click.option("--incremental", type=click.File(), help="the incremental's record JSON")
@click.option("--changes", type=click.File(), help="`change --json` output")
@click.option("--verify", type=click.File(), help="`backup verify --json` of the incremental")
@click.option("--contents", type=click.File(), help="{disk id: SHA-256} of the incremental")
@click.option("--restore", type=click.File(), help="`restore show --json` of --record's point")
@click.option("--newest", default=None, help="the VM's newest point once the restore ended")
@click.option("--point-contents", type=click.File(), help="{disk id: SHA-256} of --record's point")
@click.option("--restored-disks", type=click.File(), help="`disks --json` of the restored VM")
def summary(
    record,
    seed_file,
    snapshots,
    exposure: tuple[str, ...],
    incremental,
    changes,
    verify,
    contents,
    restore,
    newest: str | None,
    point_contents,
    restored_disks,
) -> None:
    """Print the demo's summary tables; exit 1 unless every check passed."""
    try:
        scores = {u: float(s) for u, _, s in (e.partition("=") for e in exposure)}
    except ValueError:
        raise click.BadParameter("expected UNIT=SCORE", param_hint="--exposure") from None
    second = (incremental, changes, verify, contents)
    if any(second) and not all(second):
        raise click.UsageError("--incremental, --changes, --verify and --contents go together")
    third = (restore, newest, point_contents, restored_disks)
    if any(third) and not all(third):
        raise click.UsageError(
            "--restore, --newest, --point-contents and --restored-disks go together"
        )
    point = json.load(record)
    restored = None
    if restore:
        restored = Restored(
            json.load(restore), point, newest or "", json.load(point_contents),
            json.load(restored_disks),
        )  # fmt: skip
    facts = DemoFacts(
        record=point,
        seed=json.load(seed_file),
        snapshots_left=json.load(snapshots)["snapshots"],
        exposure=scores,
        incremental=Incremental(*(json.load(f) for f in second)) if incremental else None,
        restored=restored,
    )
    if not render(facts, Console()):
        sys.exit(1)


def main() -> None:
    run(lab, "sendense-lab")
