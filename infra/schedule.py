"""When a node's backups run: systemd calendar expressions, their next run, and whether a backup is overdue.

One reading of the schedule serves the timer `hubnode schedule` renders (its `OnCalendar=`) and the check
`hubnode status` makes, so the two never disagree. The subset of systemd's `OnCalendar` syntax read here
is what a backup needs: optional weekdays, a date (year always `*`: a backup schedule repeats) and a time,
each field `*` or values, `a..b` ranges and `a/step` repetitions; plus `hourly`, `daily`, `weekly`,
`monthly` and the shorter `daily 02:30` / `weekly Sun 03:00`. A backup stops the node, so it runs at most
once an hour: minute and second are single values. Times are the host's wall-clock time, as systemd's are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

WEEKDAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: systemd's own shorthands, in its normalised form.
SHORTHANDS: dict[str, str] = {
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
}
#: How late a run may be before `status` calls the backup overdue: the run itself stops and restarts the node.
GRACE = timedelta(hours=1)
#: Every weekday meets every date within 28 years (the Gregorian calendar's cycle, 2001-2099).
_SEARCH_DAYS = 28 * 366
_FRIENDLY = re.compile(r"(?P<every>daily|weekly)(?: (?P<day>[A-Z][a-z]{2}))? (?P<time>\d{1,2}:\d{2})")
_ITEM = re.compile(r"(?P<first>\d+)(?:\.\.(?P<last>\d+))?(?:/(?P<step>\d+))?")
_HELP = "a systemd calendar expression (e.g. 'daily 02:30', 'Mon..Fri *-*-* 01:00', 'weekly Sun 03:00', 'daily')"


class ScheduleError(ValueError):
    """A schedule that cannot be read, or that a backup should not follow; the message says why."""


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: `None` in a field means any value."""

    text: str
    weekdays: frozenset[int] | None
    months: frozenset[int] | None
    days: frozenset[int] | None
    hours: frozenset[int] | None
    minute: int
    second: int

    @property
    def on_calendar(self) -> str:
        """The schedule in systemd's normalised `OnCalendar=` form."""
        weekdays = ",".join(WEEKDAYS[d] for d in sorted(self.weekdays)) + " " if self.weekdays is not None else ""
        date = f"*-{_field(self.months)}-{_field(self.days)}"
        return f"{weekdays}{date} {_field(self.hours)}:{self.minute:02d}:{self.second:02d}"

    def next_run(self, after: datetime) -> datetime:
        """The first run strictly after `after`, in `after`'s time zone (wall-clock time, as systemd counts)."""
        day = after.date()
        for _ in range(_SEARCH_DAYS):
            if self._runs_on(day.weekday(), day.month, day.day):
                for hour in sorted(self.hours) if self.hours is not None else range(24):
                    run = datetime.combine(day, time(hour, self.minute, self.second), after.tzinfo)
                    if run > after:
                        return run
            day += timedelta(days=1)
        raise ScheduleError(f"{self.text!r} never runs: no date matches it")

    def _runs_on(self, weekday: int, month: int, day: int) -> bool:
        return all(
            allowed is None or value in allowed
            for allowed, value in ((self.weekdays, weekday), (self.months, month), (self.days, day))
        )


def parse_schedule(text: str) -> Schedule:
    """Read a schedule; `ScheduleError` saying what is wrong with it otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError(f"expected {_HELP}")
    spoken = " ".join(text.split())
    expression = SHORTHANDS.get(spoken) or _friendly(spoken) or spoken
    parts = expression.split(" ")
    if parts[0] in SHORTHANDS:
        raise ScheduleError(
            f"cannot read {text!r}: write 'daily HH:MM', 'weekly Sun HH:MM', or {', '.join(SHORTHANDS)} alone"
        )
    weekdays = None
    if parts and parts[0][:1].isalpha():
        weekdays = _weekdays(parts.pop(0))
    date = parts.pop(0) if parts and "-" in parts[0] else "*-*-*"
    clock = parts.pop(0) if parts and ":" in parts[0] else "00:00:00"
    if parts or not date or not clock:
        raise ScheduleError(f"cannot read {text!r}: expected {_HELP}")
    months, days = _date(date, text)
    hours, minutes, seconds = _clock(clock, text)
    if minutes is None or len(minutes) != 1 or seconds is None or len(seconds) != 1:
        raise ScheduleError(
            f"{text!r} runs more than once an hour; a backup stops the node, so give one minute and second"
        )
    schedule = Schedule(text, weekdays, months, days, hours, min(minutes), min(seconds))
    schedule.next_run(datetime(2001, 1, 1))  # noqa: DTZ001 -- wall-clock time; raises when no date ever matches
    return schedule


def _friendly(spoken: str) -> str | None:
    """`daily 02:30` and `weekly Sun 03:00` as systemd writes them."""
    found = _FRIENDLY.fullmatch(spoken)
    if found is None:
        return None
    if (found["every"] == "weekly") != (found["day"] is not None):
        return None
    return f"{found['day'] + ' ' if found['day'] else ''}*-*-* {found['time']}"


def _weekdays(text: str) -> frozenset[int]:
    found: set[int] = set()
    for item in text.split(","):
        first, _, last = item.partition("..")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ScheduleError(
                f"{item!r} is neither a weekday ({', '.join(WEEKDAYS)}, or a range like Mon..Fri)"
                f" nor one of {', '.join(SHORTHANDS)}"
            )
        start, end = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        if end < start:
            raise ScheduleError(f"weekday range {item!r} runs backwards")
        found.update(range(start, end + 1))
    return frozenset(found)


def _date(text: str, whole: str) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    fields = text.split("-")
    if len(fields) == 2:
        fields.insert(0, "*")
    if len(fields) != 3:
        raise ScheduleError(f"cannot read the date {text!r} of {whole!r}: expected year-month-day, e.g. *-*-01")
    if fields[0] != "*":
        raise ScheduleError(f"{whole!r} names a year; a backup schedule repeats, so write the year as *")
    return _values(fields[1], 1, 12, "month"), _values(fields[2], 1, 31, "day")


def _clock(text: str, whole: str) -> tuple[frozenset[int] | None, frozenset[int] | None, frozenset[int] | None]:
    fields = text.split(":")
    if len(fields) == 2:
        fields.append("00")
    if len(fields) != 3:
        raise ScheduleError(f"cannot read the time {text!r} of {whole!r}: expected hour:minute[:second], e.g. 02:30")
    return _values(fields[0], 0, 23, "hour"), _values(fields[1], 0, 59, "minute"), _values(fields[2], 0, 59, "second")


def _values(text: str, lowest: int, highest: int, what: str) -> frozenset[int] | None:
    """A field's values: None for `*`; else values, ranges `a..b` and repetitions `a/step`, within bounds."""
    if text == "*":
        return None
    found: set[int] = set()
    for item in text.split(","):
        matched = _ITEM.fullmatch(item)
        if matched is None:
            raise ScheduleError(f"{what} {item!r}: expected a number, a range a..b or a repetition a/step")
        first = int(matched["first"])
        last = int(matched["last"]) if matched["last"] else (highest if matched["step"] else first)
        step = int(matched["step"] or 1)
        if not lowest <= first <= last <= highest or step < 1:
            raise ScheduleError(f"{what} {item!r} is outside {lowest}..{highest}")
        found.update(range(first, last + 1, step))
    return frozenset(found)


def _field(values: frozenset[int] | None) -> str:
    return "*" if values is None else ",".join(f"{value:02d}" for value in sorted(values))


def backup_due(schedule: Schedule, last_created: str | None, now: datetime) -> dict[str, object]:
    """What `status` says of a scheduled node: its schedule, the run due after its last backup, overdue or not.

    With no backup yet nothing is due: the timer may not have had its first run.
    """
    due = schedule.next_run(datetime.fromisoformat(last_created).astimezone(now.tzinfo)) if last_created else None
    return {
        "schedule": schedule.text,
        "on_calendar": schedule.on_calendar,
        "due": due.isoformat(timespec="seconds") if due else None,
        "overdue": due is not None and now > due + GRACE,
    }
