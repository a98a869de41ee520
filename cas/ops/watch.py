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
``.casignore``, with every max-interval snapshot, and hourly.

One watcher per tree, by an exclusive lock in the store; its state (pid,
last snapshot, backlog) is kept beside the lock for ``cas watch --status``.
The store itself is opened only while a snapshot is taken, so ``cas gc``
and other writers can run between snapshots.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from watchdog.events import (DirAttribEvent, DirCreatedEvent, DirDeletedEvent, DirModifiedEvent,
                             DirMovedEvent, FileAttribEvent, FileClosedEvent, FileCreatedEvent,
                             FileDeletedEvent, FileModifiedEvent, FileMovedEvent,
                             FileSystemEvent, FileSystemEventHandler)
from watchdog.observers import Observer

from ..durable import atomic_output
from ..errors import CasError, StoreLocked
from ..model.history import History
from ..model.tree import FILE, TreeEntry
from ..objectid import hash_bytes
from ..storage.store import Store
from .ignore import IGNORE_FILE, load_ignore
from .scan import ScanPolicy, ScanTargets
from .sqlite_capture import SQLITE_SIDE_FILES
from .snapshot import take_snapshot

WATCH_DIR = "watch"
WATCHED_EVENTS = [FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, DirModifiedEvent,
                  FileAttribEvent, DirAttribEvent, FileDeletedEvent, DirDeletedEvent,
                  FileMovedEvent, DirMovedEvent, FileClosedEvent]
RETRY_SECONDS = 10.0
TICK_SECONDS = 0.05
IDLE_SECONDS = 5.0
STOP_DRAIN_SECONDS = 2.0
STOP_DRAIN_TICK = 0.1
STATE_REFRESH_SECONDS = 30.0


class WatcherRunning(CasError):
    def __init__(self, source: str, pid: object):
        super().__init__(f"a watcher is already running on {source} (pid {pid}); "
                         "see 'cas watch --status'")


@dataclass
class Change:
    first: float               # monotonic time of the first event since the last snapshot
    last: float                # ... of the latest
    settled: bool              # complete: safe to snapshot as it is
    relist_only: bool = False  # a directory whose listing changed, not the directory itself


@dataclass
class WatchOptions:
    branch: str
    quiet_period: float = 2.0
    max_interval: float = 300.0
    rescan_interval: float = 3600.0   # a full stat scan at least this often, changes or not
    message: str = "watch"


def _utc(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def state_paths(store_path: str, source: str) -> tuple[str, str]:
    """The lock file and state file of the watcher of ``source``."""
    key = hash_bytes(os.fsencode(os.path.abspath(source))).hex[:16]
    base = os.path.join(store_path, WATCH_DIR, key)
    return base + ".lock", base + ".json"


def watch_status(store_path: str, source: str) -> dict:
    """What ``cas watch --status`` reports: running or not, and the last state written."""
    lock_path, state_path = state_paths(store_path, source)
    running = False
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1
    if fd >= 0:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            running = True
        finally:
            os.close(fd)
    try:
        with open(state_path, "rb") as f:
            state = json.loads(f.read())
    except (OSError, ValueError):
        state = {}
    return {"source": os.path.abspath(source), "running": running, **state,
            **({} if running else {"pid": None})}


class _Events(FileSystemEventHandler):
    """Collects changes from the observer thread into ``Watcher.changes``."""

    def __init__(self, watcher: "Watcher"):
        self._w = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        settled = kind in ("closed", "deleted", "moved") or event.is_directory
        relist = event.is_directory and kind == "modified"
        self._w.note(event.src_path, settled, relist)
        if kind == "moved":
            self._w.note(event.dest_path, True)


class _OverflowSignal(logging.Handler):
    """watchdog reports a kernel queue overflow only in its log: turn that
    into a forced rescan."""

    def __init__(self, watcher: "Watcher"):
        super().__init__(logging.WARNING)
        self._w = watcher

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._w.overflowed()


class Watcher:
    def __init__(self, store_path: str, source: str, options: WatchOptions,
                 log: Callable[[dict], None], quiet_paths: tuple[str, ...] = ()):
        self.store_path = os.path.abspath(store_path)
        self.source = os.path.abspath(source)
        self.options = options
        self._log = log
        self._lock = threading.Lock()
        self.changes: dict[str, Change] = {}
        self._retry: dict[str, float] = {}
        self._ignore = load_ignore(self.source)
        self._store_prefix = self.store_path + os.sep
        # Files the watcher itself writes (its log): their events must not
        # cause snapshots, or each snapshot would cause the next.
        self._quiet_paths = {os.path.abspath(p) for p in quiet_paths}
        self._lock_fd = -1
        self._wake = threading.Event()
        self._events = 0   # events noted so far, to tell when the queue is drained
        self._full_scan = True          # the first scan reconciles: everything is looked at
        self._snapshot_seconds = 0.0    # recent cost of a targeted snapshot
        self._last_full = time.monotonic()
        self._databases: set[str] = set()
        self._state_key: tuple | None = None
        self._state_written = 0.0
        self.snapshots = 0
        self.last_snapshot: dict | None = None
        self.started = time.time()

    # -- events (observer thread) ---------------------------------------------

    def note(self, path: str | bytes, settled: bool, relist: bool = False) -> None:
        path = os.fsdecode(path)
        if path == self.store_path or path.startswith(self._store_prefix) \
                or path in self._quiet_paths:
            return
        rel = os.path.relpath(path, self.source)
        if rel.startswith(".." + os.sep) or rel == "..":
            return
        if rel == ".":
            if not relist:
                self._full_scan = True  # the tree itself (or everything) may have changed
            rel, relist = "", True
        if rel == IGNORE_FILE:
            self._ignore = load_ignore(self.source)
            self._full_scan = True  # what is ignored changed: entries may come or go anywhere
        elif rel != "." and self._ignore.matches(rel, False):
            return
        for side in SQLITE_SIDE_FILES:
            side_s = side.decode()
            if rel.endswith(side_s):
                rel, settled = rel[:-len(side_s)], True  # the database, read by backup
                self._databases.add(rel)
                break
        now = time.monotonic()
        if not settled and self._is_database(rel):
            settled = True  # read by backup: consistent mid-write
        with self._lock:
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

    def _is_database(self, rel: str) -> bool:
        """Whether SQLite is writing ``rel``: it has a journal or WAL beside it.

        Only stat calls here. Opening and closing a database file from this
        process would drop the POSIX locks SQLite holds on it for a backup
        running in another thread, and let a writer tear the copy.
        """
        if rel in self._databases:
            return True
        base = os.path.join(self.source, rel)
        if any(os.path.exists(base + side.decode()) for side in SQLITE_SIDE_FILES):
            self._databases.add(rel)
            return True
        return False

    def wake(self) -> None:
        """Make the loop look at the stop flag and its changes now."""
        self._wake.set()

    def overflowed(self) -> None:
        self.note(self.source, True)
        self._log({"event": "overflow", "detail": "kernel event queue overflowed; rescanning"})

    # -- the loop --------------------------------------------------------------

    def acquire(self) -> None:
        lock_path, _ = state_paths(self.store_path, self.source)
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WatcherRunning(self.source, watch_status(self.store_path, self.source).get("pid"))
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def run(self, stop: threading.Event) -> int:
        """Watch until ``stop`` is set, then take a final snapshot. Returns
        the number of snapshots taken."""
        self.acquire()
        overflow = _OverflowSignal(self)
        wd_logger = logging.getLogger("watchdog")
        wd_logger.addHandler(overflow)
        observer = Observer()
        try:
            # No open and close-without-write events: every file a snapshot
            # reads would raise two, and handling them in Python competed with
            # the snapshot for the interpreter (the first scan of 100,000
            # files took three times as long).
            observer.schedule(_Events(self), self.source, recursive=True,
                              event_filter=WATCHED_EVENTS)
            observer.start()
            self._log({"event": "start", "source": self.source, "branch": self.options.branch,
                       "quiet_period": self.options.quiet_period,
                       "max_interval": self.options.max_interval, "pid": os.getpid()})
            # Reconcile: whatever changed while no watcher ran is found by a scan.
            self._snapshot(held={}, reason="start")
            while not stop.is_set():
                due, held = self._due()
                if due:
                    self._snapshot(held, due)
                    continue
                self._write_state()
                with self._lock:
                    busy = bool(self.changes or self._retry)
                # Idle, sleep until an event (or a signal) wakes us: no polling cost.
                self._wake.wait(TICK_SECONDS if busy else IDLE_SECONDS)
                self._wake.clear()
            self._drain_events(observer)
        finally:
            observer.stop()
            observer.join(timeout=10)
            wd_logger.removeHandler(overflow)
        # Events the observer had not yet delivered are lost when it stops,
        # so the last snapshot is a full scan, taken whatever the event queue
        # says (it records nothing if nothing changed).
        _, held = self._due(final=True)
        self._full_scan = True
        self._snapshot(held, "stop")
        self._log({"event": "stop", "snapshots": self.snapshots})
        self._write_state(running=False)
        self.release()
        return self.snapshots

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

    def _due(self, final: bool = False) -> tuple[str | None, dict[str, bool]]:
        """Whether to snapshot now (and why), and which paths to hold back."""
        now = time.monotonic()
        quiet = self.options.quiet_period
        with self._lock:
            for path, at in list(self._retry.items()):
                if at <= now:
                    del self._retry[path]
                    self.changes.setdefault(path, Change(now, now, True))
            if not self.changes:
                if now - self._last_full >= self.options.rescan_interval:
                    self._full_scan = True
                    return "rescan", {}
                return None, {}
            last = max(c.last for c in self.changes.values())
            oldest = min(c.first for c in self.changes.values())
            settled = [c.first for c in self.changes.values()
                       if c.settled or now - c.last >= quiet]
            held = {p: True for p, c in self.changes.items()
                    if not c.settled and now - c.last < quiet}
        if final:
            return "stop", held
        if now - oldest >= self.options.max_interval:
            self._full_scan = True  # a safety net under a steady stream of writes
            return "max-interval", {}
        if not settled:
            return None, {}
        if now - last >= quiet:
            return "quiet", held
        # Under a steady stream of writes, start early by what a snapshot
        # takes, so a completed file is in history about one quiet period
        # after it was written, not a quiet period plus a snapshot.
        if now - min(settled) >= max(quiet / 2, quiet - self._snapshot_seconds):
            return "settled", held
        return None, {}

    def _snapshot(self, held: dict[str, bool], reason: str) -> None:
        started = time.monotonic()
        started_at = _utc()
        with self._lock:
            taken = {p: c for p, c in self.changes.items() if p not in held}
            for p in taken:
                del self.changes[p]
        try:
            store = Store.open(self.store_path)
        except StoreLocked as e:
            self._requeue(taken, started, str(e))
            return
        targets = None
        try:
            history = History(store)
            kept = self._held_entries(history, held)
            targets = self._targets(history, taken, held)
            result = take_snapshot(history, self.source, self.options.branch,
                                   message=self.options.message,
                                   policy=ScanPolicy(held=kept, sqlite_backup=True, targets=targets,
                                                     previous=self._previous_entries(history)))
        except CasError as e:
            self._requeue(taken, started, str(e))
            return
        finally:
            store.close()
        scan = result.scan
        for problem in scan.problems:
            rel = os.path.relpath(problem.path, self.source)
            self._log({"event": "problem", "path": rel, "detail": problem.message})
            with self._lock:
                self._retry[rel] = time.monotonic() + RETRY_SECONDS
        seconds = round(time.monotonic() - started, 3)
        if targets is not None:
            self._snapshot_seconds = 0.5 * self._snapshot_seconds + 0.5 * seconds
        self._log({"event": "ingest", "reason": reason, "started": started_at,
                   "scan": "full" if targets is None else "targeted", "changes": len(taken),
                   "held": len(held), "files_read": scan.read_files, "files": scan.files,
                   "bytes": scan.bytes, "seconds": seconds})
        snap = result.snapshot
        if snap is not None:
            self.snapshots += 1
            self.last_snapshot = {"id": snap.oid.hex, "time": snap.time_iso,
                                  "files": scan.files, "new_bytes": snap.stats.get("new_bytes", 0)}
            self._log({"event": "snapshot", "id": snap.oid.hex, "time": snap.time_iso,
                       "started": started_at,
                       "branch": self.options.branch, "changes": len(taken),
                       "new_objects": snap.stats.get("new_objects", 0),
                       "new_bytes": snap.stats.get("new_bytes", 0), "seconds": seconds})
        self._write_state()

    def _targets(self, history: History, taken: dict[str, Change],
                 held: dict[str, bool]) -> ScanTargets | None:
        """What to look at, or None for a full scan."""
        with self._lock:
            full, self._full_scan = self._full_scan, False
        head = history.branch_head(self.options.branch)
        if full or head is None or head.source != self.source:
            self._last_full = time.monotonic()
            return None
        changed = {os.fsencode(p) for p, c in taken.items() if not c.relist_only}
        changed.update(os.fsencode(p) for p in held)
        relist = {os.fsencode(p) for p, c in taken.items() if c.relist_only}
        return ScanTargets(base=head.tree, counts=head.stats, changed=changed, relist=relist)

    def _held_entries(self, history: History, held: dict[str, bool]) -> dict[bytes, TreeEntry | None]:
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

    def _requeue(self, taken: dict[str, Change], started: float, why: str) -> None:
        with self._lock:
            self._full_scan = True
            for p, c in taken.items():
                self.changes.setdefault(p, c)
            self._retry[""] = time.monotonic() + RETRY_SECONDS
        self._log({"event": "problem", "path": "", "detail": f"{why}; retrying"})

    def _write_state(self, running: bool = True) -> None:
        now = time.time()
        with self._lock:
            backlog = len(self.changes)
        key = (backlog, self.snapshots, running)
        if key == self._state_key and now - self._state_written < STATE_REFRESH_SECONDS:
            return
        self._state_key, self._state_written = key, now
        state = {"pid": os.getpid() if running else None, "branch": self.options.branch,
                 "started": _utc(self.started), "updated": _utc(now), "snapshots": self.snapshots,
                 "last_snapshot": self.last_snapshot, "backlog": backlog}
        _, state_path = state_paths(self.store_path, self.source)
        try:
            with atomic_output(state_path, durable=False) as f:
                f.write((json.dumps(state, sort_keys=True) + "\n").encode())
        except OSError:
            pass  # the state file is advisory
