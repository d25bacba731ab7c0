"""One run of a policy: a backup per VM through the hub API, at most `concurrency` at
a time, each followed to its end. A VM whose previous backup is still running is
skipped, never queued behind it: the next run of the timer picks it up.

Every event is one plain line on stderr (journald adds the time and the unit).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass

import click

from sendense_tools.api.cli import chain_of, follow, list_path, records_of
from sendense_tools.api.client import ApiCallError, ApiClient
from sendense_tools.config import read_secret
from sendense_tools.errors import SendenseError
from sendense_tools.policy.model import Policy
from sendense_tools.policy.resolve import Resolved


class PolicyRefused(SendenseError):
    """The hub does not know this node's policy: no VM of it can be backed up."""


@dataclass
class Outcome:
    vm: str
    backup_id: str | None = None
    status: str = "failed"  # completed, failed, cancelled, skipped
    mode: str | None = None  # what the run asked for: "full" or "auto"
    skipped: str | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Hub:
    url: str
    token_file: str


class _Run:
    def __init__(self, name: str, policy: Policy, hub: Hub, api: ApiClient) -> None:
        self.name = name
        self.policy = policy
        self.hub = hub
        self.api = api
        self.slots = asyncio.Semaphore(policy.concurrency)
        self.refused: str | None = None

    def log(self, vm: str, text: str) -> None:
        click.echo(f"policy {self.name}: {vm} {text}", err=True)

    async def _newest(self, vm: str, status: str) -> dict | None:
        path = list_path("/api/v1/backups", (("vm", vm), ("status", status), ("limit", "1")))
        found = records_of(await self.api.get(path), "backups")
        return found[0] if found else None

    async def _busy(self, vm: str) -> str | None:
        for status in ("running", "pending"):
            if record := await self._newest(vm, status):
                return record["id"]
        return None

    async def _mode(self, vm: str) -> str:
        """full once the newest point's chain holds full_every points; else the hub's auto."""
        newest = await self._newest(vm, "completed")
        if newest is None:
            return "auto"
        chain = await chain_of(self.api, newest["id"])
        return "full" if len(chain) >= self.policy.full_every else "auto"

    def _skip(self, out: Outcome, active: str | None) -> Outcome:
        out.status = "skipped"
        # No id: the hub is still starting the other backup (409 before its record exists).
        out.skipped = f"backup {active} still running" if active else "a backup still starting"
        self.log(out.vm, f"skipped: {out.skipped}")
        return out

    async def backup(self, vm: str) -> Outcome | None:
        """The VM's outcome; None when the hub refused the policy (reported once, by run)."""
        async with self.slots:
            if self.refused:
                return None
            out = Outcome(vm)
            try:
                if active := await self._busy(vm):
                    return self._skip(out, active)
                out.mode = await self._mode(vm)
                body = {"vm": vm, "mode": out.mode, "policy": self.name}
                try:
                    record = await self.api.post("/api/v1/backups", body)
                except ApiCallError as exc:
                    if exc.code == "vm_busy":
                        return self._skip(out, await self._busy(vm))
                    if exc.code == "unknown_policy":
                        self.refused = str(exc)
                        return None
                    raise
                out.backup_id = record["id"]
                self.log(vm, f"started: backup {out.backup_id} (mode {out.mode})")
                path = f"/api/v1/backups/{out.backup_id}"
                record = await follow(self.hub.url, self.hub.token_file, path, lambda _: None)
            except SendenseError as exc:
                out.error = str(exc)
                self.log(vm, f"failed: {out.error}")
                return out
            out.status = record["status"]
            out.error = record.get("error")
            if out.status == "completed":
                self.log(vm, f"completed: backup {out.backup_id} ({record.get('mode')})")
            else:
                self.log(vm, f"{out.status}: backup {out.backup_id}: {out.error or 'no reason'}")
            return out


async def run_policy(name: str, policy: Policy, resolved: Resolved, hub: Hub) -> list[Outcome]:
    """The outcome of every VM the policy names, in its order (unresolved ones failed)."""
    if resolved.error:
        raise SendenseError(f"policy {name}: {resolved.error}")
    failed = []
    for given, reason in resolved.failures.items():
        click.echo(f"policy {name}: {given} failed: {reason}", err=True)
        failed.append(Outcome(given, error=reason))
    async with ApiClient(hub.url, read_secret(hub.token_file, "hub API token")) as api:
        run = _Run(name, policy, hub, api)
        outcomes = await asyncio.gather(*(run.backup(t.name) for t in resolved.targets))
    if run.refused:
        raise PolicyRefused(f"policy {name}: the hub refuses it: {run.refused}")
    return failed + [o for o in outcomes if o is not None]
