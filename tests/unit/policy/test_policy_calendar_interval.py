"""How long a schedule lets a VM wait, as systemd-analyze reads the OnCalendar expression."""

from __future__ import annotations

import pytest

from sendense_tools.policy.calendar import ScheduleError, check_schedule, interval

DAY = 86400


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("daily", DAY),
        ("*-*-* 02:00:00", DAY),
        ("*:0/15", 900),
        # A weekday schedule waits over the weekend: the alert must allow for it.
        ("Mon..Fri 02:00", 3 * DAY),
        ("Sat 03:00", 7 * DAY),
    ],
)
def test_the_longest_wait_between_elapses(expression, seconds):
    assert interval(expression) == seconds


def test_a_schedule_that_fires_once_has_no_interval():
    assert interval("2020-01-01 00:00:00") is None


@pytest.mark.parametrize("expression", ["bogus 99", "", "daily\nhourly", "*-*-* 25:00"])
def test_systemd_refuses_what_is_not_a_calendar(expression):
    with pytest.raises(ScheduleError, match="is not a systemd OnCalendar expression"):
        check_schedule(expression)
