"""`sendense policy run|check|list`: node.toml's backup policies (the timers run `run`)."""

from __future__ import annotations

import asyncio

import click
from rich.console import Console
from rich.table import Table

from sendense_tools.api.cli import echo_json, json_option
from sendense_tools.config import load_config
from sendense_tools.errors import ConfigError, SendenseError
from sendense_tools.node.config import NodeConfig
from sendense_tools.node.service import vcenter_params
from sendense_tools.policy.model import Policy
from sendense_tools.policy.resolve import Resolved, resolve_all
from sendense_tools.policy.runner import Hub, Outcome, run_policy
from sendense_tools.vsphere.connection import VsphereSession

config_option = click.option(
    "--config",
    "config_path",
    default="/etc/sendense/node.toml",
    show_default=True,
    help="node.toml",
)


class BadConfig(click.ClickException):
    """node.toml cannot be used: bad usage as far as the timer goes (exit 2)."""

    exit_code = 2


def _load(config_path: str) -> NodeConfig:
    try:
        return load_config(config_path, NodeConfig)
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None


def _resolve(cfg: NodeConfig) -> dict[str, Resolved]:
    session = VsphereSession.connect(vcenter_params(cfg))
    try:
        return resolve_all(session, cfg.policies)
    finally:
        session.close()


def _outcome_table(name: str, outcomes: list[Outcome]) -> Table:
    table = Table(title=f"policy {name}")
    for col in ("vm", "backup", "status", "mode"):
        table.add_column(col)
    table.add_column("why", overflow="fold")
    for o in outcomes:
        why = o.skipped or o.error or ""
        table.add_row(o.vm, o.backup_id or "-", o.status, o.mode or "-", why)
    return table


@click.group()
def policy() -> None:
    """Backup policies of this node (node.toml [policies.<name>])."""


@policy.command("run")
@click.argument("name")
@config_option
@json_option
def run_cmd(name: str, config_path: str, as_json: bool) -> None:
    """Back up every VM of policy NAME through the hub, `concurrency` at a time."""
    cfg = _load(config_path)
    if name not in cfg.policies:
        raise BadConfig(f"policy {name!r} is not in {config_path}")
    resolved = _resolve(cfg)[name]
    hub = Hub(cfg.hub.api_url, cfg.hub.token_file or cfg.api.token_file)
    outcomes = asyncio.run(run_policy(name, cfg.policies[name], resolved, hub))
    if as_json:
        echo_json({"policy": name, "vms": [o.as_dict() for o in outcomes]})
    else:
        Console().print(_outcome_table(name, outcomes))
    if any(o.status not in ("completed", "skipped") for o in outcomes):
        raise click.exceptions.Exit(1)


@policy.command("check")
@config_option
def check_cmd(config_path: str) -> None:
    """Validate node.toml's policies offline (schedules by systemd-analyze)."""
    cfg = _load(config_path)
    click.echo(f"{config_path}: {len(cfg.policies)} policies OK: {', '.join(cfg.policies)}")


def _listing(name: str, p: Policy, r: Resolved | None, unreachable: str | None) -> dict:
    entry: dict = {"name": name, **p.model_dump()}
    if r is None:
        entry |= {"resolved": None, "unresolved": {}, "error": unreachable}
    else:
        entry |= {
            "resolved": [{"name": t.name, "moref": t.moref, "via": t.via} for t in r.targets],
            "unresolved": r.failures,
            "error": r.error,
        }
    return entry


@policy.command("list")
@config_option
@json_option
def list_cmd(config_path: str, as_json: bool) -> None:
    """The policies with schedule and keep counts, and their VMs as vCenter has them now."""
    cfg = _load(config_path)
    unreachable = None
    resolved: dict[str, Resolved] = {}
    if cfg.policies:
        try:
            resolved = _resolve(cfg)
        except SendenseError as exc:
            unreachable = f"VMs not resolved: {exc}"
    entries = [
        _listing(n, p, resolved.get(n), unreachable) for n, p in sorted(cfg.policies.items())
    ]
    if unreachable:
        click.echo(f"sendense: warning: {unreachable}", err=True)
    if as_json:
        echo_json(entries)
        return
    table = Table()
    for col in ("policy", "schedule", "full every", "keep last/daily/weekly/monthly"):
        table.add_column(col)
    table.add_column("VMs", overflow="fold")
    for e in entries:
        if e["resolved"] is None:
            # vCenter is out of reach (warned once): what the policy names, as given.
            vms = [*e["vms"], *([f"folder {e['folder']}"] if e["folder"] else [])]
        else:
            vms = [v["name"] for v in e["resolved"]]
            vms += [f"{given} ({why})" for given, why in e["unresolved"].items()]
        table.add_row(
            e["name"],
            f"{e['schedule']} (+{e['randomized_delay']} s)",
            str(e["full_every"]),
            "/".join(str(e[k]) for k in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")),
            "\n".join(vms) or e["error"] or "-",
        )
    Console().print(table)
