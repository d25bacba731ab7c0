"""GFS selection with dated points over months, against restic's --keep-* semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sendense_tools.hub.retention import Dated, keep_reasons, parse_time
from sendense_tools.policy.model import Policy


def policy(**keeps: int) -> Policy:
    counts = {"keep_last": 0, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0} | keeps
    return Policy(vms=["web01"], **counts)


def points(*stamps: str) -> list[Dated]:
    """Points named by their time, newest first as the store lists them."""
    dated = [Dated(s, parse_time(s)) for s in stamps]
    return sorted(dated, key=lambda p: p.created_at, reverse=True)


# Two a day at 02:00 and 14:00 UTC, every day from 2026-09-01 to 2026-12-01.
DAYS = [datetime(2026, 9, 1, tzinfo=UTC) + timedelta(days=i) for i in range(92)]
HISTORY = points(*(f"{d:%Y-%m-%d}T{h:02d}:00:00+00:00" for d in DAYS for h in (2, 14)))


def test_keep_last_keeps_the_newest_n_and_the_newest_is_always_kept():
    kept = keep_reasons(HISTORY, policy(keep_last=3))
    assert kept == {
        "2026-12-01T14:00:00+00:00": ["last", "newest"],
        "2026-12-01T02:00:00+00:00": ["last"],
        "2026-11-30T14:00:00+00:00": ["last"],
    }


def test_daily_keeps_each_days_newest_point_for_the_newest_n_days():
    kept = keep_reasons(HISTORY, policy(keep_daily=7))
    assert sorted(kept) == [f"2026-11-{d}T14:00:00+00:00" for d in range(25, 31)] + [
        "2026-12-01T14:00:00+00:00"
    ]
    assert kept["2026-11-25T14:00:00+00:00"] == ["daily 2026-11-25"]


def test_days_without_points_do_not_use_up_a_daily_slot():
    # Like restic: the newest N days THAT HAVE a point, not the last N calendar days.
    sparse = points(
        "2026-12-01T02:00:00+00:00", "2026-11-20T02:00:00+00:00", "2026-11-20T01:00:00+00:00",
        "2026-10-03T05:00:00+00:00", "2026-09-01T05:00:00+00:00",
    )  # fmt: skip
    kept = keep_reasons(sparse, policy(keep_daily=3))
    assert kept == {
        "2026-12-01T02:00:00+00:00": ["daily 2026-12-01", "newest"],
        "2026-11-20T02:00:00+00:00": ["daily 2026-11-20"],
        "2026-10-03T05:00:00+00:00": ["daily 2026-10-03"],
    }


def test_weekly_buckets_are_iso_weeks_and_monthly_calendar_months():
    kept = keep_reasons(HISTORY, policy(keep_weekly=3, keep_monthly=4))
    # 2026-12-01 is a Tuesday of ISO week 49; the week before ends Sunday 2026-11-29.
    assert kept["2026-12-01T14:00:00+00:00"] == ["weekly 2026-W49", "monthly 2026-12", "newest"]
    assert kept["2026-11-29T14:00:00+00:00"] == ["weekly 2026-W48"]
    assert kept["2026-11-22T14:00:00+00:00"] == ["weekly 2026-W47"]
    assert kept["2026-11-30T14:00:00+00:00"] == ["monthly 2026-11"]
    assert kept["2026-10-31T14:00:00+00:00"] == ["monthly 2026-10"]
    assert kept["2026-09-30T14:00:00+00:00"] == ["monthly 2026-09"]
    assert len(kept) == 6


def test_iso_week_of_early_january_belongs_to_the_previous_year():
    kept = keep_reasons(points("2027-01-01T10:00:00+00:00"), policy(keep_weekly=1))
    assert kept == {"2027-01-01T10:00:00+00:00": ["weekly 2026-W53", "newest"]}


def test_a_point_holds_every_reason_that_keeps_it():
    kept = keep_reasons(HISTORY, policy(keep_last=1, keep_daily=1, keep_weekly=1, keep_monthly=1))
    assert kept == {
        "2026-12-01T14:00:00+00:00": [
            "last", "daily 2026-12-01", "weekly 2026-W49", "monthly 2026-12", "newest",
        ]
    }  # fmt: skip


def test_days_are_utc_days_whatever_zone_the_record_was_written_in():
    # 23:30 at UTC-05:00 is 04:30 the next day in UTC.
    late = points("2026-11-30T23:30:00-05:00", "2026-12-01T01:00:00+00:00")
    kept = keep_reasons(late, policy(keep_daily=2))
    assert kept == {"2026-11-30T23:30:00-05:00": ["daily 2026-12-01", "newest"]}


def test_no_points_keep_nothing():
    assert keep_reasons([], policy(keep_last=5)) == {}


@pytest.mark.parametrize(
    ("count", "expected"),
    # The history spans 92 days, ISO weeks 2026-W36..W49 (14) and 4 months.
    [(1, (1, 1, 1)), (5, (5, 5, 4)), (30, (30, 14, 4))],
)
def test_gfs_counts_bound_what_is_kept_by_the_buckets_that_have_points(count, expected):
    kept = keep_reasons(HISTORY, policy(keep_daily=count, keep_weekly=count, keep_monthly=count))
    found = tuple(
        sum(r.startswith(kind) for reasons in kept.values() for r in reasons)
        for kind in ("daily", "weekly", "monthly")
    )
    assert found == expected
