"""Time specs (--since, --until, --at, --time) as git's approxidate users type them.

The unit tests resolve against a fixed 'now' in a fixed zone: Monday
2026-03-30 10:30 in Berlin, the day after the clocks went forward, so that
'yesterday' is a 23-hour day and day arithmetic cannot pass as hour arithmetic.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import click
import pytest

from cas.cli.timespec import parse_time_ns

CET, CEST = timezone(timedelta(hours=1)), timezone(timedelta(hours=2))
NOW = datetime(2026, 3, 30, 10, 30, 15, tzinfo=CEST)
HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS


def ns(dt: datetime) -> int:
    return int(dt.timestamp()) * 10**9


NOW_NS = ns(NOW) + 123_456_789      # nanoseconds survive relative forms


@pytest.fixture(autouse=True)
def berlin(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def at(text: str) -> int:
    return parse_time_ns(text, now_ns=NOW_NS)


@pytest.mark.parametrize("text, want", [
    # Kept from before: ISO 8601 (naive is local), 'N units ago', 'now'.
    ("2026-03-25T14:00", ns(datetime(2026, 3, 25, 14, tzinfo=CET))),
    ("2026-03-25 14:00:00+00:00", ns(datetime(2026, 3, 25, 14, tzinfo=timezone.utc))),
    ("2026-03-25t14:00z", ns(datetime(2026, 3, 25, 14, tzinfo=timezone.utc))),
    ("20260325", ns(datetime(2026, 3, 25, tzinfo=CET))),
    ("2h ago", NOW_NS - 2 * HOUR_NS),
    ("3 days ago", NOW_NS - 3 * DAY_NS),
    ("1.5 days ago", NOW_NS - 36 * HOUR_NS),
    ("now", NOW_NS),
    (" NOW ", NOW_NS),
    # Relative, in words and short.
    ("2d", NOW_NS - 2 * DAY_NS),
    ("10 min", NOW_NS - 600 * 10**9),
    ("two weeks ago", NOW_NS - 14 * DAY_NS),
    ("an hour ago", NOW_NS - HOUR_NS),
    ("a week ago", NOW_NS - 7 * DAY_NS),
    ("2.days.ago", NOW_NS - 2 * DAY_NS),
    ("last week", NOW_NS - 7 * DAY_NS),
    ("1 month ago", ns(datetime(2026, 2, 28, 10, 30, 15, tzinfo=CET)) + 123_456_789),
    ("2 years ago", ns(datetime(2024, 3, 30, 10, 30, 15, tzinfo=CET)) + 123_456_789),
    # Days: midnight, local, across the clock change.
    ("today", ns(datetime(2026, 3, 30, tzinfo=CEST))),
    ("yesterday", ns(datetime(2026, 3, 29, tzinfo=CET))),
    ("monday", ns(datetime(2026, 3, 30, tzinfo=CEST))),      # today is a Monday
    ("last monday", ns(datetime(2026, 3, 23, tzinfo=CET))),
    ("friday", ns(datetime(2026, 3, 27, tzinfo=CET))),
    ("Sun", ns(datetime(2026, 3, 29, tzinfo=CET))),
    # Clock times: today unless a day is named.
    ("03:43", ns(datetime(2026, 3, 30, 3, 43, tzinfo=CEST))),
    ("14:00:05", ns(datetime(2026, 3, 30, 14, 0, 5, tzinfo=CEST))),
    ("noon", ns(datetime(2026, 3, 30, 12, tzinfo=CEST))),
    ("midnight", ns(datetime(2026, 3, 30, tzinfo=CEST))),
    ("3pm", ns(datetime(2026, 3, 30, 15, tzinfo=CEST))),
    ("12:30am", ns(datetime(2026, 3, 30, 0, 30, tzinfo=CEST))),
    ("yesterday 14:00", ns(datetime(2026, 3, 29, 14, tzinfo=CEST))),
    ("yesterday 01:30", ns(datetime(2026, 3, 29, 1, 30, tzinfo=CET))),
    ("noon yesterday", ns(datetime(2026, 3, 29, 12, tzinfo=CEST))),
    ("last friday 9am", ns(datetime(2026, 3, 27, 9, tzinfo=CET))),
    # Epoch seconds, as git's '@1234567890'.
    (f"@{ns(NOW) // 10**9}", ns(NOW)),
    ("@1.5", 1_500_000_000),
])
def test_accepted_forms(text, want):
    assert at(text) == want


@pytest.mark.parametrize("text", [
    "03/04/2026",           # March or April?
    "next monday", "tomorrow", "in 2 days",     # the future is no history
    "2", "14",              # a bare number: days? hours? a year?
    "500ms", "0.5 months ago", "last week ago", "last",
    "yesterday today", "monday friday", "14:00 15:00", "yesterday 14:00 2d",
    "25:00", "13pm", "12:60", "2026-02-30", "yesterday-ish", "", "   ",
    "9" * 400 + " years ago",
])
def test_ambiguous_or_unknown_input_is_refused_with_the_accepted_forms(text):
    with pytest.raises(click.BadParameter) as e:
        at(text)
    message = e.value.message
    assert "\n" not in message and "not a time" in message
    for form in ("ISO 8601", "2h ago", "yesterday", "monday", "03:43", "@EPOCH"):
        assert form in message


def test_the_same_words_in_another_zone(monkeypatch):
    """The zone comes from TZ: midnight yesterday in New York is 04:00 UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    now = ns(datetime(2026, 3, 30, 12, tzinfo=timezone.utc))
    assert parse_time_ns("yesterday", now_ns=now) == ns(datetime(2026, 3, 29, 4, tzinfo=timezone.utc))
    assert parse_time_ns("noon", now_ns=now) == ns(datetime(2026, 3, 30, 16, tzinfo=timezone.utc))


def test_huge_relative_counts_stay_exact():
    """'9...9 days ago' is a time before year 1 (shown as a number, refused
    where it must be a real date), to the nanosecond: no float infinity, no
    rounding to Decimal's 28 digits."""
    assert at("9" * 400 + " days ago") == NOW_NS - int("9" * 400) * DAY_NS


def test_cli_takes_the_new_forms_and_refuses_in_one_line(tmp_path, cas):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    assert cas("init", cwd=root).code == 0
    old = cas("snapshot", "-m", "old", "--time", "2 days ago", cwd=root).text.strip()
    (root / "a.txt").write_text("b\n")
    new = cas("snapshot", "-m", "new", "--time", "now", cwd=root).text.strip()

    def ids(*args):
        r = cas("log", "--json", *args, cwd=root)
        assert r.code == 0, r.err
        return [s["id"] for s in json.loads(r.out)]

    assert ids("--since", "yesterday") == [new]
    assert ids("--since", "3d") == [new, old]
    assert ids("--until", "yesterday noon") == [old]
    r = cas("log", "--since", "03/04/2026", cwd=root)
    assert r.code == 2 and "Traceback" not in r.err
    error = [line for line in r.err.splitlines() if "not a time" in line]
    assert len(error) == 1 and "'yesterday 14:00'" in error[0]
