"""When ``cas watch`` acts: its scheduling rules as pure functions of its
state and a clock.

The watcher copies what the rules need (``ScheduleState``) under its lock,
reads its clocks, and asks ``decide`` what to do: snapshot now (and why,
which paths to hold back, whether in full), run maintenance now, or wait,
at most until the next moment a rule could fire. Nothing here reads a
clock, sleeps, locks or logs, so tests drive the rules with any clock and
any sequence of events, without threads.

The rules (see ``cas.ops.watch`` for why):

* after a failed snapshot nothing is attempted before ``not_before``
  (a final snapshot at a stop excepted);
* a change is *quiet* once no event has touched it for the quiet period;
  an unsettled change that is not quiet is *held*: left out of the snapshot;
* snapshot when the whole backlog is quiet ("quiet"); or, while writes keep
  coming, once the oldest settled change has waited the quiet period less
  what a snapshot recently took, and at least half of it ("settled"); or
  once the oldest change has waited the max interval, taking held files as
  they are, in a full scan ("max-interval"); with no backlog, a full scan
  once a rescan interval ("rescan");
* maintenance once a maintain interval (wall clock, as it must outlive
  restarts), only while idle: no backlog, no retry pending, no snapshot
  backing off, and its own trouble's retry time passed;
* trouble is retried after a delay that doubles from the first to the cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

SNAPSHOT = "snapshot"
MAINTAIN = "maintain"
WAIT = "wait"
MIN_WAIT = 0.001   # the shortest sleep: a rule due "now" by float rounding is not a busy loop


@dataclass
class Change:
    first: float               # monotonic time of the first event since the last snapshot
    last: float                # ... of the latest
    settled: bool              # complete: safe to snapshot as it is
    relist_only: bool = False  # a directory whose listing changed, not the directory itself


@dataclass(frozen=True)
class Timing:
    """The intervals of the rules, in seconds (``WatchOptions``' own)."""
    quiet_period: float
    max_interval: float
    rescan_interval: float
    maintain_interval: float    # 0: never
    longest_wait: float = 5.0   # the loop looks around at least this often


@dataclass(frozen=True)
class ScheduleState:
    """What the rules read: a consistent copy of the watcher's state.
    Times are monotonic, except ``maintenance_from`` (wall clock)."""
    changes: Mapping[str, Change]
    retry: Mapping[str, float] = field(default_factory=dict)  # path: when it is retried
    not_before: float = 0.0            # after a failed snapshot, the next waits until then
    last_full: float = 0.0             # when the last full scan ran
    snapshot_seconds: float = 0.0      # recent cost of a targeted snapshot
    maintenance_from: float | None = None      # the maintain interval counts from this
    maintenance_retry_at: float | None = None  # maintenance in trouble: not before this


@dataclass(frozen=True)
class Decision:
    action: str                       # SNAPSHOT, MAINTAIN or WAIT
    reason: str = ""                  # SNAPSHOT: stop, quiet, settled, max-interval, rescan
    held: frozenset[str] = frozenset()  # SNAPSHOT: paths still being written, kept out
    full_scan: bool = False           # SNAPSHOT: the rule needs a full scan
    wait: float = 0.0                 # WAIT: seconds until a rule may fire, at most
    events_wake: bool = True          # WAIT: whether a new event ends it (not while backing off)


def decide(state: ScheduleState, timing: Timing, now: float, wall: float,
           final: bool = False) -> Decision:
    """What the watcher does at monotonic time ``now`` (wall clock ``wall``).
    ``final``: the watcher stops; the last snapshot is taken whatever the rules say."""
    if final:
        return Decision(SNAPSHOT, "stop", held_paths(state.changes, timing.quiet_period, now))
    if now < state.not_before:
        # In trouble: no event can be acted on before the retry.
        return Decision(WAIT, wait=max(state.not_before - now, MIN_WAIT), events_wake=False)
    snapshot = snapshot_rule(state, timing, now)
    if snapshot is not None:
        return snapshot
    if maintenance_due(state, timing, now, wall):
        return Decision(MAINTAIN)
    until = next_due(state, timing, now, wall) - now
    return Decision(WAIT, wait=min(max(until, MIN_WAIT), timing.longest_wait))


def held_paths(changes: Mapping[str, Change], quiet: float, now: float) -> frozenset[str]:
    """Changes still being written: not settled, and touched within the quiet period."""
    return frozenset(p for p, c in changes.items() if not c.settled and now - c.last < quiet)


def settle_wait(timing: Timing, snapshot_seconds: float) -> float:
    """How long the oldest settled change waits under a steady stream of
    writes: a quiet period less what a snapshot takes, so that a completed
    file is in history about one quiet period after it was written."""
    quiet = timing.quiet_period
    return max(quiet / 2, quiet - snapshot_seconds)


def snapshot_rule(state: ScheduleState, timing: Timing, now: float) -> Decision | None:
    """A snapshot due at ``now`` (not backing off), or None."""
    changes, quiet = state.changes, timing.quiet_period
    if not changes:
        if now - state.last_full >= timing.rescan_interval:
            return Decision(SNAPSHOT, "rescan", full_scan=True)
        return None
    if now - min(c.first for c in changes.values()) >= timing.max_interval:
        # A safety net under a steady stream of writes: held files taken as they are.
        return Decision(SNAPSHOT, "max-interval", full_scan=True)
    settled = [c.first for c in changes.values() if c.settled or now - c.last >= quiet]
    if not settled:
        return None
    held = held_paths(changes, quiet, now)
    if now - max(c.last for c in changes.values()) >= quiet:
        return Decision(SNAPSHOT, "quiet", held)
    if now - min(settled) >= settle_wait(timing, state.snapshot_seconds):
        return Decision(SNAPSHOT, "settled", held)
    return None


def maintenance_due(state: ScheduleState, timing: Timing, now: float, wall: float) -> bool:
    """Whether ``cas maintain`` runs now: its interval has passed, the
    watcher is idle, and a failed run's retry time has come."""
    interval = timing.maintain_interval
    if interval <= 0 or state.maintenance_from is None:
        return False
    if state.changes or state.retry or now < state.not_before:
        return False
    if state.maintenance_retry_at is not None and now < state.maintenance_retry_at:
        return False
    return wall - state.maintenance_from >= interval


def next_due(state: ScheduleState, timing: Timing, now: float, wall: float) -> float:
    """The earliest monotonic time at which a rule may fire if no event
    comes: the loop sleeps until then (an event wakes it sooner)."""
    quiet = timing.quiet_period
    times = [now + timing.longest_wait, *state.retry.values()]
    changes = state.changes
    if changes:
        times.append(min(c.first for c in changes.values()) + timing.max_interval)
        times.append(max(c.last for c in changes.values()) + quiet)
        wait = settle_wait(timing, state.snapshot_seconds)
        times.extend(max(c.first + wait, c.first if c.settled else c.last + quiet)
                     for c in changes.values())
    else:
        times.append(state.last_full + timing.rescan_interval)
        if timing.maintain_interval > 0 and state.maintenance_from is not None \
                and not state.retry:
            times.append(max(now + state.maintenance_from + timing.maintain_interval - wall,
                             state.maintenance_retry_at or now))
    return min(times)


def due_retries(retry: Mapping[str, float], now: float) -> list[str]:
    """Paths whose retry time has come: they become changes again."""
    return [p for p, at in retry.items() if at <= now]


def next_backoff(previous: float, first: float, cap: float) -> float:
    """The delay before the next attempt at something that keeps failing:
    ``first``, then doubled each time, up to ``cap``."""
    return first if previous <= 0 else min(previous * 2, cap)
