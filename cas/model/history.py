"""The history of a store: its snapshots, their trees, and the refs naming them.

A snapshot is recorded in three places, in this order, so that a crash at
any point leaves a consistent store:

1. its manifest (and every tree and file it reaches) as objects, flushed
   and indexed;
2. a copy of the manifest as ``snapshots/<id>.json``: the durable list of
   snapshots that history commands, gc and an index rebuild start from;
3. the branch ref, moved to it.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Iterator

from ..durable import atomic_output, fsync_dir, remove_quietly
from ..errors import ManifestInvalid, ObjectNotFound, PathNotInSnapshot, RefNotFound
from ..objectid import HEX_LENGTH, MIN_PREFIX, ObjectId, is_hex
from ..storage.store import Store
from ..storage.writer import ObjectWriter
from .refs import HEADS, TAGS, Refs
from .snapshot import Snapshot
from .tree import DIR, Tree, TreeEntry

SNAPSHOTS = "snapshots"
TABLE = b"snapshots"
_ANCESTRY = re.compile(r"^(.*?)((?:~\d*)*)$")
# Bounded by entries, not trees: a few trees of 100,000 files must not pin
# hundreds of MB (a tree entry costs about 300 bytes in memory).
_TREE_CACHE_ENTRIES = 1 << 18


class History:
    def __init__(self, store: Store):
        self.store = store
        self.refs = Refs(store)
        self._trees: OrderedDict[ObjectId, Tree] = OrderedDict()
        self._cached_entries = 0
        self._dir = os.path.join(store.path, SNAPSHOTS)

    # -- reading -------------------------------------------------------------

    def load_tree(self, oid: ObjectId) -> Tree:
        tree = self._trees.get(oid)
        if tree is None:
            try:
                data = self.store.read_object(oid)
            except ObjectNotFound:
                raise ManifestInvalid(f"tree {oid.hex}", "it is missing from the store") from None
            tree = Tree.from_json(data, oid)
            self._trees[oid] = tree
            self._cached_entries += len(tree.entries)
            while self._cached_entries > _TREE_CACHE_ENTRIES and len(self._trees) > 1:
                _, old = self._trees.popitem(last=False)
                self._cached_entries -= len(old.entries)
        else:
            self._trees.move_to_end(oid)
        return tree

    def load_snapshot(self, oid: ObjectId) -> Snapshot:
        data = self.store.index.get(TABLE, oid.digest)
        if data is None:
            try:
                data = self.store.read_object(oid)
            except ObjectNotFound:
                data = self._read_record(oid)
        return Snapshot.from_json(data, oid)

    def _record_path(self, oid: ObjectId) -> str:
        return os.path.join(self._dir, oid.hex + ".json")

    def _read_record(self, oid: ObjectId) -> bytes:
        try:
            with open(self._record_path(oid), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectNotFound(oid.hex) from None

    def snapshots(self) -> list[Snapshot]:
        """Every recorded (not forgotten) snapshot, oldest first.

        Read from the ``snapshots/`` files, the durable list that gc marks
        from: a damaged file is an error here, never a snapshot skipped.
        """
        snaps = [Snapshot.from_json(self._read_record(oid), oid) for oid in self._recorded_ids()]
        return sorted(snaps, key=lambda s: (s.time_ns, s.oid))

    def _recorded_ids(self) -> list[ObjectId]:
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return []
        return [ObjectId.parse(n[:-5]) for n in names
                if n.endswith(".json") and len(n) == HEX_LENGTH + 5 and is_hex(n[:-5])]

    def is_recorded(self, oid: ObjectId) -> bool:
        return os.path.exists(self._record_path(oid))

    def branch_head(self, branch: str) -> Snapshot | None:
        oid = self.refs.get(HEADS + branch)
        return self.load_snapshot(oid) if oid else None

    def ancestors(self, start: Snapshot) -> Iterator[Snapshot]:
        """``start`` and its first-parent ancestors, newest first.

        The walk ends at a root, or at a parent that was forgotten: that is
        the end of the recorded history, not damage.
        """
        snap: Snapshot | None = start
        while snap is not None:
            yield snap
            parent = snap.parent
            snap = self.load_snapshot(parent) if parent and self.is_recorded(parent) else None

    def resolve(self, spec: str) -> Snapshot:
        """HEAD, a branch, a tag, an id or unique prefix, each optionally with ~N."""
        base, tildes = _ANCESTRY.match(spec.strip()).groups()
        steps = sum(int(t) if t else 1 for t in tildes.split("~")[1:]) if tildes else 0
        snap = self._resolve_base(base or "HEAD", spec)
        for _ in range(steps):
            parent = snap.parent
            if parent is None or not self.is_recorded(parent):
                raise RefNotFound(spec)
            snap = self.load_snapshot(parent)
        return snap

    def _resolve_base(self, base: str, spec: str) -> Snapshot:
        if base == "HEAD":
            snap = self.branch_head(self.refs.head_branch())
            if snap is None:
                raise RefNotFound(f"HEAD (branch {self.refs.head_branch()} has no snapshots yet)")
            return snap
        for ref in (base, HEADS + base, TAGS + base):
            if ref.startswith("refs/"):
                oid = self.refs.get(ref)
                if oid is not None:
                    return self.load_snapshot(oid)
        text = base.lower()
        if MIN_PREFIX <= len(text) <= HEX_LENGTH and is_hex(text):
            matches = [o for o in self._recorded_ids() if o.hex.startswith(text)]
            if len(matches) == 1:
                return self.load_snapshot(matches[0])
        raise RefNotFound(spec)

    def entry_at(self, tree_id: ObjectId, path: bytes, snapshot: str = "") -> TreeEntry | None:
        """The entry at ``path`` (relative, '/'-separated) in a tree; None for the root."""
        parts = [p for p in path.split(b"/") if p and p != b"."]
        entry = None
        current = tree_id
        for i, part in enumerate(parts):
            entry = self.load_tree(current).get(part)
            if entry is None or (i < len(parts) - 1 and entry.kind != DIR):
                raise PathNotInSnapshot(os.fsdecode(path), snapshot)
            current = entry.oid
        return entry

    def walk(self, tree_id: ObjectId, prefix: bytes = b"") -> Iterator[tuple[bytes, TreeEntry]]:
        """Every entry below a tree, depth first, with its relative path."""
        for entry in self.load_tree(tree_id).entries:
            path = prefix + entry.name
            yield path, entry
            if entry.kind == DIR:
                yield from self.walk(entry.oid, path + b"/")

    # -- writing -------------------------------------------------------------

    def record(self, snapshot: Snapshot, writer: ObjectWriter, ref: str | None = None) -> Snapshot:
        """Store a snapshot, list it, and move its ref (by default its branch) to it."""
        data = snapshot.to_json()
        oid = writer.put_bytes(data)
        writer.flush()
        with atomic_output(self._record_path(oid), self.store.layout.tmp) as f:
            f.write(data)
        self.store.index.update(TABLE, put=[(oid.digest, data)])
        self.refs.set(ref or HEADS + snapshot.branch, oid)
        return Snapshot.from_json(data, oid)

    def forget(self, oid: ObjectId) -> None:
        remove_quietly(self._record_path(oid))
        fsync_dir(self._dir)
        self.store.index.update(TABLE, delete=[oid.digest])

    def reload_index(self) -> None:
        """Repopulate the snapshots and refs tables from the files."""
        self.store.index.clear(TABLE)
        items = []
        for oid in self._recorded_ids():
            data = self._read_record(oid)
            try:
                Snapshot.from_json(data, oid)
            except ManifestInvalid:
                continue  # left out of the cache; verify and gc report it from the file
            items.append((oid.digest, data))
        self.store.index.update(TABLE, put=items)
        self.refs.reload_index()
