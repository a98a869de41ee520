"""Times on the command line: ISO 8601, or relative ('2h ago', '3 days ago')."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import click

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600,
          "hour": 3600, "d": 86400, "day": 86400, "w": 604800, "week": 604800}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s+ago\s*$")


def parse_time_ns(text: str) -> int:
    """Nanoseconds since the epoch; naive ISO times are taken as local time."""
    text = text.strip()
    if text == "now":
        return time.time_ns()
    m = _RELATIVE.match(text.lower())
    if m and m.group(2) in _UNITS:
        return time.time_ns() - int(float(m.group(1)) * _UNITS[m.group(2)] * 1e9)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"'{text}' is not a time: use ISO 8601 (2026-11-25T14:00) or '2h ago'") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return int(dt.timestamp() * 1e9)


class TimeParam(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):
        return value if isinstance(value, int) else parse_time_ns(value)


def show_time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


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
