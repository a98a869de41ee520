"""``cas checkout``: make the working tree match a snapshot.

Before touching anything, every path that would be overwritten or deleted
is checked: its current content must be reachable from a recorded snapshot
(so it can be got back: content that only ``cas add`` stored is not, and gc
would delete it), or checkout refuses and names the paths, unless forced.
A whole-tree checkout records which snapshot the tree now shows
(``worktree.WorktreeRecord``), first as begun, then as done.

``status`` compares the working tree with the snapshot it shows, and
``restore_to`` is restore with checkout's check where the target lies in a
tracked tree: the working tree compared with a snapshot, in one place.

Deletions walk the working tree with directory fds, like restore: a
directory swapped for a symbolic link is never followed, so nothing outside
the tree is deleted.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from ..dirfd import lstat_at, open_path, remove_at
from ..errors import (
    CasError,
    RestoreWouldLoseChanges,
    SourceError,
    TargetInsideTree,
    WorktreeNotRecorded,
    WouldLoseChanges,
)
from ..model.history import History
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE, TreeEntry
from ..objectid import ObjectId, hash_fd
from ..storage.store import STORE_DIR
from .diff import Change, diff_trees, scan_working_tree, whole_tree_or
from .gc import live_set
from .restore import Overwrite, OwnerPolicy, RestoreReport, refuse_store_target, restore
from .walk import WARNING, Problem
from .worktree import (
    WorktreeRecord,
    WorktreeState,
    entry_in,
    tracked_tree_of,
    worktree_state,
    write_worktree_record,
)


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
        return _checkout(history, snapshot, source, root_fd, branch, whole_tree_or(paths), force)
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
    # Databases compare by their consistent copy, as snapshot records them.
    working, load_working = scan_working_tree(history, source, branch, root_fd)
    # old = the working tree, new = the snapshot.
    changes = list(diff_trees(load_working, working.root, history.load_tree, snapshot.tree, paths))
    head = history.branch_head(branch)
    safe = SafeContent(history, head)
    if not force:
        at_risk = [c for c in changes if not safe.recoverable(c)]
        at_risk += hidden_unsaved(root_fd, changes, safe)
        if at_risk:
            raise WouldLoseChanges([os.fsdecode(c.path) for c in at_risk])
    report = CheckoutReport(changes)
    record = _begin_record(history, snapshot, branch, head, paths, report.problems)
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
    if record is not None:
        _write_record(history, dataclasses.replace(record, complete=True), report.restore.problems)
    return report


def _begin_record(history: History, snapshot: Snapshot, branch: str, head: Snapshot | None,
                  paths: list[bytes] | None, problems: list[Problem]) -> WorktreeRecord | None:
    """Say which snapshot a whole-tree checkout is making the tree match,
    before the tree changes, so an interrupted checkout is known as one
    (status compares against where it was going); it is said again as done
    at the end."""
    if paths is not None or snapshot.oid is None:
        return None
    record = WorktreeRecord(snapshot.oid, branch, head.oid if head else None, complete=False)
    return record if _write_record(history, record, problems) else None


def _write_record(history: History, record: WorktreeRecord, problems: list[Problem]) -> bool:
    # A store that cannot be written (a backup disk mounted read-only) still
    # gives its data back: the checkout goes on and says status cannot know.
    try:
        write_worktree_record(history, record)
        return True
    except WorktreeNotRecorded as e:
        problems.append(Problem(history.store.path, str(e), WARNING))
        return False


@dataclass
class Status:
    state: WorktreeState
    changes: list[Change]

    def to_doc(self) -> dict:
        return {**self.state.to_doc(), "changes": [change_doc(c) for c in self.changes]}


def change_doc(c: Change) -> dict:
    return {"change": c.kind, "path": c.path.decode("utf-8", "backslashreplace"),
            "old": c.old.to_doc() if c.old else None, "new": c.new.to_doc() if c.new else None}


def status(history: History) -> Status:
    """What changed in the working tree since the snapshot it shows."""
    state = worktree_state(history)
    working, load = scan_working_tree(history, state.source, state.branch)
    base = state.shows.tree if state.shows is not None else None
    return Status(state, list(diff_trees(history.load_tree, base, load, working.root)))



# -- content that would be lost ----------------------------------------------

class SafeContent:
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

    def recoverable(self, change: Change, path: bytes | None = None) -> bool:
        """Whether what ``change`` replaces (``change.old``, at ``path`` in
        the tree, default its own path) can be got back."""
        old = change.old
        if old is None or old.kind == DIR:
            return True  # nothing there, or an empty directory: nothing to lose
        if old.kind == FILE:
            return self.has(change.path if path is None else path, old.oid)
        # A symbolic link that the snapshot also has, identically, loses nothing.
        return change.new is not None and change.new.target == old.target



def restore_to(history: History, snapshot: Snapshot, target: str, paths: list[bytes] | None = None,
               *, force: bool = False, overwrite: Overwrite = Overwrite.ALWAYS,
               on_file: Callable[[int], None] | None = None,
               owners: OwnerPolicy | None = None) -> RestoreReport:
    """Restore into ``target``; into a tracked tree (or a directory in one),
    refused with ``RestoreWouldLoseChanges`` when a file it would replace
    holds content that is in no snapshot, unless ``force``."""
    refuse_store_target(history, target)
    if not force:
        at_risk = unsaved_overwrites(history, snapshot, target, paths, overwrite)
        if at_risk:
            raise RestoreWouldLoseChanges(at_risk)
    return restore(history, snapshot, target, paths, on_file, owners, overwrite=overwrite)


def place_in_tree(history: History, target: str, here: str | None) -> tuple[str, bytes | None]:
    """Where a restore into ``target`` writes, as git restore places paths
    in the working tree: (directory to restore into, the part of the tree
    that a restore naming no paths restores, or None for all of it).

    Paths are from the tree's root, so into a tracked tree they are written
    where they live: a target that is the current directory ``here``, deep
    in the tree, means the tree's root (and, with no paths, only ``here``'s
    part of it); any other directory below the root would hold a second,
    nested copy and is refused (``TargetInsideTree``). Elsewhere (outside
    every tracked tree, or at a tree's root) the target is as given.
    """
    found = tracked_tree_of(history, target)
    if found is None or not found[2]:
        return target, None
    tree, _, rel = found
    if here is not None and _same_dir(target, here):
        return tree, rel
    raise TargetInsideTree(target, tree)


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False   # one does not exist: not the same


def unsaved_overwrites(history: History, snapshot: Snapshot, target: str,
                       paths: list[bytes] | None, overwrite: Overwrite) -> list[str]:
    """The files under ``target`` that restoring ``paths`` of ``snapshot``
    would replace although their content is in no snapshot (checkout's
    check, where the target lies in a tracked tree; else none)."""
    found = None if overwrite is Overwrite.NEVER else tracked_tree_of(history, target)
    if found is None:
        return []
    tree, branch, inside = found
    working, load = scan_working_tree(history, tree, branch)
    root: ObjectId | None = working.root
    if inside:
        here = entry_in(load, root, inside)
        if here is not None and here.kind != DIR:
            return []  # a conflict the restore reports
        root = here.oid if here is not None else None   # None: nothing the scan saw there
    safe = SafeContent(history, history.branch_head(branch))
    changes = list(diff_trees(load, root, history.load_tree, snapshot.tree, paths))
    # A restore adds and replaces, never deletes, and never puts a
    # directory in a file's place: only replaced files and links count,
    # and files the scan left out (ignored ones) where the snapshot has one.
    at_risk = [c for c in changes if c.old is not None and c.new is not None
               and c.new.kind != DIR and not safe.recoverable(c, _in_tree(inside, c.path))]
    tree_fd = _open_tree(tree)
    try:
        at_risk += hidden_unsaved(tree_fd, changes, safe, inside)
    finally:
        os.close(tree_fd)
    return [os.path.join(target, os.fsdecode(c.path)) for c in at_risk]


def _in_tree(inside: bytes, path: bytes) -> bytes:
    return inside + b"/" + path if inside else path


def hidden_unsaved(root_fd: int, changes: list[Change], safe: SafeContent,
                   inside: bytes = b"") -> list[Change]:
    """The changes that would replace a file the scan left out (one that
    ``.casignore`` covers now) whose content is in no snapshot.

    The scan lists no ignored file, so to a comparison the snapshot's file
    at that path looks added: only those paths are looked at on disk (the
    tree ``root_fd``; ``inside`` is where the compared directory lies in it).
    """
    return [c for c in changes
            if c.old is None and c.new is not None and c.new.kind != DIR
            and not _in_tree(inside, c.path).startswith(_STORE_PREFIX)   # never written
            and _unsaved_on_disk(root_fd, _in_tree(inside, c.path), c.new, safe)]


_STORE_PREFIX = STORE_DIR.encode() + b"/"


def _unsaved_on_disk(root_fd: int, path: bytes, new: TreeEntry, safe: SafeContent) -> bool:
    above, _, name = path.rpartition(b"/")
    try:
        dir_fd = open_path(root_fd, _parts(above))
    except OSError:
        return False   # no directory there (or a link on the way, which the write refuses)
    try:
        st = lstat_at(dir_fd, name)
        if st is None or stat.S_ISDIR(st.st_mode):
            return False   # nothing there, or a conflict the write reports
        if stat.S_ISLNK(st.st_mode):
            return os.readlink(name, dir_fd=dir_fd) != new.target
        if not stat.S_ISREG(st.st_mode):
            return False
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            return not safe.has(path, hash_fd(fd))
        finally:
            os.close(fd)
    except OSError:
        return True   # there but unreadable: not known to be safe
    finally:
        os.close(dir_fd)


def _prune_parents(history: History, snapshot: Snapshot, root_fd: int, path: bytes) -> None:
    """Remove directories left empty that the snapshot does not have."""
    parent = path.rpartition(b"/")[0]
    while parent:
        try:
            entry = history.entry_at(snapshot.tree, parent)
            if entry is not None and entry.kind == DIR:
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
            if entry_in(load_working, working.root, side) is not None:
                continue
            try:
                report.removed += _remove(root_fd, side)
            except OSError as e:
                report.problems.append(Problem(os.fsdecode(source_b + b"/" + side),
                                               f"{e.strerror or e}; not removed"))


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
