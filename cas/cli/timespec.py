"""Times on the command line, as git's approxidate users type them.

Accepted (every form is resolved in the local time zone, against one 'now'):
  ISO 8601          2026-11-25, 2026-11-25T14:00, 2026-11-25 14:00:00+01:00
  epoch seconds     @1764079200
  relative          2h ago, 3 days ago, two weeks ago, an hour ago, 2d, last week
  days              today, yesterday, monday (the latest Monday, today included),
                    last monday (the one before today); a day alone is its midnight
  clock times       03:43, 14:00:05, 3pm, 3:30am, noon, midnight (today unless a
                    day is named: 'yesterday 14:00', 'noon yesterday')
Anything else, such as 03/04/2026 (March or April?) or 'next monday', is
refused rather than guessed. A parser library was measured and left out:
dateparser costs 140 ms of import and 270 ms more for its first parse (more
than the rest of the CLI's start-up); parsedatetime (60 ms) has had no release
since 2020 and reads 'monday' and '2d' as times in the future.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import click

from ..model.history import local_time

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ACCEPTED = ("use ISO 8601 (2026-11-25T14:00), '2h ago', '3 days ago', '2d', 'yesterday', "
             "'monday', '03:43', 'yesterday 14:00', 'noon', 'last week' or '@EPOCH'")

# Units of a fixed length, in seconds; months and years are calendar steps.
_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
            "h": 3600, "hr": 3600, "hour": 3600, "d": 86400, "day": 86400,
            "w": 604800, "week": 604800}
_MONTHS = {"mo": 1, "month": 1, "y": 12, "yr": 12, "year": 12}
_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
                 "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
                 "twelve": 12, "last": 1}
_WEEKDAYS = {name: i for i, names in enumerate((
    ("monday", "mon"), ("tuesday", "tue", "tues"), ("wednesday", "wed"),
    ("thursday", "thu", "thur", "thurs"), ("friday", "fri"), ("saturday", "sat"),
    ("sunday", "sun"))) for name in names}
_DAYS_BACK = {"today": 0, "yesterday": 1}
_CLOCK_WORDS = {"noon": (12, 0, 0), "midnight": (0, 0, 0)}

_NUMBER = r"(\d+(?:\.\d+)?|[a-z]+)"
_RELATIVE = re.compile(rf"{_NUMBER}\s*([a-z]+)(?:\s+ago)?")
_CLOCK = re.compile(r"(\d{1,2})(?::(\d{2})(?::(\d{2}))?)?\s*(am|pm)?")
_EPOCH_FORM = re.compile(r"@(-?\d+(?:\.\d+)?)")


class _Refused(ValueError):
    """Not a time this module accepts."""


def parse_time_ns(text: str, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch; naive times are local. ``now_ns`` is the
    moment relative forms count from (the clock's when not given)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    spec = _normalise(text)
    try:
        for form in (_now, _epoch_seconds, _iso, _relative, _day_and_clock):
            ns = form(spec, now_ns)
            if ns is not None:
                return ns
    except (ValueError, OverflowError, ArithmeticError):
        pass
    raise click.BadParameter(f"'{text.strip()}' is not a time: {_ACCEPTED}")


def _normalise(text: str) -> str:
    """Lower case, single spaces; git's '2.days.ago' spelling as words."""
    spec = re.sub(r"\.(?=[a-z])", " ", text.strip().lower())
    return " ".join(spec.replace(",", " ").split())


def _now(spec: str, now_ns: int) -> int | None:
    return now_ns if spec == "now" else None


def _epoch_seconds(spec: str, now_ns: int) -> int | None:
    m = _EPOCH_FORM.fullmatch(spec)
    return int(Fraction(m.group(1)) * 10**9) if m else None


def _iso(spec: str, now_ns: int) -> int | None:
    try:
        dt = datetime.fromisoformat(spec.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return _ns(dt)


def _relative(spec: str, now_ns: int) -> int | None:
    """'N units ago', 'N units' / 'Nd' (that long ago), 'last week'."""
    m = _RELATIVE.fullmatch(spec)
    if not m or (m.group(1) == "last" and spec.endswith(" ago")):
        return None
    count, unit = _count(m.group(1)), _singular(m.group(2))
    if count is None or (unit not in _SECONDS and unit not in _MONTHS):
        return None
    if unit in _SECONDS:
        # Exact arithmetic: a float would round nanoseconds and make 1e400 days infinite.
        return now_ns - int(count * _SECONDS[unit] * 10**9)
    if count != int(count):
        raise _Refused("a fraction of a month is no fixed length")
    months_back = _months_back(_local(now_ns), int(count) * _MONTHS[unit])
    return _ns(months_back) + now_ns % 1000     # datetime stops at microseconds


def _singular(unit: str) -> str:
    """'days' -> 'day'; 'ms' stays 'ms' (milliseconds are no time spec here)."""
    known = unit in _SECONDS or unit in _MONTHS
    return unit[:-1] if not known and len(unit) > 2 and unit.endswith("s") else unit


def _count(word: str) -> Fraction | None:
    if word[0].isdigit():
        return Fraction(word)
    return Fraction(_NUMBER_WORDS[word]) if word in _NUMBER_WORDS else None


def _months_back(now: datetime, months: int) -> datetime:
    """The same day and clock ``months`` back, on the month's last day when it
    is shorter (31 March less a month is 28 or 29 February)."""
    index = now.year * 12 + now.month - 1 - months
    year, month = divmod(index, 12)
    day = min(now.day, calendar.monthrange(year, month + 1)[1])
    return now.replace(year=year, month=month + 1, day=day)


def _day_and_clock(spec: str, now_ns: int) -> int | None:
    """A day ('yesterday', 'monday', 'last monday'), a clock time ('14:00',
    'noon'), or one of each in either order."""
    today = _local(now_ns).date()
    words = spec.split()
    day: date | None = None
    clock: tuple[int, int, int] | None = None
    while words:
        taken_day, rest = _take_day(words, today)
        if taken_day is not None and day is None:
            day, words = taken_day, rest
            continue
        taken_clock = _clock(words[0])
        if taken_clock is None or clock is not None or taken_day is not None:
            return None     # unknown words, or two days or two clock times
        clock, words = taken_clock, words[1:]
    if day is None and clock is None:
        return None
    h, m, s = clock or (0, 0, 0)
    return _ns(datetime.combine(day or today, datetime.min.time()).replace(hour=h, minute=m, second=s))


def _take_day(words: list[str], today: date) -> tuple[date | None, list[str]]:
    """The day named at the start of ``words`` and the words after it."""
    first = words[0]
    if first in _DAYS_BACK:
        return today - timedelta(days=_DAYS_BACK[first]), words[1:]
    if first in _WEEKDAYS:
        return today - timedelta(days=(today.weekday() - _WEEKDAYS[first]) % 7), words[1:]
    if first == "last" and len(words) > 1 and words[1] in _WEEKDAYS:
        back = (today.weekday() - _WEEKDAYS[words[1]]) % 7 or 7
        return today - timedelta(days=back), words[2:]
    return None, words


def _clock(word: str) -> tuple[int, int, int] | None:
    """'14:00', '14:00:05', '3pm', '3:30am', 'noon', 'midnight'."""
    if word in _CLOCK_WORDS:
        return _CLOCK_WORDS[word]
    m = _CLOCK.fullmatch(word)
    if not m or (m.group(2) is None and m.group(4) is None):
        return None     # a bare number is no time of day
    h, mi, s = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    if m.group(4):
        if not 1 <= h <= 12:
            return None
        h = h % 12 + (12 if m.group(4) == "pm" else 0)
    return (h, mi, s) if h < 24 and mi < 60 and s < 60 else None


def _local(now_ns: int) -> datetime:
    """``now_ns`` as a naive local time."""
    return datetime.fromtimestamp(now_ns // 10**9).replace(microsecond=now_ns // 1000 % 10**6)


def _ns(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = _as_local(dt)
    # Exact: timestamp() of year 1 in a zone west of UTC falls outside
    # what datetime can represent, and floats lose nanoseconds.
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def _as_local(dt: datetime) -> datetime:
    try:
        return dt.astimezone()
    except (ValueError, OverflowError, OSError):
        # Outside what the C library converts (year 1): today's offset.
        return dt.replace(tzinfo=datetime.now().astimezone().tzinfo)


class TimeParam(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):
        return value if isinstance(value, int) else parse_time_ns(value)


def show_time(ns: int) -> str:
    """Local time for people, as the library words it (one copy of the rule)."""
    return local_time(ns)


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'2s', '500ms', '5m', '1h', or a bare number of seconds."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|min|h|d)?\s*", text)
    if not m:
        raise ValueError(f"'{text}' is not a duration (try 2s, 500ms, 5m, 1h)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]


class DurationParam(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
