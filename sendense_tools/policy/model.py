"""One policy, as node.toml's `[policies.<name>]` and hub.toml's
`[nodes.<id>.policies.<name>]` hold it (the roles render both from the same
inventory data, `sendense_node_policies`, with the same defaults)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from sendense_tools.config import Strict
from sendense_tools.policy.calendar import check_schedule

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_NAME = re.compile(NAME_PATTERN)


class Policy(Strict):
    # VM names or morefs (vm-123); and/or every VM below a folder's inventory path
    # ("DC0/vm/prod"): the node resolves it at each run.
    vms: list[str] = []
    folder: str = ""
    # systemd OnCalendar; the timer adds up to randomized_delay seconds.
    schedule: str = "*-*-* 02:00:00"
    randomized_delay: int = Field(default=1800, ge=0, le=86400)
    # Every full_every-th point of a VM is a full (1: every backup is a full).
    full_every: int = Field(default=7, ge=1, le=1000)
    # Backups of this policy running at once.
    concurrency: int = Field(default=2, ge=1, le=101)
    # Grandfather-father-son: the newest keep_last points, the newest point of each
    # of the last keep_daily days (UTC) that have one, of keep_weekly ISO weeks and
    # of keep_monthly months. The newest point is always kept.
    keep_last: int = Field(default=1, ge=0, le=10000)
    keep_daily: int = Field(default=7, ge=0, le=10000)
    keep_weekly: int = Field(default=4, ge=0, le=10000)
    keep_monthly: int = Field(default=6, ge=0, le=10000)

    @field_validator("schedule")
    @classmethod
    def _systemd_accepts(cls, value: str) -> str:
        return check_schedule(value)

    @field_validator("vms")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if twice := sorted({v for v in value if value.count(v) > 1}):
            raise ValueError(f"VM {twice[0]} is listed twice")
        if any(not v.strip() for v in value):
            raise ValueError("a VM name is empty")
        return value

    @model_validator(mode="after")
    def _meaningful(self) -> Policy:
        if not self.vms and not self.folder:
            raise ValueError("names no VM: give vms, a folder, or both")
        if not (self.keep_last or self.keep_daily or self.keep_weekly or self.keep_monthly):
            raise ValueError("keeps nothing: at least one of keep_last/daily/weekly/monthly > 0")
        return self


def check_policies(policies: dict[str, Policy]) -> dict[str, Policy]:
    """One node's policies: names well-formed, and no VM or folder in two of them
    (its backups would run twice and its retention would be ambiguous)."""
    seen: dict[str, str] = {}
    for name, policy in sorted(policies.items()):
        if not _NAME.match(name):
            raise ValueError(f"policy name {name!r} must be 1-32 of a-z, 0-9, '_', '-'")
        for key in [*policy.vms, *([f"folder {policy.folder}"] if policy.folder else [])]:
            if key in seen:
                raise ValueError(f"{key} is in two policies: {seen[key]} and {name}")
            seen[key] = name
    folders = [(p.folder.strip("/"), n) for n, p in sorted(policies.items()) if p.folder]
    for a, name_a in folders:
        for b, name_b in folders:
            if b.startswith(f"{a}/"):
                raise ValueError(f"folder {b} of policy {name_b} is inside {a} of policy {name_a}")
    return policies
