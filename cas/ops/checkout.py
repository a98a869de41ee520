"""``cas checkout``: make the working tree match a snapshot.

Before touching anything, every path that would be overwritten or deleted
is checked: its current content must be reachable from a recorded snapshot
(so it can be got back: content that only ``cas add`` stored is not, and gc
would delete it), or checkout refuses and names the paths, unless forced.

Deletions walk the working tree with directory fds, like restore: a
directory swapped for a symbolic link is never followed, so nothing outside
the tree is deleted.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from ..dirfd import open_path, remove_at
from ..errors import CasError, SourceError, WouldLoseChanges
from ..model.history import History
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE
from .diff import Change, diff_trees
from .gc import live_set
from .restore import RestoreReport, restore
from .scan import ScanPolicy, scan
from .walk import Problem


@dataclass
class CheckoutReport:
    changes: list[Change] = field(default_factory=list)
    removed: int = 0
    restore: RestoreReport | None = None
    problems: list[Problem] = field(default_factory=list)


def checkout(history: History, snapshot: Snapshot, source: str, branch: str,
             paths: list[bytes] | None = None, force: bool = False) -> CheckoutReport:
    # The tree is opened once: its scan, the deletions and the writes all go
    # through this descriptor, so they act on one directory even if its path
    # is made to name another meanwhile.
    root_fd = _open_tree(source)
    try:
        return _checkout(history, snapshot, source, root_fd, branch, paths, force)
    finally:
        os.close(root_fd)


def _open_tree(source: str) -> int:
    """Open the working tree; a symbolic link in its place is followed only
    if it is the user's own (as the kernel's protected_symlinks rule does in
    shared directories): a link someone else put there would have checkout
    delete and write wherever it points."""
    path = os.path.abspath(source)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise SourceError(source, f"cannot be opened ({e.strerror})") from None
    try:
        if os.lstat(path).st_uid != os.geteuid():
            raise SourceError(source, "is a symbolic link owned by another user; not followed "
                                      "(check out in the directory it points to)")
        return os.open(path, flags)
    except OSError as e:
        raise SourceError(source, f"cannot be opened ({e.strerror})") from None


def _checkout(history: History, snapshot: Snapshot, source: str, root_fd: int, branch: str,
              paths: list[bytes] | None, force: bool) -> CheckoutReport:
    store = history.store
    # Databases compare by their consistent copy, as snapshot records them.
    working = scan(store, source, branch, writer=None, source_fd=root_fd,
                   policy=ScanPolicy(sqlite_backup=True))

    def load_working(oid):
        return working.trees.get(oid) or history.load_tree(oid)

    # old = the working tree, new = the snapshot.
    changes = list(diff_trees(load_working, working.root, history.load_tree, snapshot.tree, paths))
    safe = _SafeContent(history, history.branch_head(branch))
    at_risk = [c for c in changes if c.old is not None and not _recoverable(safe, c)]
    if at_risk and not force:
        raise WouldLoseChanges([os.fsdecode(c.path) for c in at_risk])
    report = CheckoutReport(changes)
    source_b = os.fsencode(os.path.abspath(source))
    # Deletions first, so a file can become a directory and back.
    for c in changes:
        if c.new is None or (c.old is not None and c.old.kind != c.new.kind):
            path = c.path.rstrip(b"/")
            try:
                report.removed += _remove(root_fd, path)
                _prune_parents(history, snapshot, root_fd, path)
            except OSError as e:
                report.problems.append(Problem(os.fsdecode(source_b + b"/" + path),
                                               f"{e.strerror or e}; not removed"))
    _remove_side_files(root_fd, working, load_working, changes, report, source_b)
    targets = sorted({c.path.rstrip(b"/") for c in changes if c.new is not None})
    report.restore = restore(history, snapshot, os.fsdecode(source_b), targets,
                             target_fd=root_fd) if targets else RestoreReport()
    report.restore.problems[:0] = report.problems
    return report


class _SafeContent:
    """Which file contents a recorded snapshot reaches.

    The branch head answers most questions (a file checkout replaces is
    usually as the last snapshot has it); the whole history is walked only
    when it does not.
    """

    def __init__(self, history: History, head: Snapshot | None):
        self.history = history
        self.head_tree = head.tree if head is not None else None
        self._live: set[bytes] | None = None

    def has(self, path: bytes, oid) -> bool:
        if self.head_tree is not None:
            try:
                entry = self.history.entry_at(self.head_tree, path)
            except CasError:
                entry = None
            if entry is not None and entry.kind == FILE and entry.oid == oid:
                return True
        if self._live is None:
            self._live = live_set(self.history)
        return oid.digest in self._live


def _recoverable(safe: _SafeContent, change: Change) -> bool:
    old = change.old
    if old.kind == FILE:
        return safe.has(change.path, old.oid)
    if old.kind == DIR:
        return True  # an empty directory: nothing in it to lose
    # A symbolic link that the snapshot also has, identically, loses nothing.
    return change.new is not None and change.new.target == old.target


def _prune_parents(history: History, snapshot: Snapshot, root_fd: int, path: bytes) -> None:
    """Remove directories left empty that the snapshot does not have."""
    parent = path.rpartition(b"/")[0]
    while parent:
        try:
            if history.entry_at(snapshot.tree, parent).kind == DIR:
                return
        except CasError:
            pass
        above, _, name = parent.rpartition(b"/")
        try:
            fd = open_path(root_fd, _parts(above))
        except OSError:
            return
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError:
            return
        finally:
            os.close(fd)
        parent = above


def _parts(path: bytes) -> list[bytes]:
    return [p for p in path.split(b"/") if p]


SQLITE_SIDE_SUFFIXES = (b"-wal", b"-shm", b"-journal")


def _remove_side_files(root_fd: int, working, load_working, changes: list[Change],
                       report: CheckoutReport, source_b: bytes) -> None:
    """Remove the -wal, -shm and -journal files of each database checkout
    replaces or deletes: SQLite would apply a leftover write-ahead log or
    rollback journal to the new file and corrupt it. The working tree was
    scanned as snapshot takes databases, so those files were compared as
    part of the database's consistent copy, never as entries of their own:
    one that the scan listed as an entry is an ordinary file, left alone."""
    for c in changes:
        if c.old is None or c.old.kind != FILE:
            continue
        path = c.path.rstrip(b"/")
        for suffix in SQLITE_SIDE_SUFFIXES:
            side = path + suffix
            if _entry_in(load_working, working.root, side) is not None:
                continue
            try:
                report.removed += _remove(root_fd, side)
            except OSError as e:
                report.problems.append(Problem(os.fsdecode(source_b + b"/" + side),
                                               f"{e.strerror or e}; not removed"))


def _entry_in(load_tree, root, path: bytes):
    entry, current = None, root
    for part in path.split(b"/"):
        if entry is not None and entry.kind != DIR:
            return None
        entry = load_tree(current).get(part)
        if entry is None:
            return None
        current = entry.oid
    return entry


def _remove(root_fd: int, path: bytes) -> int:
    """Remove ``path`` below the tree, through verified directory fds."""
    above, _, name = path.rpartition(b"/")
    try:
        fd = open_path(root_fd, _parts(above))
    except FileNotFoundError:
        return 0
    try:
        return int(remove_at(fd, name))
    finally:
        os.close(fd)
