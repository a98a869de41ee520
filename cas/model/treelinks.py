"""What each tree names, kept in the index so walks need not parse it again.

gc marks and quick verify check everything every recorded snapshot
reaches. A watcher's history has new trees in nearly every snapshot, and
parsing and checking each tree's JSON (every entry's name, mode, time and
id) was most of their cost: about 0.4 ms a tree. They only need, for each
entry that names an object, its kind, id and size. The ``treelinks`` table
keeps exactly that per tree, written when a snapshot stores the tree and
filled in by the first walk that parses an older one.

Value: for each directory or file entry, in tree order, one byte of kind
(1 directory, 2 file), the 32-byte id and the size as a big-endian u64;
then 16 bytes of BLAKE3 over ``treelinks``, the tree id and those records.
A value that does not check is ignored and recomputed from the tree, so a
damaged record costs a parse, never a wrong answer. Like the rest of the
index it is a cache: a rebuilt index starts without it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ..objectid import ObjectId, hash_bytes
from ..storage.store import Store
from .tree import DIR, FILE, Tree

TABLE = b"treelinks"
LINK_DIR, LINK_FILE = 1, 2
_RECORD = struct.Struct(">B32sQ")
_CHECK = 16
_SIZE_MAX = (1 << 64) - 1
_KINDS = {DIR: LINK_DIR, FILE: LINK_FILE}
# Pending records written in one transaction at a time.
_BATCH = 4096

Link = tuple[int, bytes, int]   # (LINK_DIR or LINK_FILE, digest, size)


def _check(digest: bytes, body: bytes) -> bytes:
    return hash_bytes(TABLE + digest + body).digest[:_CHECK]


def encode(oid: ObjectId, tree: Tree) -> bytes:
    # A crafted tree may claim a size past 64 bits: no content has it, so the
    # largest u64 keeps it a mismatch that verify reports from the tree.
    body = b"".join(_RECORD.pack(_KINDS[e.kind], e.oid.digest, min(e.size, _SIZE_MAX))  # type: ignore[union-attr]
                    for e in tree.entries if e.kind in _KINDS)   # files and directories: oid is set
    return body + _check(oid.digest, body)


def decode(oid: ObjectId, value: bytes) -> list[Link] | None:
    body, check = value[:-_CHECK], value[-_CHECK:]
    if len(value) < _CHECK or len(body) % _RECORD.size or check != _check(oid.digest, body):
        return None
    return list(_RECORD.iter_unpack(body))


class TreeLinks:
    """Links of trees by id: from the index when it has them, else parsed
    (by ``load_tree``) and queued for the index; ``flush`` writes the queue."""

    def __init__(self, store: Store, load_tree: Callable[[ObjectId], Tree]):
        self._store = store
        self._load_tree = load_tree
        self._pending: list[tuple[bytes, bytes]] = []

    def get(self, oid: ObjectId) -> list[Link]:
        value = self._store.index.get(TABLE, oid.digest)
        links = decode(oid, value) if value is not None else None
        if links is None:
            value = encode(oid, self._load_tree(oid))
            links = decode(oid, value)
            assert links is not None   # what encode wrote decodes
            self._pending.append((oid.digest, value))
            if len(self._pending) >= _BATCH:
                self.flush()
        return links

    def flush(self) -> None:
        """Write what was parsed; a store that cannot be written keeps none."""
        pending, self._pending = self._pending, []
        if pending and not self._store.read_only:
            self._store.index.update(TABLE, put=pending)


def records_for(trees: dict[ObjectId, Tree]) -> list[tuple[bytes, bytes]]:
    """The table records of trees a snapshot has just stored."""
    return [(oid.digest, encode(oid, tree)) for oid, tree in trees.items()]
