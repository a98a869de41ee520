"""Where the bytes are: store totals, what a snapshot added, per-directory usage.

``unique`` bytes of a snapshot (or a directory in it) are the stored bytes
of objects that no other recorded snapshot reaches: what forgetting that
snapshot and running gc would free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..objectid import ObjectId
from ..model.history import History
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE
from ..storage.encoding import Encoding
from .gc import _mark_tree


@dataclass
class DirUsage:
    path: bytes
    files: int = 0
    logical_bytes: int = 0
    unique_bytes: int = 0
    children: list["DirUsage"] = field(default_factory=list)


def logical_bytes(history: History) -> int:
    """Bytes of all files of all recorded snapshots, as if stored without dedup."""
    return sum(s.stats.get("bytes", 0) for s in history.snapshots())


def disk_usage(history: History, snapshot: Snapshot, path: bytes = b"") -> DirUsage:
    store = history.store
    others: set[bytes] = set()   # digests reached by every other snapshot
    walked: set[bytes] = set()
    for snap in history.snapshots():
        if snap.oid != snapshot.oid:
            others.add(snap.oid.digest)
            if snap.model is not None:
                others.add(snap.model.digest)
            _mark_tree(history, snap.tree, others, walked)
    counted: set[ObjectId] = set()

    def objects_of(oid: ObjectId) -> list[ObjectId]:
        entry = store.index.lookup(oid)
        if entry is None or entry.encoding is not Encoding.CHUNKED:
            return [oid]
        return [oid] + [c for c, _ in store.chunk_list(oid).chunks]

    def unique(oids: list[ObjectId]) -> int:
        total = 0
        for oid in oids:
            if oid.digest in others or oid in counted:
                continue
            counted.add(oid)
            entry = store.index.lookup(oid)
            total += entry.stored_length if entry else 0
        return total

    def walk(tree_id: ObjectId, rel: bytes) -> DirUsage:
        # Post-order with an explicit stack: a crafted chain of thousands of
        # nested trees must not end in RecursionError.
        top = DirUsage(rel, unique_bytes=unique([tree_id]))
        stack = [(top, iter(history.load_tree(tree_id).entries))]
        while stack:
            usage, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                if stack:
                    parent = stack[-1][0]
                    parent.files += usage.files
                    parent.logical_bytes += usage.logical_bytes
                    parent.unique_bytes += usage.unique_bytes
            elif entry.kind == DIR:
                path = usage.path + b"/" + entry.name if usage.path else entry.name
                child = DirUsage(path, unique_bytes=unique([entry.oid]))
                usage.children.append(child)
                stack.append((child, iter(history.load_tree(entry.oid).entries)))
            elif entry.kind == FILE:
                usage.files += 1
                usage.logical_bytes += entry.size
                usage.unique_bytes += unique(objects_of(entry.oid))
        return top

    entry = history.entry_at(snapshot.tree, path, snapshot.oid.short)
    if entry is None:
        result = walk(snapshot.tree, b"")
        result.unique_bytes += unique([snapshot.oid])
        return result
    if entry.kind == DIR:
        return walk(entry.oid, path)
    return DirUsage(path, 1, entry.size, unique(objects_of(entry.oid)))
