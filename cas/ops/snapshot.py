"""``cas snapshot``: record the state of a source directory on a branch.

A snapshot of some paths (git's ``commit -- PATH``) takes only those from
disk and everything else from the branch head: a targeted scan, as the
watcher runs one, lists the directories on the way to the named paths and
looks afresh only at those paths; the named entries are then grafted onto
the head's tree, so files beside them that changed on disk stay as the
head has them.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import NothingToRecordAt, SourceError
from ..model.history import History
from ..model.snapshot import Snapshot, new_snapshot
from ..model.tree import DIR, Tree, TreeEntry
from ..model.treelinks import TABLE as LINKS_TABLE
from ..model.treelinks import records_for as links_records
from ..objectid import ObjectId
from ..storage.writer import ObjectWriter
from .scan import ScanPolicy, ScanResult, ScanTargets, count_delta, scan
from .statcache import STAT_TABLE


@dataclass
class SnapshotResult:
    snapshot: Snapshot | None     # None: nothing changed, nothing recorded
    scan: ScanResult
    parent: Snapshot | None
    # Of a snapshot of some paths: those taken from disk, and those of them
    # recorded as deleted (gone from disk). Empty for a whole snapshot.
    paths: tuple[bytes, ...] = ()
    deleted: tuple[bytes, ...] = ()


@dataclass
class _Recorded:
    """What a scan gives the snapshot: its root and counts, and its trees."""
    root: ObjectId
    counts: dict
    trees: dict[ObjectId, Tree]
    deleted: tuple[bytes, ...] = ()


def take_snapshot(history: History, source: str, branch: str, message: str = "",
                  allow_empty: bool = False,
                  on_file: Callable[[int], None] | None = None,
                  policy: ScanPolicy | None = None, time_ns: int | None = None,
                  paths: list[bytes] | None = None,
                  on_total: Callable[[int, int], None] | None = None) -> SnapshotResult:
    """Scan ``source`` and record it on ``branch`` (at ``time_ns``, default now).

    ``on_file`` and ``on_total`` report progress as ``scan`` does.

    With ``paths`` ('/'-separated, relative to ``source``), only they are
    taken from disk; everything else is as the branch head has it. A named
    path gone from disk is recorded as deleted; one that is neither on disk
    nor in the head is refused (NothingToRecordAt) before anything is recorded.
    """
    store = history.store
    source = os.path.abspath(source)
    parent = history.branch_head(branch)
    named = _outermost(paths or [])
    with store.writer() as writer:
        if named:
            result, recorded = _scan_paths(history, source, branch, writer, parent, named,
                                           (on_file, on_total), policy or ScanPolicy())
        else:
            result = scan(store, source, branch, writer, on_file, policy, on_total=on_total)
            recorded = _Recorded(result.root, _counts(result), result.trees)
        writer.flush()
        # The stat cache only ever describes content that is durable now;
        # beside it, what the new trees name, so gc and verify need not
        # parse them again.
        store.index.update_tables({
            STAT_TABLE: (result.cache_updates.items(), result.cache_deletes),
            LINKS_TABLE: (links_records(recorded.trees), ()),
        })
        if parent is not None and parent.tree == recorded.root and not allow_empty:
            return SnapshotResult(None, result, parent, tuple(named), recorded.deleted)
        snapshot = new_snapshot(recorded.root, parent, message=message, branch=branch,
                                source=source, counts=recorded.counts, written=writer,
                                time_ns=time_ns)
        recorded_snapshot = history.record(snapshot, writer)
    if history.branch_head(history.refs.head_branch()) is None:
        # The store's first history: HEAD follows it, so log and HEAD~N work.
        history.refs.set_head_branch(branch)
    return SnapshotResult(recorded_snapshot, result, parent, tuple(named), recorded.deleted)


def _counts(result: ScanResult) -> dict:
    return {"files": result.files, "dirs": result.dirs, "symlinks": result.symlinks,
            "bytes": result.bytes}


def _outermost(paths: list[bytes]) -> list[bytes]:
    """The named paths without those inside another named one, sorted;
    [] when the root itself is named (a whole snapshot)."""
    if b"" in paths:
        return []
    unique = sorted(set(paths))
    return [p for p in unique if not any(_within(p, {q}) for q in unique if q != p)]


def _within(rel: bytes, named: set[bytes]) -> bool:
    """Whether ``rel`` is a named path or lies below one (one set lookup per level)."""
    while True:
        if rel in named:
            return True
        if b"/" not in rel:
            return False
        rel = rel.rpartition(b"/")[0]


class _OutsideNamed(dict):
    """``ScanPolicy.held`` for a snapshot of some paths: every file outside
    them stays out of the scan unread (its entry comes from the head)."""

    def __init__(self, named: set[bytes]):
        super().__init__()
        self.named = named

    def __contains__(self, rel: object) -> bool:
        return isinstance(rel, bytes) and not _within(rel, self.named)

    def __getitem__(self, rel: bytes) -> None:
        return None


def _scan_paths(history: History, source: str, branch: str, writer: ObjectWriter,
                parent: Snapshot | None, named: list[bytes],
                progress: tuple[Callable[[int], None] | None, Callable[[int, int], None] | None],
                policy: ScanPolicy) -> tuple[ScanResult, _Recorded]:
    """Scan the named paths and graft them onto the head's tree."""
    wanted = set(named)
    # Without a head there is no base tree: a full listing, still reading
    # nothing outside the named paths.
    targets = ScanTargets(base=parent.tree, counts=parent.stats, changed=wanted, relist=set()) \
        if parent is not None else None
    policy = dataclasses.replace(policy, held=_OutsideNamed(wanted), targets=targets)
    on_file, on_total = progress
    result = scan(history.store, source, branch, writer, on_file, policy, on_total=on_total)
    prefix = os.fsencode(source).rstrip(b"/") + b"/"
    # Problems met on the way (a special file beside a named path) concern
    # nothing this snapshot records.
    result.problems = [p for p in result.problems if not os.fsencode(p.path).startswith(prefix)
                       or _within(os.fsencode(p.path)[len(prefix):], wanted)]

    trees: dict[ObjectId, Tree] = dict(result.trees)

    def load(oid: ObjectId) -> Tree:
        return trees.get(oid) or history.load_tree(oid)

    head = _TreeAt(load, parent.tree if parent is not None else None)
    disk = _TreeAt(load, result.root)
    named, deleted = _sort_out(named, head, disk, result, prefix, branch)

    def put(tree: Tree) -> ObjectId:
        oid = writer.put_bytes(tree.to_json())
        trees[oid] = tree
        return oid

    root = _graft(head, disk, named, put)
    old_counts = {k: parent.stats.get(k, 0) for k in ("files", "dirs", "symlinks", "bytes")} \
        if parent is not None else dict.fromkeys(("files", "dirs", "symlinks", "bytes"), 0)
    delta = count_delta(load, parent.tree if parent is not None else None, root)
    counts = {k: old_counts[k] + d for k, d in zip(("files", "dirs", "symlinks", "bytes"), delta, strict=True)}
    return result, _Recorded(root, counts, trees, deleted)


def _sort_out(named: list[bytes], head: _TreeAt, disk: _TreeAt, result: ScanResult,
              prefix: bytes, branch: str) -> tuple[list[bytes], tuple[bytes, ...]]:
    """(the named paths to take from the scan, those of them gone from disk).

    A path the scan left out although it is on disk (unreadable, ignored,
    a special file) keeps the head's entry: only a path gone from disk is
    recorded as deleted. One in neither the scan nor the head is refused.
    """
    taken, deleted = [], []
    for path in named:
        if disk.entry(path) is not None:
            taken.append(path)
            continue
        link = _link_on_the_way(prefix, path)
        if link is not None:
            # The scan records the link and never follows it; lexists below would.
            raise SourceError(os.fsdecode(path), f"is beyond the symbolic link "
                                                 f"'{os.fsdecode(link)}', which is recorded as a "
                                                 "link; name the link itself to record it")
        gone = not os.path.lexists(prefix + path)
        if head.entry(path) is None:
            raise NothingToRecordAt(os.fsdecode(path), branch,
                                    "not on disk" if gone else _why_left_out(result, prefix + path))
        if gone:
            taken.append(path)
            deleted.append(path)
    return taken, tuple(deleted)


def _link_on_the_way(prefix: bytes, path: bytes) -> bytes | None:
    """The first directory of ``path`` (below ``prefix``) that is a symbolic link."""
    parts = path.split(b"/")[:-1]
    for i in range(1, len(parts) + 1):
        above = b"/".join(parts[:i])
        try:
            if stat.S_ISLNK(os.lstat(prefix + above).st_mode):
                return above
        except OSError:
            return None  # gone: the path is not on disk
    return None


def _why_left_out(result: ScanResult, full: bytes) -> str:
    """Why a named path on disk is not in the scan: what the scan said of it."""
    shown = os.fsdecode(full)
    said = [p.message for p in result.problems if p.path == shown]
    return f"on disk but not recorded ({said[0]})" if said else \
        "on disk but left out (by .casignore, or it is the store itself)"


class _TreeAt:
    """Entries of one tree by path, each directory on the way looked up once."""

    def __init__(self, load: Callable[[ObjectId], Tree], root: ObjectId | None):
        self.load = load
        self.dirs: dict[bytes, ObjectId | None] = {b"": root}

    def dir(self, path: bytes) -> ObjectId | None:
        """The tree at ``path``; None if there is no directory there."""
        oid = self.dirs[b""]
        walked = b""
        for part in path.split(b"/") if path else ():
            walked = walked + b"/" + part if walked else part
            if walked not in self.dirs:
                entry = self.load(oid).get(part) if oid is not None else None
                self.dirs[walked] = entry.oid if entry is not None and entry.kind == DIR else None
            oid = self.dirs[walked]
        return oid

    def entries(self, path: bytes) -> dict[bytes, TreeEntry]:
        oid = self.dir(path)
        return {e.name: e for e in self.load(oid).entries} if oid is not None else {}

    def entry(self, path: bytes) -> TreeEntry | None:
        parent, _, name = path.rpartition(b"/")
        oid = self.dir(parent)
        return self.load(oid).get(name) if oid is not None else None


def _graft(head: _TreeAt, disk: _TreeAt, named: list[bytes],
           put: Callable[[Tree], ObjectId]) -> ObjectId:
    """The head's tree with each named path as on disk (or removed).

    Directories on the way are rebuilt deepest first, keeping the head's
    entry for each (a directory new on disk comes from disk), so nothing
    beside a named path changes. No recursion: a named path may be deep.
    """
    on_the_way = {b""}
    for path in named:
        while b"/" in path:
            path = path.rpartition(b"/")[0]
            on_the_way.add(path)
    rebuilt: dict[bytes, ObjectId] = {}
    for directory in sorted(on_the_way, key=lambda d: d.count(b"/") + bool(d), reverse=True):
        entries = head.entries(directory)
        for path in named:
            parent, _, name = path.rpartition(b"/")
            if parent != directory:
                continue
            now = disk.entry(path)
            if now is None:
                entries.pop(name, None)
            else:
                entries[name] = now
        for sub, oid in rebuilt.items():
            parent, _, name = sub.rpartition(b"/")
            if sub and parent == directory:
                kept = entries.get(name)
                meta = kept if kept is not None and kept.kind == DIR else disk.entry(sub)
                assert meta is not None, "a rebuilt directory was read from disk"
                entries[name] = dataclasses.replace(meta, oid=oid)
        rebuilt[directory] = put(Tree.build(list(entries.values())))
    return rebuilt[b""]

