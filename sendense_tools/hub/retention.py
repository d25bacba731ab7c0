"""Which restore points a policy keeps, and why: grandfather-father-son in UTC, the way
restic's --keep-last/--keep-daily/--keep-weekly/--keep-monthly count.

Points are taken newest first. `keep_last` keeps the first N; `keep_daily` keeps the
newest point of each of the newest N days that have a point (a day without one does
not use up a slot), and so on for ISO weeks and calendar months. The newest point is
always kept, whatever the counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sendense_tools.policy.model import Policy


@dataclass(frozen=True)
class Dated:
    id: str
    created_at: datetime


def _day(t: datetime) -> str:
    return f"daily {t:%Y-%m-%d}"


def _week(t: datetime) -> str:
    year, week, _ = t.isocalendar()
    return f"weekly {year}-W{week:02d}"


def _month(t: datetime) -> str:
    return f"monthly {t:%Y-%m}"


def parse_time(text: str) -> datetime:
    """A record's timestamp in UTC (records without a zone were written in UTC)."""
    t = datetime.fromisoformat(text)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def keep_reasons(points: Sequence[Dated], policy: Policy) -> dict[str, list[str]]:
    """Point id -> why it is kept, for the kept points only; `points` newest first."""
    reasons: dict[str, list[str]] = {}

    def keep(point: Dated, reason: str) -> None:
        reasons.setdefault(point.id, []).append(reason)

    for point in points[: policy.keep_last]:
        keep(point, "last")
    buckets: list[tuple[int, Callable[[datetime], str]]] = [
        (policy.keep_daily, _day),
        (policy.keep_weekly, _week),
        (policy.keep_monthly, _month),
    ]
    for count, bucket in buckets:
        seen: set[str] = set()
        for point in points:
            if len(seen) >= count:
                break
            key = bucket(point.created_at.astimezone(UTC))
            if key not in seen:
                seen.add(key)
                keep(point, key)
    if points:
        keep(points[0], "newest")
    return reasons
