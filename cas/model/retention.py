"""Retention policies: which recorded snapshots of a branch to keep.

The rules and their meaning are restic's (``restic forget``,
``internal/restic/snapshot_policy.go``), so a policy written for restic
means the same here:

- snapshots are considered newest first; one is kept if ANY rule keeps it;
- ``keep_last N`` keeps the N newest;
- ``keep_hourly/daily/weekly/monthly/yearly N`` keeps the newest snapshot of
  each of the last N hours (days, ISO weeks, ...) that have one, in local
  time; while such a rule still has counts left when it reaches the oldest
  snapshot, it keeps that one too (restic 0.17: the longest history the
  counts allow). ``ALL`` (-1) means every bucket;
- ``keep_within D`` keeps every snapshot newer than the newest snapshot
  (not now) minus D, in calendar arithmetic (``1m`` is a month, as in restic);
- ``keep_within_hourly/... D`` keeps the newest snapshot of each hour (day,
  ...) newer than the newest minus D;
- ``keep_tags`` keeps the snapshots a tag of that name points at.

One rule is ours: ``keep_every`` tiers, "one per INTERVAL within WINDOW"
(one per 10 minutes for a day), for continuously captured history, where
restic's units are too coarse. A policy with no rule keeps everything
(restic's empty policy); a policy that would keep nothing keeps the newest
and says so.

This module is pure: it decides from times and tag names alone, so the
watcher can apply it after every snapshot.
"""

from __future__ import annotations

import operator
import re
import time
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta, tzinfo
from typing import Callable, Iterable, NamedTuple, Sequence

from ..errors import RetentionRuleInvalid
from ..objectid import ObjectId
from .timeline import TimelineEntry

ALL = -1
NS = 1_000_000_000
UNITS = ("hourly", "daily", "weekly", "monthly", "yearly")
# Far beyond any real count or duration, small enough that arithmetic on it
# stays exact and dates stay formattable.
_MAX_NUMBER = 1_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MONDAY_SHIFT_DAYS = 3  # 1970-01-01 was a Thursday; ISO weeks start on Monday
NEWEST_FALLBACK = "newest (the policy keeps nothing else)"


# -- durations -----------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Duration:
    """restic's duration (years, months, days, hours) plus minutes."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0

    def __str__(self) -> str:
        parts = zip((self.years, self.months, self.days, self.hours, self.minutes),
                    ("y", "m", "d", "h", "min"))
        return "".join(f"{n}{unit}" for n, unit in parts if n) or "0h"

    @property
    def is_zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours or self.minutes)

    def fixed_seconds(self) -> int | None:
        """Its length in seconds, if it has one (months and years have none)."""
        if self.years or self.months:
            return None
        return ((self.days * 24 + self.hours) * 60 + self.minutes) * 60


_DURATION_PART = re.compile(r"(\d+)(min|y|m|w|d|h)")
_DURATION_UNITS = {"y": "years", "m": "months", "w": "days", "d": "days", "h": "hours",
                   "min": "minutes"}


def parse_duration(text: str) -> Duration:
    """``2h``, ``30min``, ``7d``, ``1w``, ``1y2m3d``: restic's units (``m`` is
    a month) plus ``w`` (7 days) and ``min``. Raises RetentionRuleInvalid."""
    raw = text.strip().lower()
    parts = _DURATION_PART.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        raise RetentionRuleInvalid(f"'{text}' is not a duration (examples: 30min, 2h, 7d, 1w, "
                                   "3m for three months, 1y6m)")
    values: dict[str, int] = {}
    for number, unit in parts:
        n = int(number) * (7 if unit == "w" else 1)
        name = _DURATION_UNITS[unit]
        values[name] = values.get(name, 0) + n
        if values[name] > _MAX_NUMBER:
            raise RetentionRuleInvalid(f"'{text}' is longer than cas can count")
    duration = Duration(**values)
    if duration.is_zero:
        raise RetentionRuleInvalid(f"'{text}' is no time at all: give a duration longer than zero")
    return duration


# -- policies ------------------------------------------------------------------

@dataclass(frozen=True)
class Tier:
    """Keep the newest snapshot of each ``every``-long interval newer than
    the newest snapshot minus ``within`` (forever when None)."""

    every: Duration
    within: Duration | None = None

    def __post_init__(self):
        seconds = self.every.fixed_seconds()
        if not seconds:
            raise RetentionRuleInvalid(f"'every {self.every}': an interval is minutes, hours, "
                                       "days or weeks (months and years have no fixed length)")
        if self.within is not None and self.within.fixed_seconds() is not None \
                and self.within.fixed_seconds() < seconds:
            raise RetentionRuleInvalid(f"'every {self.every} within {self.within}': the interval "
                                       "is longer than its window")

    def __str__(self) -> str:
        return f"every {self.every}" + (f" within {self.within}" if self.within else "")


@dataclass(frozen=True)
class Policy:
    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: Duration | None = None
    keep_within_hourly: Duration | None = None
    keep_within_daily: Duration | None = None
    keep_within_weekly: Duration | None = None
    keep_within_monthly: Duration | None = None
    keep_within_yearly: Duration | None = None
    keep_tags: tuple[str, ...] = ()
    keep_every: tuple[Tier, ...] = field(default=())

    def __post_init__(self):
        for name in ("keep_last",) + tuple(f"keep_{u}" for u in UNITS):
            n = getattr(self, name)
            if n is not None and (type(n) is not int or n < ALL or n > _MAX_NUMBER):
                raise RetentionRuleInvalid(f"{_option(name)} {n}: a count is a number from 0 up, "
                                           "or 'all'")

    @property
    def is_empty(self) -> bool:
        """No rule at all: restic keeps everything then, and so do we."""
        return all(getattr(self, f.name) in (None, 0, ()) for f in fields(self))

    def describe(self) -> str:
        """One line for people, e.g. 'last 3, daily 7, within 2d, tag release'."""
        if self.is_empty:
            return "keep everything"
        parts = []
        for name in ("keep_last",) + tuple(f"keep_{u}" for u in UNITS):
            n = getattr(self, name)
            if n:
                parts.append(f"{name[5:]} {'all' if n == ALL else n}")
        if self.keep_within:
            parts.append(f"within {self.keep_within}")
        for unit in UNITS:
            d = getattr(self, f"keep_within_{unit}")
            if d:
                parts.append(f"{unit} within {d}")
        parts += [str(t) for t in self.keep_every]
        parts += [f"tag {t}" for t in self.keep_tags]
        return "keep " + ", ".join(parts)

    def to_doc(self) -> dict:
        """The rules as JSON (FORMAT.md, "Retention policies")."""
        doc: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value in (None, ()):
                continue
            key = f.name[len("keep_"):]
            if isinstance(value, Duration):
                doc[key] = str(value)
            elif key == "tags":
                doc[key] = list(value)
            elif key == "every":
                doc[key] = [{"every": str(t.every), **({"within": str(t.within)} if t.within else {})}
                            for t in value]
            else:
                doc[key] = value
        return doc

    @classmethod
    def from_doc(cls, doc: dict) -> "Policy":
        """Rules from JSON; anything unknown or malformed raises RetentionRuleInvalid."""
        if not isinstance(doc, dict):
            raise RetentionRuleInvalid("the rules are not a JSON object")
        known = {f.name[len("keep_"):]: f.name for f in fields(cls)}
        values: dict = {}
        for key, value in doc.items():
            name = known.get(key)
            if name is None:
                raise RetentionRuleInvalid(f"unknown rule '{key}'")
            values[name] = _rule_from_doc(key, value)
        return cls(**values)


def _rule_from_doc(key: str, value):
    if key == "tags":
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise RetentionRuleInvalid("tags must be a list of names")
        return tuple(value)
    if key == "every":
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise RetentionRuleInvalid("every must be a list of {every, within} objects")
        return tuple(Tier(_duration_from_doc(t.get("every")),
                          _duration_from_doc(t["within"]) if "within" in t else None) for t in value)
    if key.startswith("within"):
        return _duration_from_doc(value)
    if type(value) is not int:
        raise RetentionRuleInvalid(f"{key} must be a whole number")
    return value


def _duration_from_doc(value) -> Duration:
    if not isinstance(value, str):
        raise RetentionRuleInvalid(f"{value!r} is not a duration")
    return parse_duration(value)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def count_from_text(text: str, option: str = "") -> int:
    """A rule's count as typed: a number from 0 up, or 'all'."""
    text = text.strip().lower()
    if text in ("all", "unlimited"):
        return ALL
    if not text.isdigit() or int(text) > _MAX_NUMBER:
        raise RetentionRuleInvalid(f"{option} {text}: a count is a number from 0 up, or 'all'".strip())
    return int(text)


# The default for branches made by `cas watch`, modelled on Time Machine
# (hourly for a day, daily for a month, weekly after) but daily for a whole
# year, so that every day of the last year can still be restored. For a
# year of 30 snapshots a minute, 8 hours a day, it keeps about 550
# snapshots (README, "Thinning", has the table by tier).
WATCH_DEFAULT = Policy(
    keep_within=Duration(minutes=2),
    keep_every=(Tier(Duration(minutes=1), Duration(hours=1)),
                Tier(Duration(minutes=10), Duration(days=1))),
    keep_within_hourly=Duration(days=7),
    keep_within_daily=Duration(years=1),
    keep_weekly=ALL,
)


# -- deciding ------------------------------------------------------------------

class Decision(NamedTuple):
    """A snapshot, whether the policy keeps it, and the rules that do.

    A tuple, not a dataclass: a policy over 100,000 snapshots makes as many,
    and a frozen dataclass costs most of the decision's time to build."""

    entry: TimelineEntry
    keep: bool
    reasons: tuple[str, ...] = ()

    @property
    def oid(self) -> ObjectId:
        return self.entry.oid


def decide(entries: Sequence[TimelineEntry], tags_by_oid: dict[ObjectId, Iterable[str]],
           policy: Policy, tz: tzinfo | None = None, now_ns: int | None = None) -> list[Decision]:
    """A decision for every entry, newest first, naming the rules that keep it.

    ``tz`` is the zone buckets are counted in (local time when None);
    ``now_ns`` only decides which snapshots are "in the future" and so
    cannot be the newest that ``within`` rules count back from (as restic).
    """
    ordered = _newest_first(entries)
    if policy.is_empty:
        return [Decision(e, True, ("keep everything",)) for e in ordered]
    if not ordered:
        return []
    times = [e.time_ns for e in ordered]
    keys = _BucketKeys(times, tz)
    latest = _latest(times, time.time_ns() if now_ns is None else now_ns)
    reasons: dict[int, list[str]] = {}
    _keep_tagged(ordered, tags_by_oid, policy.keep_tags, reasons)
    if policy.keep_within:
        _keep_newer(times, _cutoff(latest, policy.keep_within, tz), f"within {policy.keep_within}",
                    reasons)
    if policy.keep_last:
        _keep_counted(range(len(ordered)), policy.keep_last, "last", reasons)
    for unit in UNITS:
        count = getattr(policy, f"keep_{unit}")
        if count:
            _keep_counted(keys.of(unit), count, unit, reasons)
    for unit in UNITS:
        within = getattr(policy, f"keep_within_{unit}")
        if within:
            _keep_newest_per_bucket(keys.of(unit), times, _cutoff(latest, within, tz),
                                    f"{unit} within {within}", reasons)
    for tier in policy.keep_every:
        cutoff = _cutoff(latest, tier.within, tz) if tier.within else None
        _keep_newest_per_bucket(keys.every(tier.every.fixed_seconds()), times, cutoff, str(tier),
                                reasons)
    if not reasons:
        reasons[0] = [NEWEST_FALLBACK]
    new, forgotten = tuple.__new__, ()  # the fastest way to build a named tuple
    return [new(Decision, (e, True, tuple(reasons[i])) if i in reasons else (e, False, forgotten))
            for i, e in enumerate(ordered)]


def _newest_first(entries: Sequence[TimelineEntry]) -> list[TimelineEntry]:
    """Newest first; equal times keep their given order (restic's stable sort)."""
    entries = list(entries)
    times = [e.time_ns for e in entries]
    if all(map(operator.ge, times, times[1:])):
        return entries
    return sorted(entries, key=lambda e: e.time_ns, reverse=True)


def _latest(times: list[int], now_ns: int) -> int | None:
    """The newest time not in the future; None when every one is (restic then
    counts from year 1, so every snapshot is "within")."""
    return next((t for t in times if t < now_ns), None)


def _keep_tagged(ordered, tags_by_oid, keep_tags, reasons) -> None:
    if not keep_tags or not tags_by_oid:
        return
    wanted = set(keep_tags)
    for i, e in enumerate(ordered):
        for name in sorted(wanted.intersection(tags_by_oid.get(e.oid, ()))):
            reasons.setdefault(i, []).append(f"tag {name}")


def _keep_newer(times, cutoff: int | None, reason: str, reasons) -> None:
    for i, t in enumerate(times):
        if cutoff is not None and t <= cutoff:
            break  # newest first: everything after is older still
        reasons.setdefault(i, []).append(reason)


def _keep_counted(keys: Sequence, count: int, reason: str, reasons) -> None:
    """The newest of each of the first ``count`` buckets; and the oldest
    snapshot if counts are left when the rule reaches it (restic)."""
    last_index = len(keys) - 1
    previous = object()
    for i, key in enumerate(keys):
        if count == 0:
            return
        if key != previous or i == last_index:
            reasons.setdefault(i, []).append(reason)
            previous = key
            if count > 0:
                count -= 1


def _keep_newest_per_bucket(keys: Sequence, times, cutoff: int | None, reason: str, reasons) -> None:
    previous = object()
    for i, key in enumerate(keys):
        if cutoff is not None and times[i] <= cutoff:
            return
        if key != previous:
            reasons.setdefault(i, []).append(reason)
            previous = key


def _cutoff(latest: int | None, span: Duration, tz: tzinfo | None) -> int | None:
    """``latest`` minus ``span`` in ns, the calendar part on the local wall
    clock (Go's AddDate: Mar 31 minus a month is Mar 3); None: before all time."""
    if latest is None:
        return None
    seconds, fraction = divmod(latest, NS)
    try:
        now = datetime.fromtimestamp(seconds, tz)
        months = now.year * 12 + now.month - 1 - span.years * 12 - span.months
        first = date(months // 12, months % 12 + 1, 1)
        day = first + timedelta(days=now.day - 1 - span.days)
        shifted = datetime.combine(day, now.time(), tzinfo=now.tzinfo).timestamp()
    except (ValueError, OverflowError, OSError):
        return None  # before year 1: every snapshot is within
    shifted_seconds = round(shifted) - (span.hours * 60 + span.minutes) * 60
    return shifted_seconds * NS + fraction


class _BucketKeys:
    """Each entry's bucket for each unit, from one local-time conversion per entry."""

    def __init__(self, times: list[int], tz: tzinfo | None):
        self._local = _local_seconds(times, _offset_function(tz))
        self._days: list[int] | None = None
        self._civil: dict[int, tuple[int, int]] = {}

    def of(self, unit: str) -> list:
        if unit == "hourly":
            return [s // 3600 for s in self._local]
        days = self._day_numbers()
        if unit == "daily":
            return days
        if unit == "weekly":
            return [(d + _MONDAY_SHIFT_DAYS) // 7 for d in days]
        civil = [self._year_month(d) for d in days]
        return civil if unit == "monthly" else [ym[0] for ym in civil]

    def every(self, seconds: int) -> list[int]:
        # Shifted to a Monday so that weekly intervals are ISO weeks; any
        # interval dividing a day is aligned to midnight either way.
        shift = _MONDAY_SHIFT_DAYS * 86400
        return [(s + shift) // seconds for s in self._local]

    def _day_numbers(self) -> list[int]:
        if self._days is None:
            self._days = [s // 86400 for s in self._local]
        return self._days

    def _year_month(self, day: int) -> tuple[int, int]:
        found = self._civil.get(day)
        if found is None:
            try:
                d = date.fromordinal(_EPOCH_ORDINAL + day)
                found = (d.year, d.month)
            except (ValueError, OverflowError):
                # A crafted time beyond years 1-9999: a stand-in bucket per ~month.
                found = (day // 366, day // 31)
            self._civil[day] = found
        return found


def _offset_function(tz: tzinfo | None) -> Callable[[int], int]:
    def local_offset(seconds: int) -> int:
        try:
            if tz is None:
                return time.localtime(seconds).tm_gmtoff
            return int(datetime.fromtimestamp(seconds, tz).utcoffset().total_seconds())
        except (ValueError, OverflowError, OSError):
            return 0  # a crafted time outside the C library's range
    return local_offset


def _local_seconds(times: list[int], offset_at: Callable[[int], int]) -> list[int]:
    """Each time (ns, newest first) on the local wall clock, as seconds since
    1970-01-01 local.

    An hour's offset is taken from its first snapshot and trusted for the
    rest once both ends of the hour agree (no zone changes its offset twice
    within an hour): a dense history pays three conversions an hour, not
    one per snapshot.
    """
    local = []
    append = local.append
    hour, offset, uniform = None, 0, False
    for t in times:
        seconds = t // NS
        if seconds // 3600 != hour:
            hour = seconds // 3600
            offset, uniform = offset_at(seconds), None
        elif uniform is None:
            start = hour * 3600
            uniform = offset_at(start) == offset_at(start + 3599) == offset
        if uniform is False:
            offset = offset_at(seconds)  # the offset changes within this hour
        append(seconds + offset)
    return local
