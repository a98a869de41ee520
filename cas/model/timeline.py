"""The timeline: every recorded snapshot, by branch and time.

History commands (``log``, ``HEAD~N``, ``--at``, retention policies) ask
"the newest snapshots of this branch, older than that one". Reading every
``snapshots/<id>.json`` to answer costs seconds at 100,000 snapshots; this
table of the index answers from a few keys.

Each key is ``H(branch)[:8] || be64(time_ns + 2**63) || id`` (48 bytes), so
a branch's snapshots are one key range in time order; the value is the
branch name. Like every table of the index it is a cache of the files:
next to the entries, ``STAMP`` records the identity and modification time
of ``snapshots/`` as of the last time the two were known to agree. Writers
update entries and stamp in one transaction, under ``refs/lock``, and only
move the stamp forward if it still matched the directory before their own
change; anything else (a crash between file and index, a record copied in
by hand, an old store) leaves the stamp behind, and the next reader
resynchronises by listing the directory.
"""

from __future__ import annotations

import functools
import os
import struct
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from ..errors import CasError
from ..objectid import DIGEST_SIZE, HEX_LENGTH, ObjectId, hash_bytes, is_hex
from ..storage.store import Store

TABLE = b"timeline"
STAMP = b"stamp-v2"  # the layout of this table: another (older) one is resynchronised
_TIME = struct.Struct(">QQ")  # time_ns + 2**127, big-endian, 128 bits
_STAMP = struct.Struct(">QQqqq")
# Directory times move in clock ticks (a few ms): a change within the tick
# of a stamp leaves the times as they were. A stamp taken this long after
# the directory's last change cannot have missed one.
_SETTLED_NS = 200_000_000
# Filesystems that keep whole seconds (ext4 with 128-byte inodes, HFS+,
# FAT) move directory times once a second at most.
_SETTLED_WHOLE_SECONDS_NS = 2_000_000_000
_BRANCH_BYTES = 8
_KEY_LENGTH = _BRANCH_BYTES + _TIME.size + DIGEST_SIZE
_TIME_END = _BRANCH_BYTES + _TIME.size
_BIAS = 1 << 127
_TIME_MAX = (1 << 128) - 1


class TimelineEntry(NamedTuple):
    # A tuple, not a dataclass: listings build 100,000 of these at a time.
    oid: ObjectId
    time_ns: int
    branch: str


def branch_prefix(branch: str) -> bytes:
    # Snapshot.from_json admits only branch names that encode as UTF-8.
    return hash_bytes(branch.encode("utf-8")).digest[:_BRANCH_BYTES]


def entry_key(branch: str, time_ns: int, oid: ObjectId | None = None) -> bytes:
    """The key of a snapshot (or, without ``oid``, the bound below every
    snapshot of ``branch`` at ``time_ns``). 128 bits of time hold every
    date a record can carry (2**63 ns is only the year 2262); a crafted time
    beyond them is placed at the end."""
    biased = min(max(time_ns + _BIAS, 0), _TIME_MAX)
    return branch_prefix(branch) + _TIME.pack(biased >> 64, biased & ((1 << 64) - 1)) + \
        (oid.digest if oid else b"")


@functools.lru_cache(maxsize=64)
def _cached_prefix(branch: str) -> bytes:
    return branch_prefix(branch)


def _key(e: TimelineEntry) -> bytes:
    biased = min(max(e.time_ns + _BIAS, 0), _TIME_MAX)
    return _cached_prefix(e.branch) + biased.to_bytes(16, "big") + e.oid.digest


def _entry(key: bytes, value: bytes) -> TimelineEntry:
    return TimelineEntry(ObjectId(key[_TIME_END:]),
                         int.from_bytes(key[_BRANCH_BYTES:_TIME_END], "big") - _BIAS, value.decode("utf-8"))


def _dir_stamp(path: str) -> bytes | None:
    """The directory's identity and times, and when they were read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return _STAMP.pack(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, time.time_ns())


def _agrees(stored: bytes | None, current: bytes | None) -> bool:
    """Whether a stored stamp still describes the directory, for sure."""
    if stored is None or current is None or len(stored) != _STAMP.size:
        return False
    old, now = _STAMP.unpack(stored), _STAMP.unpack(current)
    whole_seconds = old[2] % 10**9 == 0 and old[3] % 10**9 == 0
    settle = _SETTLED_WHOLE_SECONDS_NS if whole_seconds else _SETTLED_NS
    return old[:4] == now[:4] and old[4] - max(old[2], old[3]) >= settle


class Timeline:
    """The index table of recorded snapshots, kept in step with ``snapshots/``."""

    def __init__(self, store: Store, directory: str,
                 read_entry: Callable[[ObjectId], TimelineEntry]):
        self._index = store.index
        self._dir = directory
        # Records are named by their ids, or in an encrypted store by their
        # names (docs/FORMAT.md §18.3), which the sealer turns back into ids.
        self._unname = store.sealer.unname
        self._read_entry = read_entry  # a record's branch and time, hash-checked
        self._memory: list[tuple[bytes, bytes]] | None = None  # a read-only store's copy

    # -- reading -----------------------------------------------------------

    def newest(self, branch: str, limit: int | None = None,
               before: bytes | None = None) -> list[TimelineEntry]:
        """The branch's snapshots with keys below ``before``, newest first."""
        self.ensure_fresh()
        prefix = branch_prefix(branch)
        if self._memory is not None:
            rows = [(k, v) for k, v in reversed(self._memory)
                    if k.startswith(prefix) and (before is None or k < before)]
            rows = rows[:limit] if limit is not None else rows
        else:
            rows = self._index.scan_newest(TABLE, prefix, limit, before)
        # Eight bytes of hash can collide; the stored name settles it. One
        # comprehension, no per-entry calls: 100,000 entries in ~0.1 s.
        name, bias, number = branch.encode("utf-8"), _BIAS, int.from_bytes
        return [TimelineEntry(ObjectId(k[_TIME_END:]), number(k[_BRANCH_BYTES:_TIME_END], "big") - bias, branch)
                for k, v in rows if v == name and len(k) == _KEY_LENGTH]

    def oldest(self, branch: str) -> TimelineEntry | None:
        """The branch's oldest snapshot."""
        self.ensure_fresh()
        prefix = branch_prefix(branch)
        if self._memory is not None:
            rows = [(k, v) for k, v in self._memory if k.startswith(prefix)]
        else:
            rows = self._index.scan_oldest(TABLE, prefix, 16)
        return next((e for e in (_entry(k, v) for k, v in rows) if e.branch == branch), None)

    def everything(self) -> list[TimelineEntry]:
        """Every recorded snapshot, grouped by branch, each group oldest first."""
        self.ensure_fresh()
        rows = self._memory if self._memory is not None else self._index.scan(TABLE)
        return [_entry(k, v) for k, v in rows if len(k) == _KEY_LENGTH]

    # -- keeping in step -----------------------------------------------------

    def ensure_fresh(self) -> None:
        if self._memory is not None:
            return
        stored, current = self._index.get(TABLE, STAMP), _dir_stamp(self._dir)
        if _agrees(stored, current) or self._counts_agree(stored, current):
            return
        self.resync()

    def _counts_agree(self, stored: bytes | None, current: bytes | None) -> bool:
        """For a stamp taken too soon after a change to be trusted alone
        (each writer's own): the times still match and the directory holds
        as many records as the table. A record left by a crashed writer in
        the same clock tick changes the count; the full comparison is only
        needed then. A listing of 100,000 names costs ~30 ms, the full
        comparison several times that."""
        if stored is None or current is None or len(stored) != _STAMP.size or \
                _STAMP.unpack(stored)[:4] != _STAMP.unpack(current)[:4]:
            return False
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return False
        records = sum(1 for n in names if len(n) == HEX_LENGTH + 5 and n.endswith(".json"))
        return records == self._index.count(TABLE) - 1  # the stamp is a key too

    def resync(self) -> None:
        """Make the table list exactly the records in ``snapshots/``."""
        stamp = _dir_stamp(self._dir)
        on_disk = set(_listed_ids(self._dir, self._unname))
        rows = self._index.scan(TABLE)
        indexed = {k[-DIGEST_SIZE:]: k for k, _ in rows if len(k) == _KEY_LENGTH}
        stale = [k for d, k in indexed.items() if d not in on_disk]
        stale += [k for k, _ in rows if len(k) != _KEY_LENGTH and k != STAMP]
        added = []
        for digest in on_disk - indexed.keys():
            try:
                e = self._read_entry(ObjectId(digest))
            except CasError:
                continue  # a damaged record: verify reports it; it lists nothing
            added.append((entry_key(e.branch, e.time_ns, e.oid), e.branch.encode("utf-8")))
        put = added + ([(STAMP, stamp)] if stamp is not None else [])
        if self._index.read_only:
            kept = [(k, v) for k, v in self._index.scan(TABLE) if len(k) == _KEY_LENGTH and k not in stale]
            self._memory = sorted(kept + added)
            return
        self._index.update(TABLE, put=put, delete=stale + ([] if stamp else [STAMP]))

    def change(self, before_stamp: bytes | None, add: Iterable[TimelineEntry] = (),
               remove: Iterable[TimelineEntry] = (), also: dict | None = None) -> None:
        """Record added and removed snapshots; the caller holds ``refs/lock``
        and took ``before_stamp`` (``stamp()``) before changing the files.
        ``also`` ({table: (put, delete)}) commits in the same transaction:
        one commit per recorded snapshot, not one per table."""
        put = [(_key(e), e.branch.encode("utf-8")) for e in add]
        delete = [_key(e) for e in remove]
        if self._memory is not None:
            return
        stored = self._index.get(TABLE, STAMP)
        now = _dir_stamp(self._dir)
        if stored is not None and before_stamp is not None and now is not None and \
                _STAMP.unpack(stored)[:4] == _STAMP.unpack(before_stamp)[:4]:
            # Only our change happened since the table was in step; the new
            # stamp is not settled yet, so the next reader checks once.
            put.append((STAMP, now))
        self._index.update_tables({**(also or {}), TABLE: (put, delete)})

    def stamp(self) -> bytes | None:
        return _dir_stamp(self._dir)

    def clear(self) -> None:
        self._index.clear(TABLE)


def _listed_ids(directory: str, unname: Callable[[ObjectId], ObjectId]) -> list[bytes]:
    """The ids of the records in ``snapshots/``, from their file names."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [unname(ObjectId(bytes.fromhex(n[:-5]))).digest for n in names
            if n.endswith(".json") and len(n) == HEX_LENGTH + 5 and is_hex(n[:-5])]
