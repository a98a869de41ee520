"""Adversarial tests of retention and maintenance: the policy engine against
an independent transcription of restic's rules, crafted policy files, forks
and tags under thinning, gc after thinning, SIGKILL of `cas maintain`, and a
real watcher thinning while forget, maintain and snapshot run beside it.

CAS_FUZZ_EXAMPLES scales the property tests (default 300).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cas.model.retention import ALL, Duration, Policy, Tier, keep_reasons

NS = 1_000_000_000
EXAMPLES = int(os.environ.get("CAS_FUZZ_EXAMPLES", "300"))
ENV = {**os.environ, "TZ": "UTC"}
ENV.pop("CAS_STORE", None)


def cas(*args: str, cwd: Path, check: bool = True, env: dict | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess."""
    r = subprocess.run([sys.executable, "-m", "cas.cli", *args], cwd=cwd, env=env or ENV,
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, (args, r.returncode, r.stderr)
    return r


def one_line_error(r: subprocess.CompletedProcess, codes=(1, 2)) -> None:
    assert r.returncode in codes, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr


def snapshot(root: Path, when: str, *extra: str) -> str:
    r = cas("--quiet", "snapshot", "--allow-empty", "--json", "--time", when, *extra, cwd=root)
    return json.loads(r.stdout)["id"]


def logged(root: Path, *extra: str) -> list[str]:
    return [s["id"] for s in json.loads(cas("log", "--json", *extra, cwd=root).stdout)]


def branches(root: Path) -> dict[str, str]:
    doc = json.loads(cas("branch", "--json", cwd=root).stdout)
    rows = doc if isinstance(doc, list) else [dict(name=k, **(v if isinstance(v, dict) else {"id": v}))
                                              for k, v in doc.items()]
    return {row["name"]: row.get("id") or row.get("snapshot") for row in rows}


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and ".cas" not in p.parts}


def restored(root: Path, snap: str, dest: Path) -> dict[str, str]:
    cas("--quiet", "restore", snap, "--to", str(dest), cwd=root)
    return tree_digest(dest)


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "tree"
    r.mkdir()
    (r / "f.txt").write_text("zero\n")
    cas("--quiet", "init", cwd=r)
    return r


# -- the engine against restic's rules, transcribed independently --------------------
# internal/restic/snapshot_policy.go (restic 0.17), ApplyPolicy: newest first; a
# bucket rule keeps a snapshot when its bucket differs from the last kept one's,
# or when it is the oldest and the rule has counts left; within-rules count back
# from the newest snapshot not in the future, strictly after the cutoff.

UNIT_NAMES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def restic_bucket(unit: str, t_ns: int, tz, nr: int) -> int:
    d = datetime.fromtimestamp(t_ns // NS, tz)
    if unit == "last":
        return nr
    if unit == "hourly":
        return d.year * 1000000 + d.month * 10000 + d.day * 100 + d.hour
    if unit == "daily":
        return d.year * 10000 + d.month * 100 + d.day
    if unit == "weekly":
        year, week, _ = d.isocalendar()
        return year * 100 + week
    if unit == "monthly":
        return d.year * 100 + d.month
    return d.year


def restic_apply(times, counts, within_h, within_unit_h, tz, now_ns) -> set[int]:
    latest = max((t for t in times if t < now_ns), default=None)
    cutoff = (lambda h: None if latest is None else latest - h * 3600 * NS)
    counted = {u: [n, None] for u, n in counts.items() if n}
    last_within = {u: None for u in within_unit_h}
    keep = set()
    for nr, t in enumerate(times):
        if within_h is not None and (cutoff(within_h) is None or t > cutoff(within_h)):
            keep.add(nr)
        for u in UNIT_NAMES:
            b = counted.get(u)
            if b and (b[0] > 0 or b[0] == -1):
                val = restic_bucket(u, t, tz, nr)
                if val != b[1] or nr == len(times) - 1:
                    keep.add(nr)
                    b[1] = val
                    b[0] -= b[0] > 0
        for u, h in within_unit_h.items():
            if cutoff(h) is None or t > cutoff(h):
                val = restic_bucket(u, t, tz, nr)
                if val != last_within[u]:
                    keep.add(nr)
                    last_within[u] = val
    return keep


ZONES = ("UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Chatham",
         "Europe/Dublin", "America/St_Johns", "Pacific/Apia", "Africa/Casablanca",
         "Europe/Amsterdam", "Asia/Kathmandu")
# DST changes (US spring and fall 2021, Lord Howe's half hour, Samoa skipping
# 2011-12-30), the epoch, and a time before it.
ANCHORS = (1615705200, 1636264800, 1617458400, 1325152800, 1711846800, 0, -2_000_000_000)


@st.composite
def histories(draw):
    anchor = draw(st.sampled_from(ANCHORS))
    span = draw(st.sampled_from([120, 7200, 86400 * 3, 86400 * 60, 86400 * 800]))
    times = sorted((anchor + draw(st.integers(-span, span))) * NS + draw(st.integers(0, NS - 1))
                   for _ in range(draw(st.integers(1, 40))))[::-1]
    counts = {u: draw(st.sampled_from([None, None, 1, 2, 3, 7, ALL])) for u in UNIT_NAMES}
    within_h = draw(st.sampled_from([None, None, 1, 5, 30, 24 * 9]))
    units = draw(st.sets(st.sampled_from(UNIT_NAMES[1:])))
    within_unit_h = {u: draw(st.sampled_from([1, 3, 50, 24 * 40])) for u in units}
    now = draw(st.sampled_from([times[0] + NS, times[-1], times[len(times) // 2] + 1]))
    return times, counts, within_h, within_unit_h, draw(st.sampled_from(ZONES)), now


def _policy(counts, within_h, within_unit_h) -> Policy:
    return Policy(**{f"keep_{u}": n for u, n in counts.items() if n is not None},
                  keep_within=Duration(hours=within_h) if within_h else None,
                  **{f"keep_within_{u}": Duration(hours=h) for u, h in within_unit_h.items()})


def _expected(policy, times, counts, within_h, within_unit_h, tz, now) -> set[int]:
    if policy.is_empty:
        return set(range(len(times)))
    return restic_apply(times, counts, within_h, within_unit_h, tz, now) or {0}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(histories())
def test_engine_agrees_with_restic_in_odd_zones_and_across_dst(case):
    times, counts, within_h, within_unit_h, zone, now = case
    tz = ZoneInfo(zone)
    policy = _policy(counts, within_h, within_unit_h)
    kept = set(keep_reasons(times, policy, tz, now))
    assert kept == _expected(policy, times, counts, within_h, within_unit_h, tz, now), \
        (policy.describe(), zone)


@settings(max_examples=max(EXAMPLES // 3, 30), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(histories())
def test_engine_in_local_time_agrees_with_restic(case):
    """tz=None (what the command line uses) reads the C library's local time."""
    times, counts, within_h, within_unit_h, zone, now = case
    old = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        policy = _policy(counts, within_h, within_unit_h)
        kept = set(keep_reasons(times, policy, None, now))
    finally:
        os.environ["TZ"] = old if old is not None else "UTC"
        time.tzset()
    assert kept == _expected(policy, times, counts, within_h, within_unit_h, ZoneInfo(zone), now)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(histories(), st.sampled_from([1, 10, 60, 1440]), st.sampled_from([None, 30, 600, 20000]))
def test_keep_every_is_the_newest_of_each_local_interval(case, every_min, within_min):
    """keep_every's rule, brute force: the newest of each run of snapshots
    sharing a local interval (wall clock seconds from a Monday // interval),
    among those after the newest minus WITHIN."""
    times, _, _, _, zone, now = case
    if within_min is not None and within_min < every_min:
        within_min = every_min
    tz = ZoneInfo(zone)
    tier = Tier(Duration(minutes=every_min), Duration(minutes=within_min) if within_min else None)
    kept = set(keep_reasons(times, Policy(keep_every=(tier,)), tz, now))
    latest = max((t for t in times if t < now), default=None)
    cutoff = None if within_min is None or latest is None else latest - within_min * 60 * NS
    expected, previous = set(), object()
    for i, t in enumerate(times):
        if cutoff is not None and t <= cutoff:
            break
        seconds = t // NS
        local = seconds + int(datetime.fromtimestamp(seconds, tz).utcoffset().total_seconds())
        key = (local + 3 * 86400) // (every_min * 60)
        if key != previous:
            expected.add(i)
            previous = key
    assert kept == (expected or {0})
