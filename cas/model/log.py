"""A listing of history: which snapshots ``cas log`` shows, with what.

``History.log`` is the entry point; this module holds the walk so that the
history module stays about recording and resolving. The walk reads only
as many snapshot records as the listing needs, and the per-entry extras
cost only when asked: decorations read the refs once per listing, changes
cost one tree diff per entry shown.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import CasError
from ..objectid import ObjectId
from .snapshot import Snapshot
from .timeline import TimelineEntry
from .treediff import ADDED, DELETED, MODIFIED, TYPE_CHANGED, Change, diff_trees

if TYPE_CHECKING:
    from .history import History

__all__ = ["LogEntry", "LogQuery", "walk_log"]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One snapshot of a listing.

    ``refs`` are its decorations as git prints them ("HEAD -> main",
    "other", "tag: v1"). ``changes`` (only when asked) are against the
    snapshot listed before it (of its own branch with ``--all``), or its
    parent when it is the oldest listed; restricted to the listing's paths.
    """
    snapshot: Snapshot
    parent_forgotten: bool
    refs: tuple[str, ...] = ()
    changes: tuple[Change, ...] | None = None

    def counts(self) -> dict[str, int] | None:
        """Paths added, modified, deleted and type-changed; None unless changes were asked for."""
        if self.changes is None:
            return None
        counts = {ADDED: 0, MODIFIED: 0, DELETED: 0, TYPE_CHANGED: 0}
        for change in self.changes:
            counts[change.kind] += 1
        return counts

    def to_doc(self) -> dict:
        s = self.snapshot
        assert s.oid is not None
        doc = {"id": s.oid.hex, "tree": s.tree.hex, "parents": [p.hex for p in s.parents],
               "time": s.time_iso, "time_ns": s.time_ns, "message": s.message, "branch": s.branch,
               "host": s.host, "user": s.user, "source": s.source, "stats": s.stats,
               "parent_forgotten": self.parent_forgotten, "refs": list(self.refs)}
        if self.changes is not None:
            doc["changes"] = self.counts()
            doc["paths"] = [{"change": c.kind, "path": _path_doc(c.path)} for c in self.changes]
        return doc


def _path_doc(path: bytes) -> str:
    # As the diff JSON has it: undecodable bytes as \xNN, never a lone surrogate.
    return path.decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class LogQuery:
    limit: int | None = None
    since: int | None = None
    until: int | None = None
    paths: Sequence[bytes] = ()
    changes: bool = False
    by_branch: bool = False      # --all: each branch is compared within itself
    decorate: bool = True


def walk_log(history: History, entries: Iterable[TimelineEntry], query: LogQuery) -> list[LogEntry]:
    """The listing of ``entries`` (newest first within each branch) that ``query`` selects."""
    names = decorations(history) if query.decorate else {}
    picked: list[LogEntry] = []
    for snap, older in _with_next_older(history, entries, query.since, query.by_branch):
        if query.limit is not None and len(picked) >= query.limit:
            break
        if query.until is not None and snap.time_ns > query.until:
            continue
        base = older if older is not None or not (query.paths or query.changes) else \
            _recorded_parent(history, snap)
        if query.paths and not _changed(history, snap, base, query.paths):
            continue
        changes = _changes(history, snap, base, query.paths) if query.changes else None
        assert snap.oid is not None
        gap = snap.parent is not None and not history.is_recorded(snap.parent)
        picked.append(LogEntry(snap, gap, names.get(snap.oid, ()), changes))
    return picked


def decorations(history: History) -> dict[ObjectId, tuple[str, ...]]:
    """Each snapshot that a branch or tag names, with those names, as
    ``git log --decorate`` prints them: HEAD's branch first."""
    head = history.refs.head_branch()
    found: dict[ObjectId, list[str]] = {}
    branches = history.refs.branches()
    if head in branches:
        found.setdefault(branches[head], []).append(f"HEAD -> {head}")
    for name, oid in branches.items():
        if name != head:
            found.setdefault(oid, []).append(name)
    for name, oid in history.refs.tags().items():
        found.setdefault(oid, []).append(f"tag: {name}")
    return {oid: tuple(names) for oid, names in found.items()}


def _recorded_parent(history: History, snap: Snapshot) -> Snapshot | None:
    """The parent, when it is recorded: with --all, a fork's first snapshot
    is compared with the base it was forked from. A forgotten parent is not:
    the listed history begins where thinning left it."""
    if snap.parent is None or not history.is_recorded(snap.parent):
        return None
    try:
        return history.load_snapshot(snap.parent)
    except CasError:
        return None


def _entry_key(history: History, snap: Snapshot, path: bytes):
    try:
        e = history.entry_at(snap.tree, path)
    except CasError:
        return None
    return None if e is None else (e.kind, e.oid, e.target, e.mode)


def _changed(history: History, snap: Snapshot, older: Snapshot | None,
             paths: Sequence[bytes]) -> bool:
    # A lookup along each path, not a tree diff: the filter alone stays
    # as cheap as the path is deep, however wide the directories are.
    return any(_entry_key(history, snap, p) != (_entry_key(history, older, p) if older else None)
               for p in paths)


def _changes(history: History, snap: Snapshot, older: Snapshot | None,
             paths: Sequence[bytes]) -> tuple[Change, ...]:
    load = history.load_tree
    return tuple(diff_trees(load, older.tree if older else None, load, snap.tree, list(paths) or None))


_WAITING = object()


def _with_next_older(history: History, entries: Iterable[TimelineEntry], since: int | None,
                     by_branch: bool) -> Iterator[tuple[Snapshot, Snapshot | None]]:
    """(snapshot, the next older one listed or None), in the order listed.

    An entry older than ``since`` is read only as the partner of the last
    one shown of its branch; after it the branch is skipped unread.
    """
    waiting: deque[list] = deque()   # [snapshot, partner or _WAITING]
    last_of: dict[str, list] = {}
    done: set[str] = set()
    for entry in entries:
        if entry.branch in done:
            continue
        group = entry.branch if by_branch else ""
        snap = history.load_snapshot(entry.oid)
        pending = last_of.get(group)
        if pending is not None:
            pending[1] = snap
        if since is not None and snap.time_ns < since:
            done.add(entry.branch)
            last_of.pop(group, None)
        else:
            last_of[group] = [snap, _WAITING]
            waiting.append(last_of[group])
        while waiting and waiting[0][1] is not _WAITING:
            snap_, partner = waiting.popleft()
            yield snap_, partner
    for snap_, partner in waiting:
        yield snap_, None if partner is _WAITING else partner
