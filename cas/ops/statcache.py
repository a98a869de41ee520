"""The stat cache: file ids remembered by stat, as git's index remembers them.

It lives in the index's ``statcache`` table, one record per file, keyed by
branch and path (``branch NUL path``). A record holds the file's size,
mtime, ctime and inode, and the id its content had then; a file whose stat
still matches all four keeps that id without being read.

A record is only written if the file's mtime was at least ``RACY_NS`` older
than the scan that read it: a file written in the same clock tick as its
scan could change again without changing its mtime. The table is a cache:
a record that does not parse is ignored, and losing all of them only costs
a full read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

from ..objectid import ObjectId
from ..storage.index import Index

STAT_TABLE = b"statcache"
RACY_NS = 2_000_000_000
# size, mtime_ns, ctime_ns, inode, digest
_RECORD = struct.Struct("<QqqQ32s")


def cache_prefix(branch: str) -> bytes:
    """The key prefix of one branch's records."""
    return branch.encode() + b"\0"


def stat_record(st: os.stat_result, oid: ObjectId) -> bytes:
    return _RECORD.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, oid.digest)


def cached_oid(record: bytes | None, st: os.stat_result) -> ObjectId | None:
    """The id a record gives for a file with stat ``st``, if it describes that very stat."""
    if record is None or len(record) != _RECORD.size:
        return None   # none, or not a record this version wrote: read the file again
    size, mtime, ctime, ino, digest = _RECORD.unpack(record)
    if (size, mtime, ctime, ino) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
        return ObjectId(digest)
    return None


def record_oid(record: bytes) -> ObjectId | None:
    """The content id a record names (for gc dropping records of removed objects)."""
    return ObjectId(record[-32:]) if len(record) == _RECORD.size else None


class StatCache:
    """One branch's stat cache as one scan reads it and collects its changes.

    ``preload`` reads all of the branch's records at once (a full scan looks
    at every file); without it each file is looked up on its own (a
    targeted scan looks at a few). Nothing is written here: ``changes()``
    gives the records to put and the keys to delete, which the snapshot
    writes once the contents they name are durable.
    """

    def __init__(self, index: Index, branch: str, started_ns: int, preload: bool = True):
        self.index, self.prefix = index, cache_prefix(branch)
        # Files whose mtime is this recent may still change within the same tick.
        self.trusted_before = started_ns - RACY_NS
        self.loaded: dict[bytes, bytes] | None = None
        if preload:
            cut = len(self.prefix)
            self.loaded = {k[cut:]: v for k, v in index.scan(STAT_TABLE, self.prefix)}
        self.seen: set[bytes] = set()
        self.updates: dict[bytes, bytes] = {}

    def lookup(self, rel: bytes, st: os.stat_result) -> ObjectId | None:
        """The recorded id of file ``rel`` if its stat is unchanged; marks it as still there."""
        self.seen.add(rel)
        if self.loaded is not None:
            record = self.loaded.get(rel)
        else:
            record = self.index.get(STAT_TABLE, self.prefix + rel)
        return cached_oid(record, st)

    def record(self, rel: bytes, st: os.stat_result, oid: ObjectId) -> None:
        """Remember the id just read for ``rel``, unless its mtime is too recent to trust."""
        if st.st_mtime_ns < self.trusted_before:
            self.updates[rel] = stat_record(st, oid)

    def changes(self, candidates: Iterable[bytes] | None = None
                ) -> tuple[dict[bytes, bytes], list[bytes]]:
        """(records to put, keys to delete), as full keys.

        A record is deleted when its path was not looked up in this scan;
        only ``candidates`` are considered, by default every preloaded path.
        """
        if candidates is None:
            candidates = self.loaded or ()
        prefix, seen = self.prefix, self.seen
        deletes = [prefix + rel for rel in candidates if rel not in seen]
        return {prefix + rel: v for rel, v in self.updates.items()}, deletes
