"""Schedules in the site config's `hook.nightly`: "HH:MM" or a five-field cron line, parsed
once (the config checks it when it is loaded; the hook's nightly loop runs it). Pure: no
clock, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_HHMM = re.compile(r"^(\d{1,2}):(\d{2})\Z")
# (name, low, high) of the five cron fields
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))  # fmt: skip
_SEARCH_DAYS = 366 * 5  # enough for "29 2 *" style schedules


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the set of allowed values of each cron field."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 is folded into 0)
    any_day: bool  # day-of-month field was "*"
    any_weekday: bool  # day-of-week field was "*"

    def _day_matches(self, moment: datetime) -> bool:
        in_month = moment.day in self.days
        in_week = (moment.isoweekday() % 7) in self.weekdays
        # cron's rule: when both day fields are restricted, either one may match.
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def matches(self, moment: datetime) -> bool:
        return (
            moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.month in self.months
            and self._day_matches(moment)
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first whole minute strictly after `moment` that the schedule matches."""
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = candidate + timedelta(days=_SEARCH_DAYS)
        while candidate < end:
            if candidate.month not in self.months or not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) + timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += timedelta(minutes=1)
            else:
                return candidate
        raise ValueError(f"schedule {self.text!r} never fires")


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else None
        if step_text and (step is None or step == 0):
            raise ValueError(f"{name}: bad step in {part!r}")
        if base == "*":
            first, last = low, high
        elif re.fullmatch(r"\d+-\d+", base):
            first, last = (int(x) for x in base.split("-"))
        elif base.isdigit():
            first = last = int(base)
            if step is not None:
                last = high
        else:
            raise ValueError(f"{name}: cannot read {part!r}")
        if not (low <= first <= last <= high):
            raise ValueError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step or 1))
    return frozenset(values)


def parse_schedule(text: str) -> Schedule:
    """Parse "HH:MM" (every day at that local time) or "m h dom mon dow" (cron)."""
    text = text.strip()
    match = _HHMM.match(text)
    if match:
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour > 23 or minute > 59:
            raise ValueError(f"{text!r} is not a time of day")
        text_cron = f"{minute} {hour} * * *"
    else:
        text_cron = text
    parts = text_cron.split()
    if len(parts) != 5:
        raise ValueError(f"{text!r}: expected HH:MM or five cron fields (m h dom mon dow)")
    fields = [_field(p, n, lo, hi) for p, (n, lo, hi) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in fields[4])
    return Schedule(
        text=text,
        minutes=fields[0],
        hours=fields[1],
        days=fields[2],
        months=fields[3],
        weekdays=weekdays,
        any_day=parts[2] == "*",
        any_weekday=parts[4] == "*",
    )
