"""`python -m sendense_tools.lab seed ...`: the lab's VM seeding command."""

from __future__ import annotations

import json
import sys

import click

from sendense_tools.config import read_secret
from sendense_tools.errors import SendenseError
from sendense_tools.lab.seed import parse_sizes, seed_vm, seeded_as_dicts
from sendense_tools.vsphere.connection import VcenterParams, VsphereSession


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """Lab helpers (vCenter simulator)."""


@lab.command()
@click.option("--vcenter", "vcenter_url", required=True, help="https://HOST:PORT[/sdk]")
@click.option("--vm", "vm_name", required=True, help="VM name or moref to seed")
@click.option("--disks", required=True, help="disk sizes, e.g. 64M,32M,16M")
@click.option("--user", default="user", show_default=True)
@click.option("--password", default=None, help="password (default: the simulator's 'pass')")
@click.option("--password-file", type=click.Path(dir_okay=False), default=None)
@click.option("--insecure", is_flag=True, help="skip certificate verification (lab only)")
@click.option("--thumbprint", default="", help="pinned SHA-1 thumbprint of vCenter")
@click.option("--seed", default="sendense", show_default=True, help="content seed")
@click.option("--upload", is_flag=True, help="PUT through /folder even if the datastore is local")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def seed(
    vcenter_url: str,
    vm_name: str,
    disks: str,
    user: str,
    password: str | None,
    password_file: str | None,
    insecure: bool,
    thumbprint: str,
    seed: str,
    upload: bool,
    as_json: bool,
) -> None:
    """Replace the VM's disks by new ones of the given sizes, filled with known content."""
    try:
        sizes = parse_sizes(disks)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--disks") from None
    if password_file:
        password = read_secret(password_file, "vCenter password")
    params = VcenterParams(
        vcenter_url, user, password or "pass", thumbprint=thumbprint, insecure=insecure
    )
    session = VsphereSession.connect(params)
    try:
        result = seed_vm(session, vm_name, sizes, seed=seed, upload=upload)
    finally:
        session.close()
    if as_json:
        click.echo(json.dumps({"vm": vm_name, "disks": seeded_as_dicts(result)}, indent=2))
    else:
        for d in result:
            click.echo(f"{d.disk_id}  {d.capacity:>12}  {d.sha256}  {d.file}")


def main() -> None:
    try:
        lab.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"sendense-lab: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except SendenseError as exc:
        click.echo(f"sendense-lab: error: {exc}", err=True)
        sys.exit(1)
