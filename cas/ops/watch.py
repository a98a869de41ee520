"""``cas watch``: keep a branch's history up to date with a live directory.

A watchdog observer (inotify on Linux, FSEvents on macOS) reports changes;
the watcher decides when they are complete and snapshots them. Every
snapshot is an ordinary stat-cache scan, so changes the observer missed
(events lost to a queue overflow, changes made while no watcher ran) are
found by the next one; events only decide *when* to scan and which files
are still being written.

When a change counts as complete ("settled"):

* a file closed after writing, a rename into place, a deletion, anything
  about a directory: at once;
* any other write (a file still open, being appended to): once it has been
  quiet for the quiet period. Until then the file is *held*: the snapshot
  keeps its previous version, so a half-written file never enters history;
* SQLite databases and their ``-wal``/``-journal`` files: at once, because
  they are read through SQLite's backup API, which copies a committed state
  even mid-write.

When to snapshot: once the whole tree has been quiet for the quiet period,
or, while writes keep coming, once the oldest settled change has waited the
quiet period less what a snapshot recently took (so a saved file is in
history about one quiet period after it was written), and at least every
max interval (held files are then taken as they are). A snapshot looks
only at what the events named (a targeted scan, see ``ScanTargets``); a
full stat scan runs at start, after a queue overflow or a changed
``.casignore``, with every max-interval snapshot, and hourly. These rules
are pure functions of the watcher's state and a clock, in ``watch_schedule``;
the loop sleeps until the next moment one of them can fire, or an event.

A targeted snapshot builds on the branch head, so it is taken only while
the head is the snapshot this watcher recorded (or found) last: after
``cas forget``, ``cas branch NAME OLDER`` or a snapshot by another process,
the next snapshot is a full scan.

One watcher per tree, by an exclusive lock in the store; its state (pid,
last snapshot, backlog, faults, a heartbeat) is kept beside the lock for
``cas watch --status``. The store itself is opened only while a snapshot is
taken, so ``cas gc`` and other writers can run between snapshots.

No thread stops without a word. An unexpected error in the event handler,
the loop, a snapshot, or any other thread (``threading.excepthook``) is
logged, recorded in the state, and answered with a full scan, which finds
whatever the failed work was about; a dead observer is restarted. After
``MAX_FAULTS`` unexpected errors in a row without a snapshot in between,
the watcher gives up with ``WatcherFailed`` (a non-zero exit, for a service
manager to restart it).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import stat
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from ..durable import atomic_output, make_dir_like_parent
from ..errors import CasError, StoreLocked, WatcherFailed, counted
from ..model.history import History
from ..model.snapshot import Snapshot
from ..model.tree import FILE, TreeEntry
from ..objectid import hash_bytes
from ..storage.audit import AuditLog, new_record
from ..storage.crypto import PLAIN, PlainSealer, Sealer, sealed_size
from ..storage.store import Store
from .ignore import IGNORE_FILE, load_ignore
from .scan import ScanPolicy, ScanTargets
from .snapshot import take_snapshot
from .sqlite_capture import SQLITE_SIDE_FILES, is_sqlite
from .walk import ERROR
from .watch_schedule import (
    MAINTAIN,
    SNAPSHOT,
    Change,
    Decision,
    ScheduleState,
    Timing,
    decide,
    due_retries,
    next_backoff,
)

WATCH_DIR = "watch"
# The audit trail's name for the maintenance a watcher runs (a library call's form).
MAINTAIN_CALL = "cas.ops.maintain.run_maintenance"
WATCHED_EVENTS = [FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, DirModifiedEvent,
                  FileAttribEvent, DirAttribEvent, FileDeletedEvent, DirDeletedEvent,
                  FileMovedEvent, DirMovedEvent, FileClosedEvent]
RETRY_SECONDS = 10.0
IDLE_SECONDS = 5.0
STOP_DRAIN_SECONDS = 2.0
STOP_DRAIN_TICK = 0.1
STATE_REFRESH_SECONDS = 30.0   # the heartbeat: the state is rewritten at least this often
STALL_SECONDS = 300.0          # no heartbeat for this long: --status reports a stall
OBSERVER_CHECK_SECONDS = 1.0
MAX_FAULTS = 5                 # unexpected errors in a row before the watcher gives up
FAULT_LOG_SECONDS = 10.0       # the same thread's faults are logged at most this often
MAX_STATE_BYTES = 1 << 16
STATE_FILE_BYTES = 16 << 10    # the state file's size, padded: see _write_state_file
# Trouble (a full disk, a store it may not write, a dead observer): retried
# after a delay that doubles from the first to the cap, logged when it
# starts, when its error changes and when it ends, never per retry.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
MAINTENANCE_BACKOFF = (60.0, 3600.0)   # maintenance is heavy: retried more slowly
OBSERVER_HEALTHY_SECONDS = 5.0  # a restarted observer alive this long has recovered
TROUBLE_KINDS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk full",
                 errno.EACCES: "permission", errno.EPERM: "permission",
                 errno.EROFS: "read-only"}
BUSY = "busy"   # the store is locked by another cas process (gc, a rebuild): usually brief
_SIDE_SUFFIXES = tuple(side.decode() for side in SQLITE_SIDE_FILES)


class WatcherRunning(CasError):
    def __init__(self, source: str, pid: object):
        super().__init__(f"a watcher is already running on {source} (pid {pid}); "
                         "see 'cas watch --status'")


@dataclass
class WatchOptions:
    branch: str
    quiet_period: float = 2.0
    max_interval: float = 300.0
    rescan_interval: float = 3600.0   # a full stat scan at least this often, changes or not
    message: str = "watch"
    maintain_interval: float = 86400.0  # ``cas maintain`` this often while idle; 0: never


@dataclass
class Trouble:
    """Something the watcher keeps failing at, and retries with backoff."""
    kind: str          # "disk full", "permission", "read-only", "observer", "busy", "error"
    error: str
    since: str         # UTC, as written by ``_utc``
    since_mono: float
    attempts: int = 0
    backoff: float = 0.0
    retry_at: float = 0.0

    def to_doc(self) -> dict:
        return {"kind": self.kind, "error": self.error, "since": self.since,
                "attempts": self.attempts, "retry_in": self.backoff}


def trouble_kind(error: BaseException) -> str:
    """What kind of trouble an error is: by the errno of an OSError in its
    chain, or by the system's wording of one in its message (cas errors
    carry the strerror text, not the exception)."""
    if isinstance(error, StoreLocked):
        return BUSY
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in TROUBLE_KINDS:
            return TROUBLE_KINDS[seen.errno]
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    for code, kind in TROUBLE_KINDS.items():
        if os.strerror(code) in text:
            return kind
    return "read-only" if "read-only" in text else "error"


def _utc(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC) \
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def state_paths(store_path: str, source: str,
                sealer: Sealer | PlainSealer = PLAIN) -> tuple[str, str]:
    """The lock file and state file of the watcher of ``source``. In an
    encrypted store their name is a keyed hash of the path: hashing a
    guessed path does not confirm that it is watched."""
    path = os.fsencode(os.path.abspath(source))
    key = sealer.keyed(b"watch", path, 8).hex() if isinstance(sealer, Sealer) \
        else hash_bytes(path).hex[:16]
    base = os.path.join(store_path, WATCH_DIR, key)
    return base + ".lock", base + ".json"


def _state_relpath(state_path: str) -> str:
    """What a state file is sealed against: its place in the store."""
    return f"{WATCH_DIR}/{os.path.basename(state_path)}"


def watch_status(store_path: str, source: str, sealer: Sealer | PlainSealer = PLAIN) -> dict:
    """What ``cas watch --status`` reports: running or not, the last state
    written, and whether a running watcher has stopped beating (``stalled``)."""
    lock_path, state_path = state_paths(store_path, source, sealer)
    running = False
    fd = _open_plain(lock_path, os.O_RDONLY)
    if fd >= 0:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            running = True
        except OSError:
            pass
        finally:
            os.close(fd)
    state = _read_state(state_path, sealer)
    out = {"source": os.path.abspath(source), "running": running, **state,
           **({} if running else {"pid": None})}
    age = _age_seconds(state.get("updated"))
    out["heartbeat_age"] = None if age is None else round(age, 1)
    out["stalled"] = running and (age is None or age > STALL_SECONDS)
    troubles = state.get("trouble")
    troubles = troubles if isinstance(troubles, dict) else {}
    out["trouble"] = troubles
    out["in_trouble"] = running and any(_serious(t) for t in troubles.values())
    return out


def _serious(trouble: object) -> bool:
    """Whether a trouble in a state file is worth an exit 1 of ``--status``:
    any but a store briefly locked by another cas process (gc runs for
    seconds; a lock held for long is trouble too)."""
    if not isinstance(trouble, dict):
        return False
    if trouble.get("kind") != BUSY:
        return True
    age = _age_seconds(trouble.get("since"))
    return age is None or age > STALL_SECONDS


def _open_plain(path: str, flags: int) -> int:
    """A descriptor of the regular file at ``path``, or -1: the watch files
    are in a store that may be damaged or crafted, so no link is followed,
    no FIFO waited on."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return -1


def _read_state(state_path: str, sealer: Sealer | PlainSealer = PLAIN) -> dict:
    """The state a state file holds; {} for one that is missing, damaged
    or (in an encrypted store) does not open."""
    fd = _open_plain(state_path, os.O_RDONLY)
    if fd < 0:
        return {}
    try:
        data = os.read(fd, sealed_size(MAX_STATE_BYTES) if sealer.encrypted else MAX_STATE_BYTES)
        state = json.loads(sealer.open_file(_state_relpath(state_path), data))
    except (OSError, ValueError, RecursionError):  # deep nesting: not a state we wrote
        return {}
    finally:
        os.close(fd)
    return state if isinstance(state, dict) else {}


def _age_seconds(utc_text: object) -> float | None:
    """Seconds since a time written by ``_utc``, or None if it is not one."""
    then = _parse_utc(utc_text)
    return None if then is None else time.time() - then


def _parse_utc(utc_text: object) -> float | None:
    """The time a text written by ``_utc`` names, or None if it is not one."""
    if not isinstance(utc_text, str):
        return None
    try:
        return datetime.strptime(utc_text, "%Y-%m-%dT%H:%M:%S.%fZ") \
            .replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


class _Events(FileSystemEventHandler):
    """Collects changes from the observer thread into ``Watcher.changes``."""

    def __init__(self, watcher: Watcher):
        self._w = watcher

    def dispatch(self, event: FileSystemEvent) -> None:
        # An exception here would end the observer's thread, and with it
        # every later snapshot: whatever goes wrong with one event is a
        # fault, answered with a full scan.
        try:
            super().dispatch(event)
        except Exception as e:
            self._w.fault("events", e)

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        settled = kind in ("closed", "deleted", "moved") or event.is_directory
        relist = event.is_directory and kind == "modified"
        replaced = kind in ("created", "deleted", "moved")
        self._w.note(event.src_path, settled, relist, replaced)
        if kind == "moved":
            self._w.note(event.dest_path, True, replaced=True)


class _OverflowSignal(logging.Handler):
    """watchdog reports a kernel queue overflow only in its log: turn that
    into a forced rescan."""

    def __init__(self, watcher: Watcher):
        super().__init__(logging.WARNING)
        self._w = watcher

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._w.overflowed()


class Watcher:
    """Watches one tree. Its threads: the loop (``run``), which decides and
    takes snapshots; the observer's, which note events; the snapshot's
    reading threads, which beat the heartbeat; any other, whose uncaught
    error is a fault; signal handlers only set events. Every field another
    thread may read or write is changed only while ``self._lock`` is held
    (tests/test_watch_schedule.py checks this); the loop's own fields need no lock."""

    def __init__(self, store_path: str, source: str, options: WatchOptions,
                 log: Callable[[dict], None], quiet_paths: tuple[str, ...] = (),
                 sealer: Sealer | PlainSealer | None = None, command: list[str] | None = None):
        self.store_path = os.path.abspath(store_path)
        self.source = os.path.abspath(source)
        self.options = options
        # The store's sealer, for the state file's name and content (None:
        # learnt by opening the store when the watcher starts).
        self._sealer = sealer
        # What the audit trail's records of this watcher's work say ran.
        self._command = list(command) if command else ["cas.ops.watch.Watcher", self.source]
        self._timing = Timing(options.quiet_period, options.max_interval,
                              options.rescan_interval, options.maintain_interval, IDLE_SECONDS)
        self._log = log
        self._store_prefix = self.store_path + os.sep
        # Files the watcher itself writes (its log): their events must not
        # cause snapshots, or each snapshot would cause the next.
        self._quiet_paths = {os.path.abspath(p) for p in quiet_paths}
        self._wake = threading.Event()
        self._stop = threading.Event()            # run() replaces it with the caller's
        self._lock = threading.Lock()
        self._init_shared()
        self._init_loop_state()
        self._state_lock = threading.Lock()       # one writer of the state file at a time
        self._state_key: tuple | None = None
        self._state_written = 0.0

    def _init_shared(self) -> None:
        """The fields shared between threads: changed only under ``self._lock``."""
        self.changes: dict[str, Change] = {}
        self._retry: dict[str, float] = {}
        self._ignore = load_ignore(self.source)
        self._ignore_changed = False
        self._events = 0   # events noted so far, to tell when the queue is drained
        self._full_scan = True          # the first scan reconciles: everything is looked at
        self._databases: set[str] = set()  # names whose SQLite header was seen
        self._unsure: set[str] = set()     # changed names that may concern a database
        self._not_before = 0.0             # after a failed snapshot, the next waits until then
        self._observer = None
        self._observer_started = 0.0
        self._observer_error: str | None = None   # why its last thread ended
        self.troubles: dict[str, Trouble] = {}    # by activity: snapshot, observer, ...
        self.last_maintenance: float | None = None   # wall clock of the last run
        # ... the interval counts from this: the last run, or a first start
        self._maintenance_from: float | None = None
        self.faults = 0
        self.last_fault: dict | None = None
        self._faults_in_a_row = 0
        self._fault_logged: dict[str, float] = {}
        self._fault_repeats: dict[str, int] = {}
        self._snapshot_started: str | None = None
        self.snapshots = 0
        self.last_snapshot: dict | None = None
        self.started = time.time()

    def _init_loop_state(self) -> None:
        """The fields only the loop thread touches."""
        self._lock_fd = -1
        self._file_mode = 0o600
        self._snapshot_seconds = 0.0    # recent cost of a targeted snapshot
        self._last_full = time.monotonic()
        self._recorded: str | None = None  # the branch head as this watcher last left it
        self._warned: set[tuple[str, str]] = set()
        self._failing: dict[str, str] = {}   # unreadable paths already logged, and why
        self._observer_checked = 0.0
        self._thinning: Any = None                # cas.ops.forget, once imported
        self._policy_ensured = False

    # -- events (observer thread) ---------------------------------------------

    def note(self, path: str | bytes, settled: bool, relist: bool = False,
             replaced: bool = False) -> None:
        rel = self._relative(os.fsdecode(path))
        if rel is None:
            return
        full = False
        if rel == ".":
            full = not relist  # the tree itself (or everything) may have changed
            rel, relist = "", True
        # A changed .casignore is read again by the loop before the next
        # snapshot, which is a full scan: entries may come or go anywhere.
        ignore_changed = rel == IGNORE_FILE
        if ignore_changed:
            full = True
        elif rel and self._ignore.matches(rel, False):
            return
        side_of = _side_base(rel)
        has_sides = not settled and side_of is None and self._has_side_file(rel)
        now = time.monotonic()
        with self._lock:
            self._full_scan = self._full_scan or full
            self._ignore_changed = self._ignore_changed or ignore_changed
            rel, settled = self._as_database_locked(rel, settled, replaced, side_of, has_sides)
            self._events += 1
            self._wake.set()
            c = self.changes.get(rel)
            if c is None:
                self.changes[rel] = Change(now, now, settled, relist)
            else:
                c.last = now
                c.relist_only = c.relist_only and relist
                # A write after a close reopens the file; a database stays settled.
                c.settled = settled

    def _relative(self, path: str) -> str | None:
        """``path`` relative to the tree ("." for the tree itself), or None
        if its events are none of the watcher's business (the store, the
        watcher's own log, a path outside the tree)."""
        if path == self.store_path or path.startswith(self._store_prefix) \
                or path in self._quiet_paths:
            return None
        rel = os.path.relpath(path, self.source)
        return None if rel.startswith(".." + os.sep) or rel == ".." else rel

    def _as_database_locked(self, rel: str, settled: bool, replaced: bool, side_of: str | None,
                     has_sides: bool) -> tuple[str, bool]:
        """How an event on ``rel`` counts (called under the lock). A side
        file of a known database is a change of the database, and a database
        is settled at once (read by backup, consistent mid-write). A name
        that may concern a database not known yet is left to the loop thread,
        which reads headers (``_resolve_databases``): this thread must not
        open a database file, or it would drop the POSIX locks SQLite holds
        for a backup running in another thread, and let a writer tear the copy.
        """
        if replaced:
            self._databases.discard(rel)  # another file under this name now
        if side_of is not None:
            if side_of in self._databases:
                return side_of, True
            self._unsure.add(rel)
        elif rel in self._databases:
            return rel, True
        elif has_sides:
            self._unsure.add(rel)
        return rel, settled

    def _has_side_file(self, rel: str) -> bool:
        base = os.path.join(self.source, rel)
        return any(os.path.lexists(base + side) for side in _SIDE_SUFFIXES)

    def wake(self) -> None:
        """Make the loop look at the stop flag and its changes now."""
        self._wake.set()

    def overflowed(self) -> None:
        self.note(self.source, True)
        self._log({"event": "overflow", "detail": "kernel event queue overflowed; rescanning"})

    def fault(self, where: str, error: BaseException, in_a_row: bool = False) -> None:
        """An unexpected error in a watcher thread: logged (at most once per
        ``FAULT_LOG_SECONDS`` per thread, with a count of the others),
        recorded for ``--status``, and answered with a full scan, which
        finds whatever the failed work was about. ``in_a_row``: the error
        stopped the loop's own work, and counts towards giving up."""
        now = time.monotonic()
        record = {"time": _utc(), "thread": where, "error": f"{type(error).__name__}: {error}"}
        with self._lock:
            self.faults += 1
            self.last_fault = record
            self._full_scan = True
            self.changes.setdefault("", Change(now, now, True, relist_only=True))
            if in_a_row:
                self._faults_in_a_row += 1
                self._not_before = now + RETRY_SECONDS
            logged = self._fault_logged.get(where)
            quiet = logged is not None and now - logged < FAULT_LOG_SECONDS
            repeats = self._fault_repeats.get(where, 0)
            self._fault_repeats[where] = repeats + 1 if quiet else 0
            if not quiet:
                self._fault_logged[where] = now
        self._wake.set()
        if not quiet:
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            self._log_quietly({"event": "fault", **record, "unlogged_before": repeats,
                               "traceback": tb[-8000:]})

    def _log_quietly(self, record: dict) -> None:
        try:
            self._log(record)
        except Exception:
            pass

    def _thread_died(self, args: threading.ExceptHookArgs) -> None:
        """``threading.excepthook`` while the watcher runs: any thread's
        uncaught error is a fault, except the observer's own threads: the
        loop restarts those with backoff and reports their error as trouble."""
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        observer = self._observer
        if observer is not None and (args.thread is observer
                                     or args.thread in list(observer.emitters)):
            with self._lock:
                self._observer_error = f"{args.exc_type.__name__}: {args.exc_value}"
            return
        self.fault(args.thread.name if args.thread is not None else "thread", args.exc_value)

    # -- trouble: retried with backoff, logged once per change ------------------

    def _trouble(self, activity: str, kind: str, error: str,
                 backoff: tuple[float, float] = (BACKOFF_FIRST, BACKOFF_MAX),
                 detail: dict | None = None) -> float:
        """Record a failed attempt at ``activity``; returns the seconds to
        wait before the next. Logs only when the trouble starts or its
        error changes: a disk that stays full is one line, not one a retry."""
        now = time.monotonic()
        with self._lock:
            t = self.troubles.get(activity)
            changed = t is None or t.error != error
            if t is None:
                t = self.troubles[activity] = Trouble(kind, error, _utc(), now)
            t.kind, t.error = kind, error
            t.attempts += 1
            t.backoff = next_backoff(t.backoff, *backoff)
            t.retry_at = now + t.backoff
        if changed:
            self._log_quietly({"event": "trouble", "activity": activity, **t.to_doc(),
                               **(detail or {})})
        self._write_state()
        return t.backoff

    def _recovered(self, activity: str) -> None:
        with self._lock:
            t = self.troubles.pop(activity, None)
        if t is not None:
            self._log_quietly({"event": "recovered", "activity": activity, "kind": t.kind,
                               "error": t.error, "since": t.since, "attempts": t.attempts,
                               "seconds": round(time.monotonic() - t.since_mono, 1)})
            self._write_state()

    def _waiting_out(self, activity: str) -> bool:
        """Whether ``activity`` is in trouble and its next attempt is not due yet."""
        with self._lock:
            t = self.troubles.get(activity)
        return t is not None and time.monotonic() < t.retry_at

    # -- the loop --------------------------------------------------------------

    def acquire(self) -> None:
        if self._sealer is None:
            with Store.open(self.store_path, with_index=False) as store:
                self._sealer = store.sealer
        lock_path, _ = state_paths(self.store_path, self.source, self.sealer)
        try:
            # The store's modes, whatever the umask: private, or group-shared.
            make_dir_like_parent(os.path.dirname(lock_path))
            self._file_mode = stat.S_IMODE(os.stat(os.path.dirname(lock_path)).st_mode) & 0o666
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, self._file_mode)
        except OSError as e:
            raise WatcherFailed(self.source, f"its lock file {lock_path} cannot be opened "
                                             f"({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WatcherRunning(self.source, watch_status(self.store_path, self.source,
                                                           self.sealer).get("pid")) from None
        self._lock_fd = fd

    @property
    def sealer(self) -> Sealer | PlainSealer:
        return self._sealer if self._sealer is not None else PLAIN

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def run(self, stop: threading.Event) -> int:
        """Watch until ``stop`` is set, then take a final snapshot. Returns
        the number of snapshots taken; raises ``WatcherFailed`` if the watcher
        had to give up."""
        self.acquire()
        self._stop = stop
        self._load_previous_state()
        overflow = _OverflowSignal(self)
        wd_logger = logging.getLogger("watchdog")
        wd_logger.addHandler(overflow)
        previous_hook, threading.excepthook = threading.excepthook, self._thread_died
        failed: WatcherFailed | None = None
        try:
            self._watch(stop)
        except WatcherFailed as e:
            failed = e
        finally:
            if self._observer is not None:
                _stop_observer(self._observer)
            wd_logger.removeHandler(overflow)
            threading.excepthook = previous_hook
        if failed is None:
            self._final_snapshot()
        self._log_quietly({"event": "stop", "snapshots": self.snapshots,
                           **({"failed": str(failed)} if failed else {})})
        self._write_state(running=False, failed=str(failed) if failed else None)
        self.release()
        if failed is not None:
            raise failed
        return self.snapshots

    def _watch(self, stop: threading.Event) -> None:
        """Start the observer, reconcile with a first snapshot, loop until
        ``stop``, and let the observer deliver what it has queued."""
        self._set_observer(self._start_observer())
        self._log({"event": "start", "source": self.source, "branch": self.options.branch,
                   "quiet_period": self.options.quiet_period,
                   "max_interval": self.options.max_interval,
                   "maintain_interval": self.options.maintain_interval, "pid": os.getpid()})
        self._start_thinning()
        # Reconcile: whatever changed while no watcher ran is found by a scan.
        self._snapshot(frozenset(), reason="start")
        self._loop(stop)
        if self._observer is not None:
            self._drain_events(self._observer)

    def _final_snapshot(self) -> None:
        """Events the observer had not yet delivered are lost when it stops,
        so the last snapshot is a full scan, taken whatever the event queue
        says (it records nothing if nothing changed)."""
        held = self._decide(final=True).held
        with self._lock:
            self._full_scan = True
        self._snapshot(held, "stop")

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._check_observer()
                self._step()
            except WatcherFailed:
                raise
            except Exception as e:
                self.fault("loop", e, in_a_row=True)
                stop.wait(1.0)
            with self._lock:
                faults, last = self._faults_in_a_row, self.last_fault
            if faults >= MAX_FAULTS:
                raise WatcherFailed(self.source, f"{counted(faults, 'unexpected error')} in a "
                                                 f"row, the last: {last['error'] if last else '?'}")

    def _step(self) -> None:
        decision = self._decide()
        if decision.action == SNAPSHOT:
            self._snapshot(decision.held, decision.reason)
        elif decision.action == MAINTAIN:
            self._maintain()
        else:
            self._write_state()
            self._sleep(decision)

    def _sleep(self, decision: Decision) -> None:
        """Wait until a rule may fire. Events end the wait early, except in
        trouble (no event can be acted on before the retry) or with no
        observer: then only a stop (or the next observer check) ends it."""
        if not decision.events_wake or self._observer is None:
            self._stop.wait(min(decision.wait, OBSERVER_CHECK_SECONDS))
        else:
            self._wake.wait(decision.wait)   # idle: no polling cost
        self._wake.clear()

    def _decide(self, final: bool = False) -> Decision:
        """What to do now, by the rules of ``watch_schedule``; the backlog
        gets the paths whose retry is due first."""
        self._reload_ignore()
        self._resolve_databases()
        now, wall = time.monotonic(), time.time()
        with self._lock:
            for path in due_retries(self._retry, now):
                del self._retry[path]
                self.changes.setdefault(path, Change(now, now, True))
            maintenance = self.troubles.get("maintenance")
            state = ScheduleState(self.changes, self._retry, self._not_before, self._last_full,
                                  self._snapshot_seconds, self._maintenance_from,
                                  maintenance.retry_at if maintenance is not None else None)
            decision = decide(state, self._timing, now, wall, final)
            if decision.full_scan:
                self._full_scan = True
        return decision

    def _start_observer(self):
        # No open and close-without-write events: every file a snapshot
        # reads would raise two, and handling them in Python competed with
        # the snapshot for the interpreter (the first scan of 100,000
        # files took three times as long).
        observer = Observer()
        try:
            observer.schedule(_Events(self), self.source, recursive=True,
                              event_filter=WATCHED_EVENTS)
            observer.start()
        except OSError as e:
            _stop_observer(observer)
            hint = (": the inotify watch limit is reached (raise fs.inotify.max_user_watches)"
                    if e.errno == errno.ENOSPC else "")
            raise WatcherFailed(self.source, f"its changes cannot be watched "
                                             f"({e.strerror or e}){hint}") from None
        return observer

    def _set_observer(self, observer) -> None:
        with self._lock:
            self._observer = observer
            if observer is not None:
                self._observer_started = time.monotonic()
                self._observer_error = None

    def _check_observer(self) -> None:
        """Restart the observer if its thread, or an emitter's, has ended:
        without them no change would ever be seen again. Restarts back off
        while they keep failing; each attempt scans the tree in full, so
        changes are still recorded, if later, while no observer runs."""
        now = time.monotonic()
        if now - self._observer_checked < OBSERVER_CHECK_SECONDS:
            return
        self._observer_checked = now
        observer = self._observer
        if observer is None:
            self._restart_observer()
        elif observer.is_alive() and all(e.is_alive() for e in list(observer.emitters)):
            if now - self._observer_started >= OBSERVER_HEALTHY_SECONDS:
                self._recovered("observer")
        else:
            _stop_observer(observer)
            with self._lock:
                why = self._observer_error or "the file system event thread ended"
            self._set_observer(None)
            self._trouble("observer", "observer", f"{why}; restarting it, and scanning the "
                                                  "tree in full meanwhile")

    def _restart_observer(self) -> None:
        if self._waiting_out("observer"):
            return
        self._rescan()
        try:
            self._set_observer(self._start_observer())
        except WatcherFailed as e:
            self._trouble("observer", "observer", str(e))

    def _rescan(self) -> None:
        """Have the next snapshot scan the whole tree, soon."""
        now = time.monotonic()
        with self._lock:
            self._full_scan = True
            self.changes.setdefault("", Change(now, now, True, relist_only=True))
        self._wake.set()

    def _drain_events(self, observer) -> None:
        """Let the observer deliver what the kernel has already queued.

        The close events of the last writes before a stop are often still
        queued; without them those files would count as being written and
        be held out of the final snapshot.
        """
        deadline = time.monotonic() + STOP_DRAIN_SECONDS
        seen = -1
        while time.monotonic() < deadline:
            if seen == self._events and observer.event_queue.empty():
                return
            seen = self._events
            time.sleep(STOP_DRAIN_TICK)

    def _reload_ignore(self) -> None:
        """The rules for filtering events, read again after ``.casignore``
        changed; its problems are the scan's to report."""
        with self._lock:
            changed, self._ignore_changed = self._ignore_changed, False
        if changed:
            ignore = load_ignore(self.source)
            with self._lock:
                self._ignore = ignore

    def _resolve_databases(self) -> None:
        """Decide, by their headers, the names the event thread could not:
        a side file of a database becomes a change of the database, and a
        database is settled. Runs in the loop thread between snapshots, when
        no backup is running in this process, so opening a database file
        here cannot drop a backup's locks."""
        with self._lock:
            unsure, self._unsure = self._unsure, set()
        for rel in unsure:
            base = _side_base(rel) or rel
            with self._lock:
                known = base in self._databases
            if not known and not is_sqlite(os.path.join(self.source, base)):
                continue  # not a database: its files are read byte for byte
            with self._lock:
                self._databases.add(base)
                change = self.changes.pop(rel, None) if rel != base else self.changes.get(rel)
                if change is None:
                    continue
                merged = self.changes.setdefault(base, change)
                if merged is not change:
                    merged.first = min(merged.first, change.first)
                    merged.last = max(merged.last, change.last)
                merged.relist_only = False
                merged.settled = True

    def _snapshot(self, held: frozenset[str], reason: str) -> None:
        started = time.monotonic()
        with self._lock:
            taken = {p: c for p, c in self.changes.items() if p not in held}
            for p in taken:
                del self.changes[p]
            self._snapshot_started = _utc()
        try:
            self._record(taken, held, reason, started)
        except CasError as e:
            # A full disk, a store it may not write, a lock held by gc:
            # nothing a retry a tick later would change.
            self._requeue(taken, self._trouble("snapshot", trouble_kind(e), str(e)))
        except Exception as e:
            self._requeue(taken, RETRY_SECONDS)
            self.fault("snapshot", e, in_a_row=True)
        else:
            self._recovered("snapshot")
        finally:
            with self._lock:
                self._snapshot_started = None
        self._write_state()

    def _record(self, taken: dict[str, Change], held: frozenset[str], reason: str,
                started: float) -> None:
        started_at = self._snapshot_started
        with Store.open(self.store_path) as store:
            history = History(store)
            targets = self._targets(history, taken, held)
            result = take_snapshot(history, self.source, self.options.branch,
                                   message=self.options.message, on_file=self._beat,
                                   policy=ScanPolicy(held=self._held_entries(history, held),
                                                     sqlite_backup=True, targets=targets,
                                                     previous=self._previous_entries(history),
                                                     interrupted=self._stop.is_set))
            snap, parent = result.snapshot, result.parent
            self._recorded = _snapshot_id(snap if snap is not None else parent)
            if snap is not None:
                self._thin(history)
                self._audit(store, history)
        with self._lock:
            self._faults_in_a_row = 0
        self._report_problems(result.scan.problems, taken, full=targets is None)
        seconds = round(time.monotonic() - started, 3)
        if targets is not None:
            self._snapshot_seconds = 0.5 * self._snapshot_seconds + 0.5 * seconds
        scan = result.scan
        self._log({"event": "ingest", "reason": reason, "started": started_at,
                   "scan": "full" if targets is None else "targeted", "changes": len(taken),
                   "held": len(held), "files_read": scan.read_files, "files": scan.files,
                   "bytes": scan.bytes, "seconds": seconds})
        if snap is not None:
            self._recorded_snapshot(snap, scan.files, started_at, len(taken), seconds)

    def _recorded_snapshot(self, snap, files: int, started_at: str | None, changes: int,
                           seconds: float) -> None:
        """Count and log a snapshot that was recorded."""
        new_bytes = snap.stats.get("new_bytes", 0)
        with self._lock:
            self.snapshots += 1
            self.last_snapshot = {"id": snap.oid.hex, "time": snap.time_iso,
                                  "files": files, "new_bytes": new_bytes}
        self._log({"event": "snapshot", "id": snap.oid.hex, "time": snap.time_iso,
                   "started": started_at, "branch": self.options.branch, "changes": changes,
                   "new_objects": snap.stats.get("new_objects", 0),
                   "new_bytes": new_bytes, "seconds": seconds})

    def _audit(self, store: Store, history: History) -> None:
        """The audit trail's record of a snapshot (and the thinning after
        it). A log that cannot be written is logged once as trouble; the
        snapshot stands."""
        record = new_record(self._command, refs=[self.options.branch], paths=[self.source],
                            created=[oid.hex for oid in history.snapshots_created],
                            removed=[oid.hex for oid in history.snapshots_removed],
                            exit_code=0, message=None)
        try:
            AuditLog.of(store).append(record)
        except (OSError, CasError) as e:
            self._trouble("audit", trouble_kind(e), f"the audit log cannot be written ({e}): "
                          "snapshots are not being logged")
            return
        self._recovered("audit")

    # -- thinning and maintenance ----------------------------------------------

    def _start_thinning(self) -> None:
        """Load the retention code and give the branch the watcher's default
        policy if it has none (the policy is kept in the store)."""
        try:
            from . import forget
        except ImportError as e:
            self._log({"event": "notice",
                       "detail": f"thinning is not available ({e}); history is kept whole"})
            return
        self._thinning = forget
        try:
            with Store.open(self.store_path) as store:
                self._ensure_policy(History(store))
        except CasError as e:
            self._trouble("thinning", trouble_kind(e), str(e))

    def _ensure_policy(self, history: History) -> None:
        if not self._policy_ensured:
            self._thinning.ensure_default_policy(history, self.options.branch)
            self._policy_ensured = True

    def _thin(self, history: History) -> None:
        """Apply the branch's policy after a snapshot: records and refs
        only, no reading of trees. A failure is trouble, retried after a
        backoff with a later snapshot; the snapshot itself stands."""
        if self._thinning is None or self._waiting_out("thinning"):
            return
        try:
            self._ensure_policy(history)
            report = self._thinning.thin_branch(history, self.options.branch)
        except Exception as e:
            detail = None if isinstance(e, CasError) else \
                {"traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__))[-8000:]}
            self._trouble("thinning", trouble_kind(e), f"{type(e).__name__}: {e}"
                          if detail else str(e), detail=detail)
            return
        self._recovered("thinning")
        forgotten = list(getattr(report, "forgotten", None) or ())
        if forgotten:
            self._log({"event": "thinned", "branch": self.options.branch,
                       "forgotten": len(forgotten)})

    def _maintain(self) -> None:
        """Run ``cas maintain`` (it locks the store exclusively: the watcher
        holds no store lock between snapshots). Changes that happen
        meanwhile wait in the backlog for the next snapshot."""
        started = time.monotonic()
        try:
            from . import maintain
            report = maintain.run_maintenance(self.store_path, _maintenance_options(maintain),
                                              audit_command=[MAINTAIN_CALL, self.store_path])
        except ImportError as e:
            with self._lock:
                self._maintenance_from = time.time()
            self._log({"event": "notice",
                       "detail": f"maintenance is not available ({e})"})
            return
        except Exception as e:
            self._trouble("maintenance", trouble_kind(e), f"{type(e).__name__}: {e}",
                          backoff=MAINTENANCE_BACKOFF)
            return
        with self._lock:
            self.last_maintenance = self._maintenance_from = time.time()
        self._log({"event": "maintenance", "seconds": round(time.monotonic() - started, 3),
                   "summary": _summary(report)})
        self._maintenance_findings(report)
        self._write_state()

    def _maintenance_findings(self, report: object) -> None:
        """Damage or problems a run found are trouble, shown by --status
        until a later run finds none, and not retried sooner than an interval."""
        damaged = len(getattr(report, "damage", None) or ())
        problems = list(getattr(report, "problems", None) or ())
        interval = self.options.maintain_interval
        if damaged:
            self._trouble("maintenance", "damage", f"the verify sample found "
                          f"{counted(damaged, 'damaged object')}; run 'cas verify --full' "
                          "for the paths they hurt", backoff=(interval, interval))
        elif problems:  # e.g. a branch's policy that cannot be read: its thinning was skipped
            self._trouble("maintenance", "problem", "; ".join(str(p) for p in problems[:3]),
                          backoff=(interval, interval))
        else:
            self._recovered("maintenance")

    def _load_previous_state(self) -> None:
        """What a previous watcher of this tree left that must outlive it:
        when maintenance last ran, and when its interval started (for a new
        watcher of a tree, now: its first run is an interval away)."""
        _, state_path = state_paths(self.store_path, self.source, self.sealer)
        state = _read_state(state_path, self.sealer)
        now = time.time()

        def past(key: str) -> float | None:
            then = _parse_utc(state.get(key))
            return then if then is not None and then <= now else None  # not a crafted future

        with self._lock:
            self.last_maintenance = past("last_maintenance")
            self._maintenance_from = past("maintenance_from") or now

    def _report_problems(self, problems, taken: dict[str, Change], full: bool) -> None:
        """Log what a scan could not do. Errors (a file that could not be
        read) are retried soon, and logged when they start or change, not at
        every retry. Warnings (a bad ``.casignore`` line, a FIFO) would be
        the same on every attempt: each is logged once, and again only if a
        full scan finds it after one that did not."""
        warned = set() if full else set(self._warned)
        # A path this scan looked at and did not report is readable again.
        failing = {} if full else {p: m for p, m in self._failing.items() if p not in taken}
        for problem in problems:
            rel = os.path.relpath(problem.path, self.source)
            if problem.severity == ERROR:
                if self._failing.get(rel) != problem.message:
                    self._log({"event": "problem", "path": rel, "detail": problem.message})
                failing[rel] = problem.message
                with self._lock:
                    self._retry[rel] = time.monotonic() + RETRY_SECONDS
                continue
            key = (rel, problem.message)
            if key not in self._warned:
                self._log({"event": "problem", "path": rel, "detail": problem.message,
                           "severity": problem.severity})
            warned.add(key)
        self._warned = warned
        self._failing = failing

    def _beat(self, size: int) -> None:
        """Progress of a snapshot, from the threads reading files: keeps the
        heartbeat going through a long snapshot, so that only a snapshot
        that stopped making progress looks stalled."""
        if time.time() - self._state_written >= STATE_REFRESH_SECONDS:
            self._write_state()

    def _targets(self, history: History, taken: dict[str, Change],
                 held: frozenset[str]) -> ScanTargets | None:
        """What to look at, or None for a full scan."""
        with self._lock:
            full, self._full_scan = self._full_scan, False
        head = history.branch_head(self.options.branch)
        moved = head is not None and _snapshot_id(head) != self._recorded
        if moved and not full:
            # The base of a targeted scan must be what this watcher last
            # saw of the tree: a head moved back (forget, branch) or
            # forward by someone else holds other content for unchanged paths.
            self._log({"event": "rescan", "detail": f"{self.options.branch} is at "
                       f"{str(_snapshot_id(head))[:12]}, not where this watcher left it; scanning in full"})
        if full or moved or head is None or head.source != self.source:
            self._last_full = time.monotonic()
            return None
        changed = {os.fsencode(p) for p, c in taken.items() if not c.relist_only}
        changed.update(os.fsencode(p) for p in held)
        relist = {os.fsencode(p) for p, c in taken.items() if c.relist_only}
        return ScanTargets(base=head.tree, counts=head.stats, changed=changed, relist=relist)

    def _held_entries(self, history: History, held: frozenset[str]) -> dict[bytes, TreeEntry | None]:
        if not held:
            return {}
        head = history.branch_head(self.options.branch)
        out: dict[bytes, TreeEntry | None] = {}
        for rel in held:
            rel_b = os.fsencode(rel)
            try:
                entry = history.entry_at(head.tree, rel_b) if head is not None else None
            except CasError:
                entry = None  # new since the last snapshot: stays out until complete
            out[rel_b] = entry if entry is not None and entry.kind == FILE else None
        return out

    def _previous_entries(self, history: History):
        """What a file that cannot be read right now keeps: its entry in the
        branch's previous snapshot. It is retried later; meanwhile history
        must not show it deleted."""
        head = history.branch_head(self.options.branch)
        if head is None:
            return None

        def previous(rel: bytes) -> TreeEntry | None:
            try:
                return history.entry_at(head.tree, rel)
            except CasError:
                return None

        return previous

    def _requeue(self, taken: dict[str, Change], delay: float) -> None:
        """A snapshot failed: its changes wait for the next, a full scan, tried
        ``delay`` seconds later (not at once: the cause, a full disk or a
        lock held by gc, is rarely gone a tick later)."""
        with self._lock:
            self._full_scan = True
            for p, c in taken.items():
                self.changes.setdefault(p, c)
            self._retry[""] = time.monotonic() + delay
            self._not_before = time.monotonic() + delay

    def _write_state(self, running: bool = True, failed: str | None = None) -> None:
        """Write the state for ``--status`` if it changed, and at least every
        ``STATE_REFRESH_SECONDS`` (its ``updated`` time is the heartbeat).
        Called by the loop and by reading threads (``_beat``): one at a time,
        from one consistent view of the shared fields."""
        now = time.time()
        with self._lock:
            state = self._state_doc_locked(running)
        troubles = state["trouble"]
        key = (state["backlog"], state["snapshots"], running, state["faults"],
               state["maintenance_from"],
               tuple((a, t["error"], t["retry_in"]) for a, t in troubles.items()))
        if not self._state_lock.acquire(blocking=False):
            return  # another thread is writing it right now
        try:
            if key == self._state_key and now - self._state_written < STATE_REFRESH_SECONDS:
                return
            self._state_key, self._state_written = key, now
            state.update({"updated": _utc(now), **({"failed": failed} if failed else {})})
            _write_state_file(state_paths(self.store_path, self.source, self.sealer)[1], state,
                              self._file_mode, self.sealer)
        finally:
            self._state_lock.release()

    def _state_doc_locked(self, running: bool) -> dict:
        """The state for ``--status`` (called under the lock), but its ``updated`` time."""
        return {"pid": os.getpid() if running else None, "branch": self.options.branch,
                "started": _utc(self.started),
                "snapshots": self.snapshots, "last_snapshot": self.last_snapshot,
                "backlog": len(self.changes), "snapshot_started": self._snapshot_started,
                "faults": self.faults, "last_fault": self.last_fault,
                "trouble": {a: t.to_doc() for a, t in self.troubles.items()},
                "last_maintenance": None if self.last_maintenance is None
                else _utc(self.last_maintenance),
                "maintenance_from": None if self._maintenance_from is None
                else _utc(self._maintenance_from)}


def _write_state_file(state_path: str, state: dict, mode: int,
                      sealer: Sealer | PlainSealer = PLAIN) -> None:
    """Replace the state file, padded to ``STATE_FILE_BYTES`` with spaces
    (JSON ignores them) and then sealed in an encrypted store. The padding
    is room kept for a full disk: when the new file cannot be written, the
    state is written over the old one in place, in blocks the file already
    has, so that ``--status`` still tells of the trouble. The state file is
    advisory: other failures are ignored."""
    data = (json.dumps(state, sort_keys=True) + "\n").encode()
    data += b" " * max(0, STATE_FILE_BYTES - len(data))
    data = sealer.seal_file(_state_relpath(state_path), data)
    try:
        with atomic_output(state_path, mode=mode, durable=False) as f:
            f.write(data)
        return
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            return
    fd = _open_plain(state_path, os.O_WRONLY)
    if fd < 0:
        return
    try:
        if os.fstat(fd).st_size >= len(data):
            os.pwrite(fd, data, 0)
    except OSError:
        pass
    finally:
        os.close(fd)


def _maintenance_options(maintain_module):
    """The options of a scheduled run: ``cas maintain``'s defaults."""
    options = getattr(maintain_module, "MaintainOptions", None)
    return options() if options is not None else None


def _summary(report: object) -> dict:
    """A maintenance report's figures, for one log line."""
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        doc = dataclasses.asdict(report)
    elif hasattr(report, "to_doc"):
        doc = report.to_doc()
    else:
        return {"report": str(report)}
    return {k: v for k, v in doc.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _snapshot_id(snap: Snapshot | None) -> str | None:
    """The id of a stored snapshot, or None."""
    return snap.oid.hex if snap is not None and snap.oid is not None else None


def _side_base(rel: str) -> str | None:
    """``X`` if ``rel`` is named like a SQLite side file of ``X`` (``X-wal``...)."""
    name = os.path.basename(rel)
    for suffix in _SIDE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return rel[:-len(suffix)]
    return None


def _stop_observer(observer) -> None:
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=10)
    except Exception:
        pass
