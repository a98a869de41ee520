"""``cas purge``: paths taken out of history, and their bytes out of the store.

Forgetting a snapshot leaves every other snapshot that holds a file; purge
removes the file itself. Every recorded snapshot that holds one of the
paths (of one branch with ``branch``; model versions are left alone, as
``cas model rm`` is how a model goes) is written again without them: a new
tree, and a new snapshot record with the same time, message, branch and
everything else. A recorded snapshot whose parent is rewritten is written
again too, with the new parent's id, so history keeps its shape. Refs move
to the new records and the old ones are forgotten. Then everything no
recorded snapshot reaches goes at once, whatever gc's grace period, and
every pack holding any of it is rewritten without it; the stat cache's
records of the paths go, and the index is copied record by record into a
new environment, so that no freed page, nor the free middle of a page,
keeps them (compaction copies pages whole).

Order, for a SIGKILL at any moment (each step is crash-safe alone): new
objects are durable and indexed before any record names them; new records
are written before refs move to them; refs move before the old records are
forgotten; gc and the index copy keep their own orders. A crash leaves old and
new records side by side at worst; running purge again rewrites what still
holds the paths (to the very same ids: a rewrite is a function of the old
record) and finishes the removal.

A purged file whose content a kept snapshot still holds under another path
(or on another branch) stays in the store: the report names where.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..durable import fsync_dir
from ..errors import ArgumentsConflict, PathNotInSnapshot, StoreWriteError
from ..model.history import History, TimelineEntry
from ..model.refs import HEADS, TAGS
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE, SYMLINK, Tree, TreeEntry
from ..objectid import ObjectId, hash_bytes
from ..storage.index import DATA_FILE, LONG_KEYS, TABLES, Index
from ..storage.store import Store
from ..storage.writer import ObjectWriter
from .gc import GcReport, gc
from .statcache import STAT_TABLE
from .worktree import WorktreeRecord, read_worktree_record, write_worktree_record

# Purged paths as tuples of name components, grouped by their first one.
PathSet = frozenset[tuple[bytes, ...]]


@dataclass
class Rewritten:
    old: Snapshot
    new_id: ObjectId               # in a dry run, the id it would get
    new_tree: ObjectId
    paths: list[bytes]             # the purged paths it held (empty: re-parented only)


@dataclass
class KeptContent:
    path: bytes                    # the purged path
    elsewhere: bytes               # where a kept snapshot still has it
    snapshot: ObjectId


@dataclass
class PurgeReport:
    paths: list[bytes]
    branch: str | None = None
    dry_run: bool = False
    rewritten: list[Rewritten] = field(default_factory=list)
    moved: dict[str, tuple[ObjectId, ObjectId | None]] = field(default_factory=dict)
    kept: list[KeptContent] = field(default_factory=list)
    skipped_models: list[tuple[Snapshot, bytes]] = field(default_factory=list)
    absent: list[bytes] = field(default_factory=list)   # in no snapshot in scope
    stat_records: int = 0
    gc: GcReport | None = None
    index_bytes: tuple[int, int] | None = None


def purge(history: History, paths: Iterable[bytes], branch: str | None = None,
          dry_run: bool = False) -> PurgeReport:
    """Take ``paths`` (tree-relative, '/'-separated, not the root) out of
    every snapshot in scope and out of the store.

    Call with the store opened exclusively unless ``dry_run``.
    """
    wanted = _split_paths(paths)
    if not dry_run and history.store.index.read_only:
        raise StoreWriteError(history.store.path, "read-only: nothing can be purged (a read-only "
                                                  "filesystem, or no permission to write)")
    report = PurgeReport(paths=sorted(b"/".join(p) for p in wanted), branch=branch, dry_run=dry_run)
    snaps = history.snapshots()
    holders = _holders(history, snaps, wanted, branch, report)
    order = _rewrite_order(snaps, holders)
    if dry_run:
        sink = _Sink(None)
        mapping = _rewrite(history, order, holders, wanted, _Pruner(history, sink), report)
    else:
        with history.store.writer() as writer:
            sink = _Sink(writer)
            mapping = _rewrite(history, order, holders, wanted, _Pruner(history, sink), report)
            writer.flush()
    purged = _purged_ids(history, report.rewritten)
    if dry_run:
        report.kept = _kept_content(history, snaps, report.rewritten, sink.trees, purged)
        report.moved = {ref: (old, mapping[old]) for ref, old in _refs_on(history, mapping)}
        return report
    if report.rewritten:
        _switch_records(history, report, sink.records)
    report.stat_records = _drop_stat_records(history, report.paths, branch)
    report.gc = gc(history, grace_seconds=0, repack_all_dead=True)
    # What gc left of the purged content is what a snapshot still reaches.
    index = history.store.index
    still = {d: p for d, p in purged.items() if index.contains(ObjectId(d))}
    report.kept = _kept_content(history, history.snapshots(), report.rewritten, sink.trees, still)
    report.index_bytes = copy_index(history.store)
    return report


def _split_paths(paths: Iterable[bytes]) -> PathSet:
    split = set()
    for p in paths:
        parts = tuple(x for x in p.split(b"/") if x and x != b".")
        if not parts:
            raise ArgumentsConflict("a path naming the tree root cannot be purged (forget the "
                                    "snapshots with 'cas forget' instead)")
        split.add(parts)
    # A path below another purged one goes with it.
    return frozenset(p for p in split if not any(p[:i] in split for i in range(1, len(p))))


def _holders(history: History, snaps: list[Snapshot], wanted: PathSet, branch: str | None,
             report: PurgeReport) -> dict[ObjectId, list[bytes]]:
    """The snapshots in scope holding a path, with the paths each holds."""
    holders: dict[ObjectId, list[bytes]] = {}
    found: set[bytes] = set()
    for snap in snaps:
        if branch is not None and snap.branch != branch:
            continue
        held = [b"/".join(p) for p in sorted(wanted) if _holds(history, snap, b"/".join(p))]
        if not held:
            continue
        if snap.model is not None:
            report.skipped_models.extend((snap, p) for p in held)
            continue
        holders[snap.stored_id] = held
        found.update(held)
    report.absent = [p for p in report.paths if p not in found]
    return holders


def _holds(history: History, snap: Snapshot, path: bytes) -> bool:
    try:
        return history.entry_at(snap.tree, path) is not None
    except PathNotInSnapshot:
        return False


def _rewrite_order(snaps: list[Snapshot], holders: dict[ObjectId, list[bytes]]) -> list[Snapshot]:
    """The holders and every recorded (non-model) descendant of one,
    parents before children: a child's record names its parent's new id."""
    children: dict[ObjectId, list[Snapshot]] = {}
    for snap in snaps:
        for parent in snap.parents:
            children.setdefault(parent, []).append(snap)
    by_id = {s.stored_id: s for s in snaps}
    chosen: set[ObjectId] = set()
    pending = list(holders)
    while pending:
        oid = pending.pop()
        if oid in chosen:
            continue
        chosen.add(oid)
        pending.extend(c.stored_id for c in children.get(oid, ()) if c.model is None)
    return _parents_first([by_id[o] for o in chosen], chosen)


def _parents_first(snaps: list[Snapshot], chosen: set[ObjectId]) -> list[Snapshot]:
    """A topological order (by time where free); a crafted parent loop,
    which no real history has, is broken by time order."""
    ordered: list[Snapshot] = []
    placed: set[ObjectId] = set()
    by_id = {s.stored_id: s for s in snaps}
    for start in sorted(snaps, key=lambda s: (s.time_ns, s.stored_id)):
        stack: list[tuple[Snapshot, bool]] = [(start, False)]
        visiting: set[ObjectId] = set()
        while stack:
            snap, ready = stack.pop()
            oid = snap.stored_id
            if oid in placed:
                continue
            if ready:
                placed.add(oid)
                ordered.append(snap)
                continue
            visiting.add(oid)
            stack.append((snap, True))
            stack.extend((by_id[p], False) for p in snap.parents
                         if p in chosen and p not in placed and p not in visiting)
    return ordered


class _Sink:
    """Where new trees and snapshot manifests go: the store, or (a dry run)
    nowhere, their ids computed and the trees kept for the walks after."""

    def __init__(self, writer: ObjectWriter | None):
        self.writer = writer
        self.trees: dict[ObjectId, Tree] = {}
        self.records: dict[ObjectId, bytes] = {}

    def _put(self, data: bytes) -> ObjectId:
        return self.writer.put_bytes(data) if self.writer is not None else hash_bytes(data)

    def put_tree(self, tree: Tree) -> ObjectId:
        oid = self._put(tree.to_json())
        self.trees[oid] = tree
        return oid

    def put_snapshot(self, snap: Snapshot) -> ObjectId:
        data = snap.to_json()
        oid = self._put(data)
        self.records[oid] = data
        return oid


class _Pruner:
    """Trees without the purged paths; each (tree, paths) pruned once, so
    the subtrees snapshots share cost one rewrite for all of them."""

    def __init__(self, history: History, sink: _Sink):
        self.history, self.sink = history, sink
        self.done: dict[tuple[ObjectId, PathSet], tuple[ObjectId, dict]] = {}

    def prune(self, tree_id: ObjectId, paths: PathSet) -> tuple[ObjectId, dict]:
        """The pruned tree's id, and the counts (files, dirs, symlinks, bytes) removed."""
        key = (tree_id, paths)
        if key not in self.done:
            self.done[key] = self._prune(tree_id, paths)
        return self.done[key]

    def _prune(self, tree_id: ObjectId, paths: PathSet) -> tuple[ObjectId, dict]:
        tree = self.history.load_tree(tree_id)
        removed = _zero_counts()
        entries: list[TreeEntry] = []
        changed = False
        for entry in tree.entries:
            below = frozenset(p[1:] for p in paths if p[0] == entry.name)
            if not below:
                entries.append(entry)
            elif () in below:
                changed = True
                _add(removed, self._counts(entry))
            elif entry.kind == DIR and entry.oid is not None:
                new_id, sub = self.prune(entry.oid, below)
                changed = changed or new_id != entry.oid
                _add(removed, sub)
                entries.append(dataclasses.replace(entry, oid=new_id))
            else:
                entries.append(entry)
        return (self.sink.put_tree(Tree(tuple(entries))) if changed else tree_id), removed

    def _counts(self, entry: TreeEntry) -> dict:
        counts = _zero_counts()
        _count(counts, entry)
        if entry.kind == DIR and entry.oid is not None:
            for _path, below in self.history.walk(entry.oid):
                _count(counts, below)
        return counts


def _zero_counts() -> dict:
    return {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}


def _count(counts: dict, entry: TreeEntry) -> None:
    kind = {FILE: "files", DIR: "dirs", SYMLINK: "symlinks"}[entry.kind]
    counts[kind] += 1
    if entry.kind == FILE:
        counts["bytes"] += entry.size


def _add(total: dict, more: dict) -> None:
    for k, v in more.items():
        total[k] += v


def _rewrite(history: History, order: list[Snapshot], holders: dict[ObjectId, list[bytes]],
             wanted: PathSet, pruner: _Pruner, report: PurgeReport) -> dict[ObjectId, ObjectId]:
    """Each snapshot in ``order`` written again; old id -> new id."""
    mapping: dict[ObjectId, ObjectId] = {}
    for snap in order:
        held = holders.get(snap.stored_id, [])
        tree, removed = pruner.prune(snap.tree, wanted) if held else (snap.tree, _zero_counts())
        stats = dict(snap.stats)
        for k, v in removed.items():
            stats[k] = max(0, stats.get(k, 0) - v)
        new = dataclasses.replace(snap, tree=tree, stats=stats, oid=None,
                                  parents=tuple(mapping.get(p, p) for p in snap.parents))
        mapping[snap.stored_id] = pruner.sink.put_snapshot(new)
        report.rewritten.append(Rewritten(snap, mapping[snap.stored_id], tree, held))
    return mapping


# -- what stays: purged content that kept snapshots still hold -------------------

def _kept_content(history: History, snaps: list[Snapshot], rewritten: list[Rewritten],
                  new_trees: dict[ObjectId, Tree], purged: dict[bytes, bytes]) -> list[KeptContent]:
    """Each purged file or directory (of ``purged``) whose content a
    snapshot still holds after the purge (under another path, or on a
    branch left alone), with one place that holds it: that content is live
    and stays. Walks every tree once: only when something is kept."""
    if not purged:
        return []
    new_tree_of = {r.old.stored_id: (r.new_id, r.new_tree) for r in rewritten}
    roots = [new_tree_of.get(s.stored_id, (s.stored_id, s.tree)) for s in snaps]
    kept: dict[bytes, KeptContent] = {}
    seen: set[ObjectId] = set()
    for snap_id, root in roots:
        for path, entry in _unseen_entries(history, new_trees, root, seen):
            if entry.oid is not None and entry.oid.digest in purged and entry.oid.digest not in kept:
                kept[entry.oid.digest] = KeptContent(purged[entry.oid.digest], path, snap_id)
    return sorted(kept.values(), key=lambda k: (k.path, k.elsewhere))


def _purged_ids(history: History, rewritten: list[Rewritten]) -> dict[bytes, bytes]:
    """The id of every file and directory at a purged path (digest -> path)."""
    purged: dict[bytes, bytes] = {}
    for r in rewritten:
        for path in r.paths:
            entry = history.entry_at(r.old.tree, path)
            if entry is None or entry.oid is None:
                continue
            purged.setdefault(entry.oid.digest, path)
            if entry.kind == DIR:
                for sub, below in history.walk(entry.oid, path):
                    if below.oid is not None:
                        purged.setdefault(below.oid.digest, sub)
    return purged


def _unseen_entries(history: History, new_trees: dict[ObjectId, Tree], root: ObjectId,
                    seen: set[ObjectId]) -> Iterator[tuple[bytes, TreeEntry]]:
    """Every entry below ``root`` not inside a tree already walked (a
    subtree shared by many snapshots is walked once), with its path."""
    pending = [(root, b"")]
    while pending:
        tree_id, prefix = pending.pop()
        if tree_id in seen:
            continue
        seen.add(tree_id)
        tree = new_trees.get(tree_id) or history.load_tree(tree_id)
        for entry in tree.entries:
            path = prefix + b"/" + entry.name if prefix else entry.name
            yield path, entry
            if entry.kind == DIR and entry.oid is not None:
                pending.append((entry.oid, path))


# -- switching records and refs, under refs/lock ---------------------------------

def _refs_on(history: History, mapping: dict[ObjectId, ObjectId]) -> list[tuple[str, ObjectId]]:
    """(ref, old id) of every branch and tag on a rewritten snapshot."""
    on = [(HEADS + name, oid) for name, oid in history.refs.branches().items() if oid in mapping]
    return on + [(TAGS + name, oid) for name, oid in history.refs.tags().items() if oid in mapping]


def _switch_records(history: History, report: PurgeReport, records: dict[ObjectId, bytes]) -> None:
    """New records listed, refs moved onto them, the old records forgotten."""
    mapping = {r.old.stored_id: r.new_id for r in report.rewritten if r.new_id != r.old.stored_id}
    with history.refs.locked():
        history.add_records([(Snapshot.from_json(records[new], new), records[new])
                             for new in mapping.values()])
        for ref, old in _refs_on(history, mapping):
            history.refs.write_locked(ref, mapping[old])
            report.moved[ref] = (old, mapping[old])
        _move_worktree(history, mapping)
        history.forget_many([TimelineEntry(r.old.stored_id, r.old.time_ns, r.old.branch)
                             for r in report.rewritten if r.old.stored_id in mapping])


def _move_worktree(history: History, mapping: dict[ObjectId, ObjectId]) -> None:
    """The record of what a checkout left follows its snapshot to the new id."""
    record = read_worktree_record(history)
    if record is None or (record.snapshot not in mapping and record.branch_head not in mapping):
        return
    head = record.branch_head
    write_worktree_record(history, WorktreeRecord(
        mapping.get(record.snapshot, record.snapshot), record.branch,
        mapping.get(head, head) if head is not None else None, record.complete))


def _drop_stat_records(history: History, paths: list[bytes], branch: str | None) -> int:
    """The stat cache's records of the purged paths and everything below them."""
    own = None if branch is None else branch.encode()
    doomed = []
    for key, _ in history.store.index.scan(STAT_TABLE):
        name, sep, rel = key.partition(b"\0")
        if sep and (own is None or name == own) and \
                any(rel == p or rel.startswith(p + b"/") for p in paths):
            doomed.append(key)
    history.store.index.update(STAT_TABLE, delete=doomed)
    return len(doomed)


# -- an index without a freed byte -----------------------------------------------

def copy_index(store: Store) -> tuple[int, int]:
    """Replace the index by a copy made record by record; (bytes before, after).

    Compaction is not enough: it copies live pages whole, and a page keeps
    the bytes of a record deleted from it in its free middle (purged names
    were found there). A new environment written from the records alone
    holds nothing else. Written in ``index.new/``, fsynced, then its data
    file renamed over ``index/data.mdb`` (as compaction does, §5.1): a crash
    leaves the old index or the new, and a stray ``index.new/``, removed by
    the next run. Call with the store opened exclusively.
    """
    old, layout = store.index, store.layout
    before = old.size()
    new_path = layout.index + ".new"
    shutil.rmtree(new_path, ignore_errors=True)
    new = Index.create(new_path, store.config.store_id, layout.modes, store.sealer)
    try:
        new.record(old.entries(), old.packs())
        for table in TABLES:
            if table not in _COPIED_APART:
                new.update(table, put=old.scan(table))
        after = new.size()
    finally:
        new.close()
    _fsync_file(os.path.join(new_path, DATA_FILE))
    old.close()
    os.rename(os.path.join(new_path, DATA_FILE), os.path.join(layout.index, DATA_FILE))
    fsync_dir(layout.index)
    store.reopen_index()
    shutil.rmtree(new_path, ignore_errors=True)
    return before, after


# Objects and packs go through record(); long keys come with their tables.
_COPIED_APART = (b"objects", b"packs", LONG_KEYS)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
