"""The watcher's scheduling rules (cas.ops.watch_schedule), driven by an
injected clock over generated event sequences: no threads, no sleeps.
And the lock discipline of the watcher's shared state, checked on its source."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cas.ops.watch_schedule import (
    MAINTAIN,
    MIN_WAIT,
    SNAPSHOT,
    WAIT,
    Change,
    ScheduleState,
    Timing,
    decide,
    next_backoff,
)

EPS = 1e-6
WATCH_PY = Path(__file__).resolve().parent.parent / "cas" / "ops" / "watch.py"

timings = st.builds(
    lambda quiet, max_factor, rescan, maintain: Timing(quiet, quiet * max_factor, rescan, maintain),
    st.floats(0.05, 5.0), st.floats(1.0, 20.0), st.floats(10.0, 500.0),
    st.sampled_from([0.0, 30.0, 200.0]))
# An event: (seconds since the previous one, which path, whether it completes the file)
events = st.lists(st.tuples(st.floats(0.0, 3.0), st.integers(0, 4), st.booleans()),
                  min_size=1, max_size=40)


class Run:
    """A watcher reduced to its schedule: a backlog, a loop that asks
    ``decide`` and does what it says, and a clock that only the test moves."""

    def __init__(self, timing: Timing, snapshot_cost: float):
        self.timing, self.cost = timing, snapshot_cost
        self.changes: dict[str, Change] = {}
        self.now = 0.0            # the loop's monotonic clock
        self.wall_offset = 1e9    # wall clock = monotonic + this
        self.last_full = 0.0
        self.maintenance_from = self.wall_offset
        self.snapshots: list[tuple[float, str, dict[str, Change], frozenset[str]]] = []
        self.maintained: list[float] = []

    def state(self) -> ScheduleState:
        return ScheduleState(self.changes, last_full=self.last_full,
                             snapshot_seconds=self.cost, maintenance_from=self.maintenance_from)

    def note(self, path: str, settled: bool, at: float) -> None:
        c = self.changes.get(path)
        if c is None:
            self.changes[path] = Change(at, at, settled)
        else:
            c.last, c.settled = at, settled

    def loop_until(self, t: float) -> None:
        """Run the loop until the next event comes at ``t`` (which wakes it)."""
        while self.now < t:
            d = decide(self.state(), self.timing, self.now, self.now + self.wall_offset)
            if d.action == SNAPSHOT:
                self.snapshot(d.reason, d.held)
            elif d.action == MAINTAIN:
                assert not self.changes
                self.maintained.append(self.now)
                self.maintenance_from = self.now + self.wall_offset
                self.now += self.cost
            else:
                check_no_rule_fires_before(self.state(), self.timing, self.now, d.wait,
                                           self.wall_offset)
                self.now = min(self.now + d.wait, t)

    def snapshot(self, reason: str, held: frozenset[str]) -> None:
        taken = {p: c for p, c in self.changes.items() if p not in held}
        self.snapshots.append((self.now, reason, taken, held))
        for p in taken:
            del self.changes[p]
        if reason in ("max-interval", "rescan"):
            self.last_full = self.now
        self.now += self.cost


def check_no_rule_fires_before(state, timing, now, wait, wall_offset) -> None:
    """The loop sleeps ``wait``: no rule may fire during it (or a snapshot
    would come late), and it is never a busy loop nor longer than the longest wait."""
    assert MIN_WAIT <= wait <= timing.longest_wait + EPS
    for t in (now, now + (wait - MIN_WAIT) / 2, now + wait - MIN_WAIT - EPS):
        if t >= now:
            assert decide(state, timing, t, t + wall_offset).action == WAIT, (t, now, wait)


def play(timing: Timing, sequence, cost: float) -> tuple[Run, float]:
    run = Run(timing, cost)
    at = 0.0
    for gap, path, closed in sequence:
        at += gap
        run.loop_until(at)
        run.note(f"f{path}", closed, at)
    return run, at


@settings(max_examples=80, deadline=None)
@given(timings, events, st.floats(0.0, 2.0))
def test_no_file_is_taken_during_its_quiet_period_unless_the_max_interval_passed(timing, sequence,
                                                                                 cost):
    run, _ = play(timing, sequence, cost)
    quiet = timing.quiet_period
    for now, reason, taken, held in run.snapshots:
        if reason == "max-interval":
            continue
        if reason == "rescan":  # an hourly full scan of an idle tree
            assert not taken and not held
            continue
        for path, c in taken.items():
            assert c.settled or now - c.last >= quiet - EPS, (reason, path, c, now)
        assert reason in ("quiet", "settled")
        if reason == "quiet":
            assert all(now - c.last >= quiet - EPS for c in taken.values()) and not held
        else:
            # Early under a stream of writes, but never before half a quiet period.
            settled = [c.first for c in taken.values() if c.settled or now - c.last >= quiet]
            assert settled and now - min(settled) >= quiet / 2 - EPS


@settings(max_examples=80, deadline=None)
@given(timings, events, st.floats(0.0, 2.0))
def test_no_change_waits_past_the_max_interval_and_the_end_is_one_quiet_period(timing, sequence,
                                                                               cost):
    run, last_event = play(timing, sequence, cost)
    run.loop_until(last_event + timing.max_interval + cost + 10 * timing.quiet_period)
    assert not run.changes
    for now, _reason, taken, _ in run.snapshots:
        # Whatever the stream of writes, the oldest change waits at most the
        # max interval (plus a snapshot already under way when it came due).
        assert all(now - c.first <= timing.max_interval + cost + MIN_WAIT + EPS
                   for c in taken.values())
    # Once writes stop, everything is in history one quiet period later
    # (later only by a snapshot under way at that moment).
    emptied = max(now for now, _, taken, _ in run.snapshots if taken)
    assert emptied <= last_event + timing.quiet_period + cost + 2 * MIN_WAIT + EPS


@given(st.floats(0.01, 100.0), st.floats(1.0, 10_000.0), st.integers(1, 60))
def test_backoff_starts_at_the_first_delay_doubles_and_caps(first, cap_factor, attempts):
    cap = first * cap_factor
    delays, delay = [], 0.0
    for _ in range(attempts):
        delay = next_backoff(delay, first, cap)
        delays.append(delay)
    assert delays[0] == first
    assert all(a <= b <= cap for a, b in itertools.pairwise(delays))
    assert all(b == min(2 * a, cap) for a, b in itertools.pairwise(delays))
    if attempts > math.ceil(math.log2(cap_factor)) + 1:
        assert delays[-1] == cap


@settings(max_examples=80, deadline=None)
@given(st.floats(1.0, 500.0), st.lists(st.floats(0.0, 120.0), min_size=1, max_size=60),
       st.lists(st.booleans(), min_size=1, max_size=60))
def test_maintenance_runs_at_most_once_an_interval_and_only_while_idle(interval, wakeups,
                                                                       outcomes):
    """A loop woken at arbitrary times (events that came to nothing, the
    observer check): maintenance runs once per interval, whenever it is
    woken; a failed run is retried after its backoff, not at every wakeup."""
    timing = Timing(2.0, 300.0, 1e9, interval)
    now, wall0, start = 0.0, 1_700_000_000.0, 0.0
    maintenance_from, retry_at, backoff = wall0, None, 0.0
    runs, attempts = [], []
    for i, gap in enumerate(wakeups):
        now += gap
        state = ScheduleState({}, maintenance_from=maintenance_from,
                              maintenance_retry_at=retry_at, last_full=now)
        d = decide(state, timing, now, wall0 + now)
        due = wall0 + now - maintenance_from >= interval and (retry_at is None or now >= retry_at)
        assert (d.action == MAINTAIN) == due
        if d.action != MAINTAIN:
            continue
        attempts.append(now)
        if outcomes[i % len(outcomes)]:
            runs.append(now)
            maintenance_from, retry_at, backoff = wall0 + now, None, 0.0
        else:
            backoff = next_backoff(backoff, 60.0, 3600.0)
            retry_at = now + backoff
    assert all(b - a >= interval - EPS for a, b in zip([start] + runs, runs, strict=False))
    # Never while anything waits: a backlog, a retry, a snapshot backing off.
    busy = [ScheduleState({"x": Change(0.0, 0.0, True)}, maintenance_from=0.0),
            ScheduleState({}, retry={"x": 1e12}, maintenance_from=0.0),
            ScheduleState({}, not_before=1e12, maintenance_from=0.0)]
    for state in busy:
        assert decide(state, timing, 1e6, 1e9).action != MAINTAIN


def test_maintenance_never_runs_with_no_interval_or_no_start():
    for timing, since in ((Timing(2.0, 300.0, 1e9, 0.0), 0.0), (Timing(2.0, 300.0, 1e9, 1.0), None)):
        assert decide(ScheduleState({}, maintenance_from=since, last_full=1e6), timing,
                      1e6, 1e9).action == WAIT


@given(st.floats(0.0, 100.0), st.floats(0.001, 100.0), events)
def test_after_a_failed_snapshot_nothing_happens_before_the_retry_but_a_stop(now, delay, sequence):
    """Backing off, the loop sleeps to the retry and events do not wake it
    (they could not be acted on); a stop still takes its final snapshot."""
    changes = {f"f{p}": Change(now - 400.0, now - 400.0, closed) for _, p, closed in sequence}
    state = ScheduleState(changes, not_before=now + delay, maintenance_from=0.0)
    timing = Timing(0.1, 1.0, 1.0, 1.0)
    d = decide(state, timing, now, now)
    assert d.action == WAIT and not d.events_wake and d.wait <= delay + MIN_WAIT
    final = decide(state, timing, now, now, final=True)
    assert final.action == SNAPSHOT and final.reason == "stop"
    assert decide(state, timing, now + delay, now + delay).action == SNAPSHOT


def test_a_file_still_being_written_is_held_at_a_stop_and_a_rescan_is_a_full_scan():
    timing = Timing(2.0, 300.0, 60.0, 0.0)
    changes = {"log": Change(9.0, 9.5, False), "done": Change(9.0, 9.0, True)}
    final = decide(ScheduleState(changes), timing, 10.0, 10.0, final=True)
    assert final.held == {"log"} and not final.full_scan
    idle = decide(ScheduleState({}, last_full=0.0), timing, 60.0, 60.0)
    assert (idle.action, idle.reason, idle.full_scan) == (SNAPSHOT, "rescan", True)
    late = decide(ScheduleState({"log": Change(0.0, 299.9, False)}), timing, 300.0, 300.0)
    assert (late.reason, late.held, late.full_scan) == ("max-interval", frozenset(), True)


# -- lock discipline -----------------------------------------------------------

MUTATORS = {"add", "discard", "remove", "pop", "setdefault", "update", "clear", "append"}


def _changed_fields(node: ast.AST) -> list[str]:
    """The ``self.X`` fields a statement changes (assigns, deletes from, or
    mutates with a container method), without descending into nested blocks."""
    targets: list[ast.AST] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    elif isinstance(node, ast.Delete):
        targets = list(node.targets)
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        f = node.value.func
        if isinstance(f, ast.Attribute) and f.attr in MUTATORS:
            targets = [f.value]
    out = []
    for t in targets:
        for sub in ast.walk(t):
            while isinstance(sub, ast.Subscript):
                sub = sub.value
            if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) \
                    and sub.value.id == "self":
                out.append(sub.attr)
    return out


def _changes_by_lock(func: ast.FunctionDef) -> list[tuple[str, str | None, int]]:
    """(field, the self.<lock> held or None, line) for each change in ``func``;
    a method named ``*_locked`` runs under ``_lock`` (its callers hold it),
    and a call of one is a change of the field ``<call>()`` made where it is."""
    found = []

    def visit(stmts, held):
        for s in stmts:
            now_held = held
            if isinstance(s, ast.With):
                for item in s.items:
                    e = item.context_expr
                    if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) \
                            and e.value.id == "self" and e.attr.endswith("_lock"):
                        now_held = e.attr
            found.extend((f, held, s.lineno) for f in _changed_fields(s))
            found.extend((f"{call}()", held, s.lineno) for call in _locked_calls(s))
            for block in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(s, block, None)
                if inner and not isinstance(s, (ast.FunctionDef, ast.ClassDef)):
                    if block == "handlers":
                        for h in inner:
                            visit(h.body, held)
                    else:
                        visit(inner, now_held if block == "body" else held)
    visit(func.body, "_lock" if func.name.endswith("_locked") else None)
    return found


def _locked_calls(stmt: ast.stmt) -> list[str]:
    """The ``self.*_locked`` methods a simple statement calls."""
    if isinstance(stmt, (ast.With, ast.If, ast.For, ast.While, ast.Try, ast.FunctionDef)):
        return []
    return [n.func.attr for n in ast.walk(stmt) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
            and n.func.value.id == "self" and n.func.attr.endswith("_locked")]


def lock_violations(source: str) -> list[str]:
    """Fields of ``Watcher`` changed under one of its locks somewhere, or
    set up as shared in ``_init_shared``, that are changed elsewhere without
    that lock (construction excepted: no other thread runs yet)."""
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Watcher")
    methods = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
    setup = {"__init__", "_init_shared", "_init_loop_state"}
    changes = {name: _changes_by_lock(f) for name, f in methods.items()}
    guard: dict[str, str] = {f: "_lock" for f, _, _ in changes.get("_init_shared", [])}
    guard.update({f"{name}()": "_lock" for name in methods if name.endswith("_locked")})
    for name, found in changes.items():
        for field, lock, _ in found:
            if lock is not None and name not in setup:
                guard.setdefault(field, lock)
    return [f"{name}:{line} {'calls' if field.endswith('()') else 'changes'} {field} "
            f"without {guard[field]}"
            for name, found in changes.items() if name not in setup
            for field, lock, line in found if field in guard and lock != guard[field]]


def test_shared_watcher_state_is_changed_only_under_its_lock():
    assert lock_violations(WATCH_PY.read_text()) == []


def test_the_lock_check_finds_a_change_outside_the_lock():
    inside = "        with self._lock:\n            self._full_scan = self._full_scan or full\n"
    outside = "        self._full_scan = self._full_scan or full\n        with self._lock:\n"
    source = WATCH_PY.read_text()
    assert inside in source
    bad = source.replace(inside, outside)
    assert any("note:" in v and "_full_scan" in v for v in lock_violations(bad))


def test_watch_status_counts_are_pluralised(capsys):
    from cas.cli.cmd_watch import _print_status
    _print_status({"running": True, "source": "/t", "pid": 1, "branch": "main", "started": "s",
                   "backlog": 1, "trouble": {"snapshot": {"kind": "disk full", "since": "s",
                                                          "error": "full", "attempts": 1,
                                                          "retry_in": 2.0}},
                   "last_snapshot": {"id": "ab" * 32, "time": "t", "files": 1}})
    out = capsys.readouterr().out
    assert "backlog: 1 changed path not yet" in out
    assert "1 attempt, the next" in out and "(1 file)" in out
