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
watcher can apply it after every snapshot. Deciding after each snapshot
ends where one decision over all of them does when every window is a
fixed length (minutes to weeks). A window of months or years follows
restic's calendar arithmetic (Go's AddDate: Mar 29 minus a month is Mar 1,
the same as Apr 1 minus a month), so its start can move back as snapshots
arrive, and thinning as it goes may have forgotten a snapshot one decision
would keep: it keeps a subset then, never more.
"""

from __future__ import annotations

import bisect
import operator
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta, tzinfo
from typing import NamedTuple

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
                    ("y", "m", "d", "h", "min"), strict=True)
        return "".join(f"{n}{unit}" for n, unit in parts if n) or "0h"

    @property
    def is_zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours or self.minutes)

    def fixed_seconds(self) -> int | None:
        """Its length in seconds, if it has one (months and years have none)."""
        if self.years or self.months:
            return None
        return ((self.days * 24 + self.hours) * 60 + self.minutes) * 60


_DURATION_PART = re.compile(r"([0-9]+)(min|y|m|w|d|h)")
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

    @property
    def seconds(self) -> int:
        """The interval in seconds (a Tier is only made with a fixed one)."""
        seconds = self.every.fixed_seconds()
        assert seconds is not None
        return seconds

    def __post_init__(self):
        seconds = self.every.fixed_seconds()
        if not seconds:
            raise RetentionRuleInvalid(f"'every {self.every}': an interval is minutes, hours, "
                                       "days or weeks (months and years have no fixed length)")
        window = self.within.fixed_seconds() if self.within is not None else None
        if window is not None and window < seconds:
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
        """One line for people, finest rules first: 'keep within 2min, every
        10min within 1d, daily within 1y, weekly all'."""
        if self.is_empty:
            return "keep everything"
        parts = [f"last {_count_text(self.keep_last)}"] if self.keep_last else []
        if self.keep_within:
            parts.append(f"within {self.keep_within}")
        parts += [str(t) for t in self.keep_every]
        for unit in UNITS:
            d = getattr(self, f"keep_within_{unit}")
            if d:
                parts.append(f"{unit} within {d}")
        for unit in UNITS:
            n = getattr(self, f"keep_{unit}")
            if n:
                parts.append(f"{unit} {_count_text(n)}")
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
    def from_doc(cls, doc: object) -> Policy:
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


def _count_text(n: int) -> str:
    return "all" if n == ALL else str(n)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


_COUNT = re.compile(r"[0-9]{1,12}")


def count_from_text(text: str, option: str = "") -> int:
    """A rule's count as typed: a number from 0 up, or 'all'."""
    text = text.strip().lower()
    if text in ("all", "unlimited"):
        return ALL
    if not _COUNT.fullmatch(text) or int(text) > _MAX_NUMBER:
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


def decide(entries: Sequence[TimelineEntry], tags_by_oid: Mapping[ObjectId, Iterable[str]],
           policy: Policy, tz: tzinfo | None = None, now_ns: int | None = None) -> list[Decision]:
    """A decision for every entry, newest first, naming the rules that keep it.

    ``tz`` is the zone buckets are counted in (local time when None);
    ``now_ns`` only decides which snapshots are "in the future" and so
    cannot be the newest that ``within`` rules count back from (as restic).
    """
    ordered, times = _newest_first(entries)
    tagged = _tagged(ordered, tags_by_oid, policy.keep_tags)
    reasons = keep_reasons(times, policy, tz, now_ns, tagged)
    new = tuple.__new__  # the fastest way to build a named tuple
    decided = [new(Decision, (e, False, ())) for e in ordered]
    for i, why in reasons.items():
        decided[i] = new(Decision, (ordered[i], True, tuple(why)))
    return decided


def keep_reasons(times: list[int], policy: Policy, tz: tzinfo | None = None,
                 now_ns: int | None = None,
                 tagged: dict[int, list[str]] | None = None) -> dict[int, list[str]]:
    """decide() on times alone: the rules keeping each kept snapshot, by its
    position in ``times`` (newest first, as decide orders them); ``tagged``
    holds the reasons keep_tags gives, by the same positions."""
    if not times:
        return {}
    if policy.is_empty:
        return {i: ["keep everything"] for i in range(len(times))}
    latest = _latest(times, time.time_ns() if now_ns is None else now_ns)
    reasons: dict[int, list[str]] = {i: list(why) for i, why in (tagged or {}).items()}
    if policy.keep_within:
        cutoff = _cutoff(latest, policy.keep_within, tz)
        for i in range(_count_newer(times, cutoff)):
            reasons.setdefault(i, []).append(f"within {policy.keep_within}")
    if policy.keep_last:
        count = len(times) if policy.keep_last == ALL else min(policy.keep_last, len(times))
        for i in range(count):
            reasons.setdefault(i, []).append("last")
    _keep_by_buckets(policy, times, _MinuteHeads(times, tz), latest, tz, reasons)
    if not reasons:
        reasons[0] = [NEWEST_FALLBACK]
    return reasons


def _keep_by_buckets(policy: Policy, times: list[int], heads: _MinuteHeads, latest: int | None,
                     tz: tzinfo | None, reasons: dict[int, list[str]]) -> None:
    """The rules that keep the newest snapshot of each bucket (an hour, a day,
    ten minutes...). Every bucket is whole local minutes, so only the newest
    snapshot of each minute (its head) can be the newest of a bucket."""
    last_index = len(times) - 1
    for unit in UNITS:
        count = getattr(policy, f"keep_{unit}")
        if count:
            _keep_counted(heads.keys(unit), heads.index, count, unit, last_index, reasons)
    for unit in UNITS:
        within = getattr(policy, f"keep_within_{unit}")
        if within:
            limit = _count_newer(times, _cutoff(latest, within, tz))
            _keep_newest_per_bucket(heads.keys(unit, limit), heads.index, limit,
                                    f"{unit} within {within}", reasons)
    for tier in policy.keep_every:
        limit = _count_newer(times, _cutoff(latest, tier.within, tz) if tier.within else None)
        _keep_newest_per_bucket(heads.every(tier.seconds, limit), heads.index, limit,
                                str(tier), reasons)


def _newest_first(entries: Sequence[TimelineEntry]) -> tuple[list[TimelineEntry], list[int]]:
    """Newest first, and their times; equal times keep their given order
    (restic's stable sort)."""
    entries = list(entries)
    times = [e.time_ns for e in entries]
    if not all(map(operator.ge, times, times[1:])):
        entries.sort(key=lambda e: e.time_ns, reverse=True)
        times = [e.time_ns for e in entries]
    return entries, times


def _latest(times: list[int], now_ns: int) -> int | None:
    """The newest time not in the future; None when every one is (restic then
    counts from year 1, so every snapshot is "within")."""
    first = bisect.bisect_right(times, -now_ns, key=operator.neg)
    return times[first] if first < len(times) else None


def _count_newer(times: list[int], cutoff: int | None) -> int:
    """How many of the (newest first) times are after ``cutoff``."""
    if cutoff is None:
        return len(times)
    return bisect.bisect_left(times, -cutoff, key=operator.neg)


def _tagged(ordered: list[TimelineEntry], tags_by_oid: Mapping[ObjectId, Iterable[str]],
            keep_tags: tuple[str, ...]) -> dict[int, list[str]]:
    """keep_tags' reasons, by position."""
    if not keep_tags or not tags_by_oid:
        return {}
    wanted, found = set(keep_tags), {}
    for i, e in enumerate(ordered):
        names = tags_by_oid.get(e.oid)
        if names and wanted.intersection(names):
            found[i] = [f"tag {name}" for name in sorted(wanted.intersection(names))]
    return found


def _keep_counted(keys: list, index: list[int], count: int, reason: str, last_index: int,
                  reasons: dict[int, list[str]]) -> None:
    """The newest of each of the first ``count`` buckets; and the oldest
    snapshot if counts are left when the rule reaches it (restic)."""
    previous = object()
    for key, i in zip(keys, index, strict=False):
        if count == 0:
            return
        if key != previous or i == last_index:
            reasons.setdefault(i, []).append(reason)
            previous = key
            if count > 0:
                count -= 1
    if count != 0 and index[-1] != last_index:
        reasons.setdefault(last_index, []).append(reason)


def _keep_newest_per_bucket(keys: list, index: list[int], limit: int, reason: str,
                            reasons: dict[int, list[str]]) -> None:
    """The newest snapshot of each bucket among the first ``limit``."""
    previous = object()
    for key, i in zip(keys, index, strict=False):
        if i >= limit:
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


class _MinuteHeads:
    """The newest snapshot of each local minute, with its local time.

    Found by bisection from one minute to the next, so a history of 30
    snapshots a minute costs a few conversions a minute, not one per
    snapshot; bucket keys are computed for heads only.
    """

    def __init__(self, times: list[int], tz: tzinfo | None):
        offsets = _Offsets(tz)
        self.index: list[int] = []
        self._local: list[int] = []
        i, n = 0, len(times)
        while i < n:
            seconds = times[i] // NS
            offset = offsets(seconds)
            local = seconds + offset
            self.index.append(i)
            self._local.append(local)
            start = local - local % 60 - offset  # when this local minute began, in UTC
            i += 1
            if i < n and times[i] >= start * NS and offsets(start) == offset:
                # More of this minute follow (and the offset did not change
                # within it, else they go one at a time): skip them.
                i = bisect.bisect_right(times, -start * NS, lo=i, key=operator.neg)
        self._civil: dict[int, tuple[int, int]] = {}
        self._days: list[int] | None = None

    def keys(self, unit: str, limit: int | None = None) -> list:
        """The bucket of each head, for heads among the first ``limit`` snapshots."""
        local = self._heads_before(limit)
        if unit == "hourly":
            return [s // 3600 for s in local]
        days = self._day_numbers()[:len(local)]
        if unit == "daily":
            return days
        if unit == "weekly":
            return [(d + _MONDAY_SHIFT_DAYS) // 7 for d in days]
        civil = [self._year_month(d) for d in days]
        return civil if unit == "monthly" else [ym[0] for ym in civil]

    def every(self, seconds: int, limit: int | None = None) -> list[int]:
        # Shifted to a Monday so that weekly intervals are ISO weeks; any
        # interval dividing a day is aligned to midnight either way.
        shift = _MONDAY_SHIFT_DAYS * 86400
        return [(s + shift) // seconds for s in self._heads_before(limit)]

    def _heads_before(self, limit: int | None) -> list[int]:
        # A rule with a window needs only the heads inside it.
        if limit is None:
            return self._local
        return self._local[:bisect.bisect_left(self.index, limit)]

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


class _Offsets:
    """The UTC offset (seconds) at a time, cached per UTC hour when both
    ends of the hour agree (no zone changes its offset twice in an hour)."""

    def __init__(self, tz: tzinfo | None):
        self._tz = tz
        self._hours: dict[int, int | None] = {}

    def __call__(self, seconds: int) -> int:
        hour = seconds // 3600
        try:
            offset = self._hours[hour]
        except KeyError:
            start, end = self._exact(hour * 3600), self._exact(hour * 3600 + 3599)
            offset = self._hours[hour] = start if start == end else None
        return offset if offset is not None else self._exact(seconds)

    def _exact(self, seconds: int) -> int:
        try:
            if self._tz is None:
                return time.localtime(seconds).tm_gmtoff
            offset = datetime.fromtimestamp(seconds, self._tz).utcoffset()
            return int(offset.total_seconds()) if offset is not None else 0
        except (ValueError, OverflowError, OSError):
            return 0  # a crafted time outside the C library's range
