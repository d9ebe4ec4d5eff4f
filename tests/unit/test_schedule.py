"""Backup schedules: what is accepted, how systemd is told, when the next run is due and when it is overdue."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from infra.schedule import GRACE, ScheduleError, backup_due, parse_schedule
from infra.spec import SpecError, parse_stack

#: A Saturday.
SAT = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "on_calendar", "next_run"),
    [
        ("daily", "*-*-* 00:00:00", datetime(2026, 12, 6, 0, 0, tzinfo=UTC)),
        ("daily 02:30", "*-*-* 02:30:00", datetime(2026, 12, 6, 2, 30, tzinfo=UTC)),
        ("hourly", "*-*-* *:00:00", datetime(2026, 12, 5, 11, 0, tzinfo=UTC)),
        ("weekly", "Mon *-*-* 00:00:00", datetime(2026, 12, 7, 0, 0, tzinfo=UTC)),
        ("weekly  Sun 03:00", "Sun *-*-* 03:00:00", datetime(2026, 12, 6, 3, 0, tzinfo=UTC)),
        ("monthly", "*-*-01 00:00:00", datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
        ("Mon..Wed,Fri 01:00", "Mon,Tue,Wed,Fri *-*-* 01:00:00", datetime(2026, 12, 7, 1, 0, tzinfo=UTC)),
        ("*-*-* 0/6:30:15", "*-*-* 00,06,12,18:30:15", datetime(2026, 12, 5, 12, 30, 15, tzinfo=UTC)),
        ("*-12-24 10:00", "*-12-24 10:00:00", datetime(2026, 12, 24, 10, 0, tzinfo=UTC)),
        ("02-29 04:00", "*-02-29 04:00:00", datetime(2028, 2, 29, 4, 0, tzinfo=UTC)),
        ("Sat *-*-05 10:00", "Sat *-*-05 10:00:00", datetime(2027, 6, 5, 10, 0, tzinfo=UTC)),
    ],
)
def test_a_schedule_is_rendered_for_systemd_and_knows_its_next_run(
    text: str, on_calendar: str, next_run: datetime
) -> None:
    schedule = parse_schedule(text)
    assert schedule.on_calendar == on_calendar
    assert schedule.next_run(SAT) == next_run
    assert parse_schedule(schedule.on_calendar).on_calendar == on_calendar


def test_a_run_at_the_very_moment_given_is_not_the_next_one() -> None:
    schedule = parse_schedule("daily 10:00")
    assert schedule.next_run(SAT) == SAT + timedelta(days=1)
    assert schedule.next_run(SAT - timedelta(seconds=1)) == SAT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a systemd calendar expression"),
        ("often", "'often' is neither a weekday"),
        ("Mon..Bla 01:00", "is neither a weekday"),
        ("Fri..Mon 01:00", "runs backwards"),
        ("2027-*-* 01:00", "names a year"),
        ("*-13-01 01:00", "month '13' is outside 1..12"),
        ("*-*-* 24:00", "hour '24' is outside 0..23"),
        ("*-*-* 01:60", "minute '60' is outside 0..59"),
        ("*-*-* 01:x0", "minute 'x0': expected a number"),
        ("*-*-* 01:0/0", "outside 0..59"),
        ("*-*-* *:*:00", "runs more than once an hour"),
        ("*-*-* 01:00,30", "runs more than once an hour"),
        ("*-02-30 01:00", "never runs"),
        ("*-*-* 01:00 UTC", "cannot read"),
        ("*-*-*-* 01:00", "expected year-month-day"),
        ("*-*-* 1:2:3:4", "expected hour:minute[:second]"),
        ("daily 1:2:3:4", "cannot read 'daily 1:2:3:4': write 'daily HH:MM'"),
        ("weekly 03:00", "cannot read 'weekly 03:00'"),
    ],
)
def test_a_schedule_a_backup_should_not_follow_is_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)):
        parse_schedule(text)


def test_a_backup_is_overdue_only_after_the_run_due_after_it_and_the_grace() -> None:
    schedule = parse_schedule("daily 02:30")
    last = "2026-12-04T02:31:00+00:00"
    due = datetime(2026, 12, 5, 2, 30, tzinfo=UTC)
    on_time = backup_due(schedule, last, due + GRACE)
    assert on_time == {
        "schedule": "daily 02:30",
        "on_calendar": "*-*-* 02:30:00",
        "due": "2026-12-05T02:30:00+00:00",
        "overdue": False,
    }
    assert backup_due(schedule, last, due + GRACE + timedelta(seconds=1))["overdue"] is True
    assert backup_due(schedule, None, due + timedelta(days=30)) == {**on_time, "due": None, "overdue": False}


def test_the_run_due_is_counted_in_the_hosts_time_zone_given_with_now() -> None:
    host_zone = timezone(timedelta(hours=1))
    schedule = parse_schedule("daily 02:30")
    found = backup_due(schedule, "2026-12-04T12:00:00+00:00", datetime(2026, 12, 5, 12, 0, tzinfo=host_zone))
    assert found["due"] == "2026-12-05T02:30:00+01:00"


def test_the_stack_file_declares_schedule_retention_and_folder() -> None:
    values = {
        "hubnode:site": "dic",
        "hubnode:backup": {"schedule": "daily 02:30", "keep": 14, "keepDays": 30, "output": "/srv/backups"},
    }
    policy = parse_stack("bk", values).backup
    assert policy is not None
    assert policy.schedule is not None
    assert policy.schedule.on_calendar == "*-*-* 02:30:00"
    assert (policy.keep, policy.keep_days, policy.output) == (14, 30, "/srv/backups")
    assert parse_stack("bk", {"hubnode:site": "dic"}).backup is None


@pytest.mark.parametrize(
    ("backup", "problem"),
    [
        ("daily", "hubnode:backup = 'daily': a mapping"),
        ({"schedule": "daily 25:00"}, "hubnode:backup.schedule = 'daily 25:00': hour '25' is outside 0..23"),
        ({"schedule": 3}, "hubnode:backup.schedule = 3: expected a systemd calendar expression"),
        ({"keep": 0}, "hubnode:backup.keep = 0: a whole number above 0"),
        ({"keep": True}, "hubnode:backup.keep = True: a whole number above 0"),
        ({"keepDays": "7"}, "hubnode:backup.keepDays = '7': a whole number above 0"),
        ({"output": ""}, "hubnode:backup.output = '': a folder"),
        ({"retain": 3}, "hubnode:backup.retain = 3: unknown key; known: schedule, keep, keepDays, output"),
    ],
)
def test_a_wrong_backup_policy_is_named_by_its_key(backup: object, problem: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_stack("bk", {"hubnode:site": "dic", "hubnode:backup": backup})
    assert problem in str(error.value)
