"""``cas checkout``: make the working tree match a snapshot.

Before touching anything, every path that would be overwritten or deleted
is checked: its current content must already be in the store (so it can be
got back), or checkout refuses and names the paths, unless forced.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field

from ..errors import CasError, WouldLoseChanges
from ..model.history import History
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE
from .diff import Change, diff_trees
from .restore import RestoreReport, restore
from .scan import scan


@dataclass
class CheckoutReport:
    changes: list[Change] = field(default_factory=list)
    removed: int = 0
    restore: RestoreReport | None = None


def checkout(history: History, snapshot: Snapshot, source: str, branch: str,
             paths: list[bytes] | None = None, force: bool = False) -> CheckoutReport:
    store = history.store
    working = scan(store, source, branch, writer=None)

    def load_working(oid):
        return working.trees.get(oid) or history.load_tree(oid)

    # old = the working tree, new = the snapshot.
    changes = list(diff_trees(load_working, working.root, history.load_tree, snapshot.tree, paths))
    at_risk = [c for c in changes if c.old is not None and not _recoverable(store, c)]
    if at_risk and not force:
        raise WouldLoseChanges([os.fsdecode(c.path) for c in at_risk])
    report = CheckoutReport(changes)
    source_b = os.fsencode(os.path.abspath(source))
    # Deletions first, so a file can become a directory and back.
    for c in changes:
        if c.new is None or (c.old is not None and c.old.kind != c.new.kind):
            report.removed += _remove(source_b + b"/" + c.path.rstrip(b"/"))
            _prune_parents(history, snapshot, source_b, c.path.rstrip(b"/"))
    targets = sorted({c.path.rstrip(b"/") for c in changes if c.new is not None})
    report.restore = restore(history, snapshot, os.fsdecode(source_b), targets) if targets \
        else RestoreReport()
    return report


def _recoverable(store, change: Change) -> bool:
    old = change.old
    if old.kind == FILE:
        return store.has(old.oid)
    if old.kind == DIR:
        return True  # an empty directory: nothing in it to lose
    # A symbolic link that the snapshot also has, identically, loses nothing.
    return change.new is not None and change.new.target == old.target


def _prune_parents(history: History, snapshot: Snapshot, root: bytes, path: bytes) -> None:
    """Remove directories left empty that the snapshot does not have."""
    parent = path.rpartition(b"/")[0]
    while parent:
        try:
            if history.entry_at(snapshot.tree, parent).kind == DIR:
                return
        except CasError:
            pass
        try:
            os.rmdir(root + b"/" + parent)
        except OSError:
            return
        parent = parent.rpartition(b"/")[0]


def _remove(path: bytes) -> int:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    return 1
