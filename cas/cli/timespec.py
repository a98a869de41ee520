"""Times on the command line: ISO 8601, or relative ('2h ago', '3 days ago')."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import click

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600,
          "hour": 3600, "d": 86400, "day": 86400, "w": 604800, "week": 604800}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s+ago\s*$")


def parse_time_ns(text: str) -> int:
    """Nanoseconds since the epoch; naive ISO times are taken as local time."""
    text = text.strip()
    if text == "now":
        return time.time_ns()
    m = _RELATIVE.match(text.lower())
    try:
        if m and m.group(2) in _UNITS:
            # Decimal arithmetic: '1e400 days' must not become float infinity.
            ago = Decimal(m.group(1)) * _UNITS[m.group(2)] * 10**9
            return time.time_ns() - int(ago)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = _as_local(dt)
        # Exact: timestamp() of year 1 in a zone west of UTC falls outside
        # what datetime can represent, and floats lose nanoseconds.
        return (dt - _EPOCH) // timedelta(microseconds=1) * 1000
    except (ValueError, OverflowError, ArithmeticError):
        raise click.BadParameter(
            f"'{text}' is not a time: use ISO 8601 (2026-11-25T14:00) or '2h ago'") from None


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
    """Local time for people; a crafted time beyond years 1-9999 is shown as a number."""
    try:
        return (_EPOCH + timedelta(microseconds=ns // 1000)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return f"{'+' if ns > 0 else ''}{ns} ns"


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'2s', '500ms', '5m', '1h', or a bare number of seconds."""
    import re
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
