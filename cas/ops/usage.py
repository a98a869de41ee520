"""Where the bytes are: store totals, what a snapshot added, per-directory usage.

``unique`` bytes of a snapshot (or a directory in it) are the stored bytes
of objects that no other recorded snapshot reaches: what forgetting that
snapshot and running gc would free.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field

from ..model.history import History
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE
from ..model.treelinks import LINK_DIR
from ..objectid import ObjectId
from ..storage.encoding import Encoding
from ..storage.index import IndexEntry


@dataclass
class DirUsage:
    path: bytes
    files: int = 0
    logical_bytes: int = 0
    unique_bytes: int = 0
    children: list[DirUsage] = field(default_factory=list)


def logical_bytes(history: History) -> int:
    """Bytes of all files of all recorded snapshots, as if stored without dedup."""
    return sum(s.stats.get("bytes", 0) for s in history.snapshots())


def disk_usage(history: History, snapshot: Snapshot, path: bytes = b"") -> DirUsage:
    snap_id = snapshot.oid
    assert snap_id is not None, "a snapshot read from the store has its id"
    reach, walker = Reach(), ReachWalker(history)
    for snap in history.snapshots():
        if snap.oid != snap_id:
            walker.add(reach, snap)
    # Digests reached by every other snapshot are not this one's alone.
    usage = _UniqueBytes(history, reach.all())
    entry = history.entry_at(snapshot.tree, path, snap_id.short)
    if entry is None:
        result = usage.walk(snapshot.tree, b"")
        result.unique_bytes += usage.unique([snap_id])
        return result
    if entry.oid is None:
        return DirUsage(path, 1, entry.size, 0)
    if entry.kind == DIR:
        return usage.walk(entry.oid, path)
    return DirUsage(path, 1, entry.size, usage.unique(usage.objects_of(entry.oid)))


class _UniqueBytes:
    """Stored bytes of objects no other snapshot reaches, each counted once."""

    def __init__(self, history: History, others: set[bytes]):
        self.history = history
        self.others = others
        self.counted: set[ObjectId] = set()

    def objects_of(self, oid: ObjectId) -> list[ObjectId]:
        """The object and, for a chunked file, its chunks."""
        content = self.history.store.content(oid)
        return [oid] + (content.chunk_ids if content is not None else [])

    def unique(self, oids: list[ObjectId]) -> int:
        total = 0
        lookup = self.history.store.index.lookup
        for oid in oids:
            if oid.digest in self.others or oid in self.counted:
                continue
            self.counted.add(oid)
            entry = lookup(oid)
            total += entry.stored_length if entry else 0
        return total

    def walk(self, tree_id: ObjectId, rel: bytes) -> DirUsage:
        # Post-order with an explicit stack: a crafted chain of thousands of
        # nested trees must not end in RecursionError.
        load = self.history.load_tree
        top = DirUsage(rel, unique_bytes=self.unique([tree_id]))
        stack = [(top, iter(load(tree_id).entries))]
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
            elif entry.oid is None:
                continue   # a symbolic link: no content object
            elif entry.kind == DIR:
                path = usage.path + b"/" + entry.name if usage.path else entry.name
                child = DirUsage(path, unique_bytes=self.unique([entry.oid]))
                usage.children.append(child)
                stack.append((child, iter(load(entry.oid).entries)))
            elif entry.kind == FILE:
                usage.files += 1
                usage.logical_bytes += entry.size
                usage.unique_bytes += self.unique(self.objects_of(entry.oid))
        return top


# -- store totals ----------------------------------------------------------------

VIEWS = "views"              # model views under the store (see ops/models.py)


@dataclass
class Reach:
    """The objects some snapshots reach, by digest, split by what they hold:
    ``content`` (file objects and chunks: the files' bytes) and ``metadata``
    (snapshot records, model manifests, trees, chunk lists)."""
    content: set[bytes] = field(default_factory=set)
    metadata: set[bytes] = field(default_factory=set)
    logical_bytes: int = 0       # every file of every snapshot walked, counted whole

    def all(self) -> set[bytes]:
        return self.content | self.metadata


class ReachWalker:
    """Walks snapshots into a Reach, each tree once however many snapshots
    share it (the tree links in the index make most trees a lookup)."""

    def __init__(self, history: History):
        self.history = history
        self._tree_bytes: dict[bytes, int] = {}   # a tree's files, counted whole

    def add(self, reach: Reach, snap: Snapshot) -> None:
        assert snap.oid is not None, "a snapshot read from the store has its id"
        reach.metadata.add(snap.oid.digest)
        if snap.model is not None:
            reach.metadata.add(snap.model.digest)
        reach.logical_bytes += self._walk(reach, snap.tree)

    def _walk(self, reach: Reach, tree_id: ObjectId) -> int:
        """Mark everything below the tree; returns its files' bytes. Post-order
        with an explicit stack: a crafted chain of thousands of nested trees
        must not end in RecursionError; a tree met again is not walked again,
        and one that contains itself (crafted) counts once."""
        known, links = self._tree_bytes, self.history.tree_links
        stack: list[tuple[bytes, tuple[int, list[bytes]] | None]] = [(tree_id.digest, None)]
        on_path: set[bytes] = set()
        while stack:
            digest, walked = stack[-1]
            if walked is None:
                if digest in known or digest in on_path:
                    stack.pop()
                    continue
                on_path.add(digest)
                reach.metadata.add(digest)
                own, subtrees = 0, []
                for kind, child, size in links.get(ObjectId(digest)):
                    if kind == LINK_DIR:
                        subtrees.append(child)
                    else:
                        own += size
                        self._mark_file(reach, child)
                stack[-1] = (digest, (own, subtrees))
                stack.extend((s, None) for s in subtrees)
            else:
                stack.pop()
                on_path.discard(digest)
                own, subtrees = walked
                known[digest] = own + sum(known.get(s, 0) for s in subtrees)
        return known.get(tree_id.digest, 0)

    def _mark_file(self, reach: Reach, digest: bytes) -> None:
        if digest in reach.content:
            return
        content = self.history.store.content(ObjectId(digest))
        if content is not None and content.chunked:
            reach.metadata.add(digest)          # the chunk list
            reach.content.update(c.digest for c in content.chunk_ids)
        else:
            reach.content.add(digest)


@dataclass(frozen=True)
class StoreUsage:
    """The store's figures, as ``cas stats`` prints them (see FIGURES)."""
    objects: int
    loose_objects: int
    packed_objects: int
    packs: int
    compressed_objects: int
    chunked_files: int
    snapshot_bytes: int
    content_bytes: int
    unreferenced_bytes: int
    metadata_bytes: int
    content_stored: int
    metadata_stored: int
    unreferenced_stored: int
    pack_overhead: int
    view_bytes: int

    @property
    def unique_bytes(self) -> int:
        return self.content_bytes + self.unreferenced_bytes

    @property
    def stored_bytes(self) -> int:
        return self.content_stored + self.metadata_stored + self.unreferenced_stored \
            + self.pack_overhead

    @property
    def dedup_ratio(self) -> float | None:
        return self.snapshot_bytes / self.content_bytes if self.content_bytes else None

    @property
    def compression_ratio(self) -> float | None:
        data = self.content_stored + self.unreferenced_stored
        return data / self.unique_bytes if self.unique_bytes else None

    def to_doc(self) -> dict:
        """Every figure, as ``cas stats --json`` prints it."""
        doc = dataclasses.asdict(self)
        doc.update(unique_bytes=self.unique_bytes, stored_bytes=self.stored_bytes,
                   disk_bytes=self.stored_bytes + self.view_bytes,
                   dedup_ratio=_rounded(self.dedup_ratio),
                   compression_ratio=_rounded(self.compression_ratio))
        return doc


def _rounded(ratio: float | None) -> float | None:
    return round(ratio, 4) if ratio is not None else None


# What each figure means; `cas stats --help` prints this.
FIGURES = """\
snapshot bytes   every file of every recorded snapshot (model versions
                 included), counted whole in each snapshot that holds it
content bytes    the files' content that recorded snapshots reach, each
                 distinct object or chunk once, uncompressed (at most
                 snapshot bytes)
unreferenced     bytes of objects no recorded snapshot reaches ('cas add',
                 snapshots forgotten since the last gc): what 'cas gc' frees
unique bytes     content bytes + unreferenced
metadata         trees, snapshot records, model manifests and chunk lists,
                 uncompressed
stored bytes     on disk in objects/ and packs/: stored content + stored
                 metadata + stored unreferenced + pack headers
views            files written out under views/ for 'cas model path' (models
                 stored chunked or compressed; links into the store count 0)
dedup            snapshot bytes / content bytes
compression      stored content and unreferenced / unique bytes"""


def store_usage(history: History) -> StoreUsage:
    """The store's figures, from one walk of every recorded snapshot and one
    pass over the index."""
    store = history.store
    reach = Reach()
    walker = ReachWalker(history)
    for snap in history.snapshots():
        walker.add(reach, snap)
    history.tree_links.flush()
    t = _Tally()
    for e in store.index.entries():
        t.count(e, reach)
    packed = sum(p.file_size for p in store.index.packs())
    return StoreUsage(
        t.objects, t.objects - t.packed_objects, t.packed_objects, len(store.index.packs()),
        t.compressed, t.chunked, reach.logical_bytes, t.content, t.unreferenced, t.metadata,
        t.content_stored, t.metadata_stored, t.unreferenced_stored,
        max(packed - t.packed_stored, 0), view_bytes(store.path))


@dataclass
class _Tally:
    objects: int = 0
    packed_objects: int = 0
    packed_stored: int = 0
    compressed: int = 0
    chunked: int = 0
    content: int = 0
    unreferenced: int = 0
    metadata: int = 0
    content_stored: int = 0
    metadata_stored: int = 0
    unreferenced_stored: int = 0

    def count(self, e: IndexEntry, reach: Reach) -> None:
        self.objects += 1
        chunked = e.chunked
        self.chunked += chunked
        self.compressed += e.encoding.inner is Encoding.ZSTD
        if e.pack is not None:
            self.packed_objects += 1
            self.packed_stored += e.stored_length
        digest = e.oid.digest
        # A chunked object's content is its chunks; the object itself is its
        # chunk list, so its size is the list's (stored_length, as stored raw).
        size = e.stored_length if chunked else e.size
        if digest in reach.content and not chunked:
            self.content += size
            self.content_stored += e.stored_length
        elif digest in reach.metadata or digest in reach.content:
            self.metadata += size
            self.metadata_stored += e.stored_length
        else:
            self.unreferenced += 0 if chunked else size
            self.unreferenced_stored += e.stored_length


def view_bytes(store_path: str) -> int:
    """Bytes of the regular files under the store's views/ (links count 0),
    walked without following links and without recursion."""
    try:
        top = os.open(os.path.join(store_path, VIEWS), _DIR_FLAGS)
    except OSError:
        return 0
    total, pending = 0, [""]
    try:
        while pending:
            rel = pending.pop()
            try:
                fd = os.open(rel or ".", _DIR_FLAGS, dir_fd=top)
            except OSError:
                continue    # changed meanwhile, or a path too long: not counted
            try:
                with os.scandir(fd) as listing:
                    for d in listing:
                        st = d.stat(follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode):
                            pending.append(f"{rel}/{d.name}" if rel else d.name)
                        elif stat.S_ISREG(st.st_mode):
                            total += st.st_size
            finally:
                os.close(fd)
    finally:
        os.close(top)
    return total


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
