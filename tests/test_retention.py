"""The retention engine: restic's forget rules against hand-computed tables,
the watcher's default over a year of history, and the properties that let
the watcher thin as it goes."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings, strategies as st

from cas.errors import RetentionRuleInvalid
from cas.model.retention import (ALL, NEWEST_FALLBACK, NS, WATCH_DEFAULT, Duration, Policy, Tier,
                                 count_from_text, decide, keep_reasons, parse_duration)
from cas.model.timeline import TimelineEntry
from cas.objectid import hash_bytes

UTC = timezone.utc


def zone(name: str):
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        return zoneinfo.ZoneInfo(name)
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip(f"no time zone data for {name}")


def at(text: str, tz=UTC) -> int:
    """'2025-01-06 10:00[:ss]' in ``tz`` as ns."""
    return int(datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()) * NS


def entries(*times: str, tz=UTC) -> list[TimelineEntry]:
    return [TimelineEntry(hash_bytes(t.encode()), at(t, tz), "main") for t in times]


def kept(policy: Policy, snaps: list[TimelineEntry], tz=UTC, now: str | None = None,
         tags=None) -> dict[str, tuple[str, ...]]:
    """{time text: reasons} of the kept snapshots, in UTC text."""
    now_ns = at(now, tz) if now else max(e.time_ns for e in snaps) + NS
    out = {}
    for d in decide(snaps, tags or {}, policy, tz=tz, now_ns=now_ns):
        if d.keep:
            out[datetime.fromtimestamp(d.entry.time_ns // NS, tz).strftime("%Y-%m-%d %H:%M:%S")] = d.reasons
    return out


# -- one rule at a time ----------------------------------------------------------------

def test_keep_last_keeps_the_newest_n_in_any_input_order():
    snaps = entries("2025-01-01 10:00", "2025-01-03 10:00", "2025-01-02 10:00", "2025-01-04 10:00")
    assert kept(Policy(keep_last=2), snaps) == {"2025-01-04 10:00:00": ("last",),
                                                "2025-01-03 10:00:00": ("last",)}
    decisions = decide(snaps, {}, Policy(keep_last=2), tz=UTC, now_ns=at("2026-01-01 00:00"))
    assert [d.entry.time_ns for d in decisions] == sorted((e.time_ns for e in snaps), reverse=True)


def test_keep_hourly_keeps_the_newest_of_the_last_n_hours_that_have_one():
    snaps = entries("2025-01-06 09:10", "2025-01-06 09:50", "2025-01-06 11:05", "2025-01-06 11:59",
                    "2025-01-06 14:00", "2025-01-06 14:30")
    # Hours 14, 11 and 9 have snapshots (10, 12 and 13 do not): the newest of each.
    assert kept(Policy(keep_hourly=3), snaps) == {
        "2025-01-06 14:30:00": ("hourly",), "2025-01-06 11:59:00": ("hourly",),
        "2025-01-06 09:50:00": ("hourly",)}


def test_a_count_left_at_the_oldest_snapshot_keeps_it_as_restic_does():
    snaps = entries("2025-01-01 08:00", "2025-01-01 20:00", "2025-01-02 08:00", "2025-01-02 20:00")
    # Two days for seven counts: the newest of each day, and the oldest too
    # (restic 0.17: the longest history the counts allow).
    assert kept(Policy(keep_daily=7), snaps) == {
        "2025-01-02 20:00:00": ("daily",), "2025-01-01 20:00:00": ("daily",),
        "2025-01-01 08:00:00": ("daily",)}
    # Counts used up before the oldest: it goes.
    assert "2025-01-01 08:00:00" not in kept(Policy(keep_daily=2), snaps)


def test_weeks_are_iso_weeks_starting_on_monday():
    # 2025-01-05 is a Sunday, 2025-01-06 a Monday.
    snaps = entries("2025-01-04 12:00", "2025-01-05 23:59", "2025-01-06 00:00", "2025-01-12 23:00")
    assert kept(Policy(keep_weekly=2), snaps) == {
        "2025-01-12 23:00:00": ("weekly",), "2025-01-05 23:59:00": ("weekly",)}


def test_monthly_and_yearly_buckets():
    snaps = entries("2023-06-01 00:00", "2023-12-31 23:00", "2024-02-29 12:00", "2024-03-01 00:00",
                    "2024-03-31 23:59", "2025-01-15 00:00")
    assert kept(Policy(keep_monthly=3), snaps) == {
        "2025-01-15 00:00:00": ("monthly",), "2024-03-31 23:59:00": ("monthly",),
        "2024-02-29 12:00:00": ("monthly",)}
    assert kept(Policy(keep_yearly=ALL), snaps) == {
        "2025-01-15 00:00:00": ("yearly",), "2024-03-31 23:59:00": ("yearly",),
        "2023-12-31 23:00:00": ("yearly",), "2023-06-01 00:00:00": ("yearly",)}


def test_all_keeps_the_newest_of_every_bucket():
    snaps = entries(*[f"2025-01-{d:02d} {h:02d}:00" for d in (1, 2, 3) for h in (8, 12)])
    assert set(kept(Policy(keep_daily=ALL), snaps)) == {
        "2025-01-03 12:00:00", "2025-01-02 12:00:00", "2025-01-01 12:00:00",
        "2025-01-01 08:00:00"}  # the oldest: an unlimited count is never used up


def test_keep_within_counts_back_from_the_newest_snapshot_not_from_now():
    snaps = entries("2020-05-01 12:00", "2020-05-03 12:00", "2020-05-03 12:00:01", "2020-05-05 12:00")
    result = kept(Policy(keep_within=parse_duration("2d")), snaps, now="2025-01-01 00:00")
    # Strictly newer than newest - 2d: exactly two days before is out.
    assert result == {"2020-05-05 12:00:00": ("within 2d",), "2020-05-03 12:00:01": ("within 2d",)}


def test_keep_within_months_are_calendar_months_normalised_like_go():
    snaps = entries("2025-02-28 12:00", "2025-03-03 12:00", "2025-03-03 12:00:01", "2025-03-31 12:00")
    # March 31 minus one month is "February 31", which Go's AddDate makes March 3.
    assert set(kept(Policy(keep_within=parse_duration("1m")), snaps)) == {
        "2025-03-31 12:00:00", "2025-03-03 12:00:01"}


def test_a_snapshot_in_the_future_is_not_the_newest_within_counts_from():
    snaps = entries("2025-01-01 00:00", "2025-01-09 00:00", "2025-01-10 00:00", "2030-01-01 00:00")
    result = kept(Policy(keep_within=parse_duration("2d")), snaps, now="2025-01-10 12:00")
    assert set(result) == {"2030-01-01 00:00:00", "2025-01-10 00:00:00", "2025-01-09 00:00:00"}
    # Every one in the future: restic counts from year 1, so all are within.
    assert len(kept(Policy(keep_within=parse_duration("2d")), snaps, now="2000-01-01 00:00")) == 4


def test_keep_within_unit_keeps_the_newest_of_each_bucket_in_the_window():
    snaps = entries("2025-01-01 09:00", "2025-01-01 18:00", "2025-01-02 09:00", "2025-01-02 18:00",
                    "2025-01-03 09:00", "2025-01-03 18:00")
    assert kept(Policy(keep_within_daily=parse_duration("2d")), snaps) == {
        "2025-01-03 18:00:00": ("daily within 2d",), "2025-01-02 18:00:00": ("daily within 2d",)}
    # The window is newest minus 2d = Jan 1 18:00; that snapshot is not after it.


def test_keep_every_tier_keeps_one_per_interval_within_its_window():
    snaps = entries(*[f"2025-01-06 10:{m:02d}" for m in range(0, 60, 3)])  # every 3 minutes
    result = kept(Policy(keep_every=(Tier(parse_duration("10min"), parse_duration("30min")),)), snaps)
    # Window: after 10:27 (newest 10:57 minus 30 min): buckets 10:50, 10:40, 10:30.
    assert set(result) == {"2025-01-06 10:57:00", "2025-01-06 10:48:00", "2025-01-06 10:39:00"}
    assert set(result.values()) == {("every 10min within 30min",)}


def test_keep_tag_keeps_tagged_snapshots_only_for_the_tags_named():
    snaps = entries("2025-01-01 00:00", "2025-01-02 00:00", "2025-01-03 00:00")
    tags = {snaps[0].oid: ["release"], snaps[1].oid: ["scratch"]}
    assert kept(Policy(keep_last=1, keep_tags=("release",)), snaps, tags=tags) == {
        "2025-01-03 00:00:00": ("last",), "2025-01-01 00:00:00": ("tag release",)}


def test_an_empty_policy_keeps_everything_and_one_keeping_nothing_keeps_the_newest():
    snaps = entries("2025-01-01 00:00", "2025-01-02 00:00")
    assert kept(Policy(), snaps) == {"2025-01-02 00:00:00": ("keep everything",),
                                     "2025-01-01 00:00:00": ("keep everything",)}
    assert kept(Policy(keep_tags=("gone",)), snaps) == {"2025-01-02 00:00:00": (NEWEST_FALLBACK,)}
    assert decide([], {}, Policy(keep_last=1)) == []


# -- combinations: the README's worked example -------------------------------------------

def test_the_worked_example_of_the_readme():
    """Noon every day from 2025-01-01 to Saturday 2025-03-15, with
    --keep-daily 7 --keep-weekly 4 --keep-monthly 3."""
    days = [datetime(2025, 1, 1, 12) + timedelta(days=i) for i in range(74)]
    snaps = entries(*[d.strftime("%Y-%m-%d %H:%M") for d in days])
    result = kept(Policy(keep_daily=7, keep_weekly=4, keep_monthly=3), snaps)
    assert result == {
        "2025-03-15 12:00:00": ("daily", "weekly", "monthly"),
        "2025-03-14 12:00:00": ("daily",), "2025-03-13 12:00:00": ("daily",),
        "2025-03-12 12:00:00": ("daily",), "2025-03-11 12:00:00": ("daily",),
        "2025-03-10 12:00:00": ("daily",),
        "2025-03-09 12:00:00": ("daily", "weekly"),   # Sunday: the end of ISO week 10
        "2025-03-02 12:00:00": ("weekly",), "2025-02-23 12:00:00": ("weekly",),
        "2025-02-28 12:00:00": ("monthly",), "2025-01-31 12:00:00": ("monthly",)}


def test_rules_combine_as_a_union():
    snaps = entries(*[f"2025-01-{d:02d} {h:02d}:00" for d in range(1, 20) for h in (3, 9, 15, 21)])
    parts = [Policy(keep_last=3), Policy(keep_daily=5), Policy(keep_weekly=2),
             Policy(keep_within=parse_duration("2d")), Policy(keep_within_hourly=parse_duration("1d"))]
    both = Policy(keep_last=3, keep_daily=5, keep_weekly=2, keep_within=parse_duration("2d"),
                  keep_within_hourly=parse_duration("1d"))
    union = set().union(*(kept(p, snaps) for p in parts))
    assert set(kept(both, snaps)) == union


# -- local time ------------------------------------------------------------------------

def test_buckets_are_local_time_of_the_zone_given():
    snaps = entries("2025-01-06 14:00", "2025-01-06 16:00")   # UTC
    daily = Policy(keep_within_daily=Duration(days=5))
    assert len(kept(daily, snaps)) == 1                         # one UTC day
    tokyo = zone("Asia/Tokyo")                                  # 23:00 and 01:00 there
    assert len([d for d in decide(snaps, {}, daily, tz=tokyo,
                                  now_ns=at("2026-01-01 00:00")) if d.keep]) == 2


def test_an_hour_lived_twice_at_the_end_of_summer_time_is_one_bucket():
    berlin = zone("Europe/Berlin")
    # 2025-10-26: 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET).
    snaps = [TimelineEntry(hash_bytes(str(t).encode()), at(t) , "main")
             for t in ("2025-10-26 00:30", "2025-10-26 01:30", "2025-10-26 02:30")]
    result = [d for d in decide(snaps, {}, Policy(keep_hourly=3), tz=berlin,
                                now_ns=at("2026-01-01 00:00")) if d.keep]
    # Local hours 03 and 02 (twice): the newest of each, then the oldest (counts left).
    assert [d.entry.time_ns for d in result] == [at("2025-10-26 02:30"), at("2025-10-26 01:30"),
                                                 at("2025-10-26 00:30")]
    assert kept(Policy(keep_hourly=2), snaps, tz=UTC) != {}
    two = [d for d in decide(snaps, {}, Policy(keep_hourly=2), tz=berlin,
                             now_ns=at("2026-01-01 00:00")) if d.keep]
    assert [d.entry.time_ns for d in two] == [at("2025-10-26 02:30"), at("2025-10-26 01:30")]


def test_days_change_at_local_midnight_across_the_start_of_summer_time():
    berlin = zone("Europe/Berlin")
    # 22:30 UTC on Mar 29 is 23:30 local on the 29th; 23:30 UTC is 00:30 on the 30th.
    snaps = [TimelineEntry(hash_bytes(t.encode()), at(t), "main")
             for t in ("2025-03-29 22:30", "2025-03-29 23:30")]
    assert sum(d.keep for d in decide(snaps, {}, Policy(keep_daily=1, keep_last=0), tz=berlin,
                                      now_ns=at("2026-01-01 00:00"))) == 1
    assert sum(d.keep for d in decide(snaps, {}, Policy(keep_within_daily=Duration(days=5)),
                                      tz=berlin, now_ns=at("2026-01-01 00:00"))) == 2


# -- durations and counts as typed -------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2h", Duration(hours=2)), ("30min", Duration(minutes=30)), ("7d", Duration(days=7)),
    ("1w", Duration(days=7)), ("3m", Duration(months=3)), ("1y2m3d4h", Duration(1, 2, 3, 4)),
    ("1Y", Duration(years=1)), ("2w1d", Duration(days=15)),
])
def test_durations_are_restics_plus_weeks_and_minutes(text, expected):
    assert parse_duration(text) == expected
    assert parse_duration(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "3", "3x", "d", "-1d", "1.5d", "0d", "1d 2h", "10000000y",
                                  "２d"])
def test_bad_durations_are_refused(text):
    with pytest.raises(RetentionRuleInvalid):
        parse_duration(text)


def test_counts_as_typed():
    assert count_from_text("7") == 7 and count_from_text("all") == ALL
    for bad in ("-1", "x", "1.5", "", "99999999999", "²", "１"):
        with pytest.raises(RetentionRuleInvalid):
            count_from_text(bad, "--keep-daily")
    with pytest.raises(RetentionRuleInvalid):
        Policy(keep_daily=-2)
    with pytest.raises(RetentionRuleInvalid):
        Tier(Duration(months=1), None)             # no fixed length
    with pytest.raises(RetentionRuleInvalid):
        Tier(Duration(hours=2), Duration(hours=1))  # longer than its window


def test_a_policy_round_trips_through_its_document():
    for policy in (WATCH_DEFAULT, Policy(), Policy(keep_last=ALL, keep_tags=("a", "b"),
                                                   keep_within_yearly=Duration(years=3))):
        assert Policy.from_doc(policy.to_doc()) == policy
    for doc in ({"lasst": 1}, {"last": "1"}, {"last": True}, {"every": [{"within": "1d"}]},
                {"within": 5}, {"tags": "a"}, []):
        with pytest.raises(RetentionRuleInvalid):
            Policy.from_doc(doc)


# -- the watcher's default over a year ---------------------------------------------------

YEAR_START = datetime(2025, 1, 6, tzinfo=UTC)   # a Monday
PER_DAY = 8 * 60 * 30                           # 30 a minute, 8 hours a day


def day_times(day: int) -> list[int]:
    """Day ``day``'s snapshots, 09:00 to 17:00 every 2 s, newest first."""
    first = int((YEAR_START + timedelta(days=day, hours=9)).timestamp()) * NS
    return list(range(first + (PER_DAY - 1) * 2 * NS, first - 1, -2 * NS))


def thin_daily(policy: Policy, days: int, finely_from: int):
    """Thinned at the end of each day, and every 10 minutes from day
    ``finely_from`` on (all the same as after each snapshot:
    test_thinning_as_it_goes_equals_thinning_once); yields the survivors."""
    survivors: list[int] = []
    for day in range(days):
        new = day_times(day)
        step = 300 if day >= finely_from else len(new)
        for end in range(len(new), 0, -step):
            times = new[end - step:end] + survivors
            reasons = keep_reasons(times, policy, UTC, times[0] + NS)
            survivors = [times[i] for i in sorted(reasons)]
            yield day, survivors, reasons


def test_a_year_of_watcher_history_keeps_at_most_600_and_every_day_older_than_a_week():
    started = time.perf_counter()
    most = 0
    for day, survivors, reasons in thin_daily(WATCH_DEFAULT, 365, finely_from=363):
        most = max(most, len(survivors))
    assert most <= 600
    days_kept = {(t // NS - int(YEAR_START.timestamp())) // 86400 for t in survivors}
    assert set(range(0, 365 - 7)) <= days_kept
    by_rule = Counter(r for why in reasons.values() for r in why)
    print(f"\n{len(survivors)} kept after a year, at most {most} "
          f"({time.perf_counter() - started:.1f} s): {dict(by_rule)}")
    assert len(survivors) == 567  # the README's table


def test_thinning_as_it_goes_equals_thinning_once():
    """An hour and a half at 30 a minute, thinned after every snapshot with
    decide(), as the watcher does, ends where one decision over all of it does."""
    snaps = [TimelineEntry(hash_bytes(str(i).encode()), at("2025-01-06 09:00") + i * 2 * NS, "w")
             for i in range(90 * 30)]
    survivors: list[TimelineEntry] = []
    for snap in snaps:
        survivors = [d.entry for d in decide([snap] + survivors, {}, WATCH_DEFAULT, tz=UTC,
                                             now_ns=snap.time_ns + NS) if d.keep]
    once = [d.entry for d in decide(snaps, {}, WATCH_DEFAULT, tz=UTC,
                                    now_ns=snaps[-1].time_ns + NS) if d.keep]
    assert survivors == once and 100 < len(once) < 200


# -- properties ------------------------------------------------------------------------

RULES = st.one_of(
    st.builds(lambda n: Policy(keep_last=n), st.sampled_from([ALL, 1, 2, 5])),
    *[st.builds(lambda n, u=u: Policy(**{f"keep_{u}": n}), st.sampled_from([ALL, 1, 2, 3]))
      for u in ("hourly", "daily", "weekly", "monthly")],
    st.builds(lambda d: Policy(keep_within=d), st.sampled_from([Duration(hours=5), Duration(days=2)])),
    *[st.builds(lambda d, u=u: Policy(**{f"keep_within_{u}": d}),
                st.sampled_from([Duration(hours=7), Duration(days=3), Duration(months=1)]))
      for u in ("hourly", "daily", "weekly")],
    st.builds(lambda e, w: Policy(keep_every=(Tier(Duration(minutes=e), Duration(days=w)),)),
              st.sampled_from([1, 10, 45, 60]), st.sampled_from([1, 2])),
)
TIMES = st.lists(st.integers(0, 40 * 86400), min_size=1, max_size=60, unique=True)


def rules_of(policy: Policy) -> dict:
    return {name: value for name, value in vars(policy).items() if value not in (None, ())}


def distinct(policies: list[Policy]) -> list[Policy]:
    """The policies, less any repeating a rule an earlier one sets (tiers may repeat)."""
    seen: set[str] = set()
    out = []
    for p in policies:
        names = set(rules_of(p)) - {"keep_every"}
        if not names & seen:
            out.append(p)
            seen |= names
    return out


def merged(*policies: Policy) -> Policy:
    values: dict = {}
    for p in policies:
        for name, value in rules_of(p).items():
            values[name] = values.get(name, ()) + value if name == "keep_every" else value
    return Policy(**values)


def has_calendar_window(policy: Policy) -> bool:
    """Whether a window of the policy is months or years long."""
    windows = [policy.keep_within] + [getattr(policy, f"keep_within_{u}") for u in
                                      ("hourly", "daily", "weekly", "monthly", "yearly")]
    windows += [t.within for t in policy.keep_every]
    return any(d is not None and d.fixed_seconds() is None for d in windows)


def thinned_as_it_goes(times: list[int], policy: Policy) -> list[int]:
    """The watcher's way: decide after each snapshot (newest first in, out)."""
    survivors: list[int] = []
    for t in reversed(times):
        current = [t] + survivors
        survivors = [current[i] for i in sorted(keep_reasons(current, policy, UTC, t + NS))]
    return survivors


@settings(max_examples=300, deadline=None)
@given(st.lists(RULES, min_size=1, max_size=3), TIMES)
@example([Policy(keep_within_weekly=Duration(months=1))], [1, 2419201, 2678400])
def test_property_thinning_after_each_snapshot_equals_thinning_once(rules, offsets):
    """With every window a fixed length (minutes, hours, days, weeks; UTC),
    thinning after each snapshot keeps exactly what one decision over all
    of them keeps: a window's start (newest minus its length) never moves
    back as snapshots arrive, so nothing forgotten would have been kept.

    With a window of months or years (restic's calendar arithmetic, Go's
    AddDate), it keeps a subset of what one decision keeps: Mar 29 minus a
    month is "Feb 29", that is Mar 1, later than Apr 1 minus a month, so a
    window's start can move back and a snapshot it dropped would be inside
    it again (test_a_month_window_can_reach_back_past_a_snapshot_it_dropped)."""
    policy = merged(*distinct(rules))
    times = sorted((at("2025-03-01 00:00") + s * NS for s in offsets), reverse=True)
    survivors = thinned_as_it_goes(times, policy)
    once = [times[i] for i in sorted(keep_reasons(times, policy, UTC, times[0] + NS))]
    if has_calendar_window(policy):
        assert set(survivors) <= set(once)
    else:
        assert survivors == once


@pytest.mark.parametrize("rule", ["keep_within", "keep_within_hourly", "keep_within_daily",
                                  "keep_within_weekly"])
def test_a_month_window_can_reach_back_past_a_snapshot_it_dropped(rule):
    """restic's semantics, kept: the window counts back a calendar month from
    the newest, normalized as Go's AddDate does (Feb 29 2025 is Mar 1)."""
    policy = Policy(**{rule: Duration(months=1)})
    times = [at("2025-04-01 00:00:00"), at("2025-03-29 00:00:01"), at("2025-03-01 00:00:01")]
    # Once, from Apr 1: the window starts Mar 1 00:00:00 and holds all three.
    assert 2 in keep_reasons(times, policy, UTC, times[0] + NS)
    # As it goes: from Mar 29 00:00:01 it started Mar 1 00:00:01, not after it.
    assert thinned_as_it_goes(times, policy) == times[:2]


@settings(max_examples=300, deadline=None)
@given(st.lists(RULES, min_size=2, max_size=3), TIMES)
def test_property_a_snapshot_is_kept_if_any_rule_keeps_it(rules, offsets):
    times = sorted((at("2025-03-01 00:00") + s * NS for s in offsets), reverse=True)
    now = times[0] + NS
    rules = distinct(rules)
    alone = [keep_reasons(times, p, UTC, now) for p in rules]
    together = keep_reasons(times, merged(*rules), UTC, now)
    fallback = {i for r in alone for i, why in r.items() if why == [NEWEST_FALLBACK]}
    assert set(together) == set().union(*(set(r) for r in alone)) - fallback or \
        set(together) == {0}


def test_applying_the_default_to_100000_snapshots_is_fast():
    """No timed assertion; the figure is printed (-s) for docs/PERFORMANCE.md."""
    base = at("2025-01-06 00:00")
    snaps = [TimelineEntry(hash_bytes(str(i).encode()), base - i * 60 * NS, "w") for i in range(100_000)]
    started = time.perf_counter()
    decisions = decide(snaps, {}, WATCH_DEFAULT, tz=UTC, now_ns=base + NS)
    print(f"\ndecide over 100,000 snapshots: {time.perf_counter() - started:.3f} s")
    assert len(decisions) == 100_000 and 0 < sum(d.keep for d in decisions) < 1000


def test_crafted_times_far_outside_the_calendar_are_decided_not_fatal():
    times = [(1 << 63) - 1, 10**18 * 9, 1_700_000_000 * NS, -(10**18) * 9, -(1 << 63)]
    snaps = [TimelineEntry(hash_bytes(str(t).encode()), t, "main") for t in times]
    everything = Policy(keep_last=2, keep_hourly=ALL, keep_daily=3, keep_weekly=2, keep_monthly=ALL,
                        keep_yearly=ALL, keep_within=Duration(years=5),
                        keep_within_monthly=Duration(years=1000),
                        keep_every=(Tier(Duration(minutes=10)),))
    for tz in (UTC, None):
        decisions = decide(snaps, {}, everything, tz=tz, now_ns=0)
        assert [d.entry.time_ns for d in decisions] == sorted(times, reverse=True)
        assert all(d.keep for d in decisions)   # each one alone in its buckets
