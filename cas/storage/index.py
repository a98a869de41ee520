"""The LMDB index: where each object lives, and later snapshot/ref tables.

This is the only module that imports ``lmdb``. The index is a cache of what
is on disk: every entry can be recomputed from the loose object files and
the pack trailers (``cas index rebuild``). Writers are serialized by LMDB;
readers never block.

Named databases:

``objects``  32-byte id -> 64-byte record (see ``_OBJECT``)
``packs``    32-byte pack id -> u64 file size, u64 entry count
``meta``     ascii key -> value: ``format``, ``store_id``
``refs``, ``snapshots``, ``statcache``  reserved for history (created empty)
``verified``                         model files checked, by the stat of their object files
``longkeys`` keys LMDB cannot hold (over ``max_key_size()``, or empty) of the tables above

LMDB keys are at most 511 bytes, and a stat cache key (branch, NUL, path) can
be 4 KiB. ``get``, ``update`` and ``scan`` take keys of any length: a key
LMDB cannot hold is kept in ``longkeys`` under ``table NUL head digest`` (its
first bytes, for ordered prefix scans, then the BLAKE3 of the whole key),
with the whole key in the value. Callers never see the difference.

An encrypted store's index is a ``SealedIndex`` (docs/FORMAT.md §18.12):
objects are keyed by their names; snapshots, treelinks, verified, statcache
and timeline by names and keyed hashes, their values sealed together with
the caller's key. Callers still see plain ids, keys and values.
"""

from __future__ import annotations

import functools
import hmac
import inspect
import os
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import lmdb

from ..durable import fsync_dir, make_dir, open_temp, remove_quietly
from ..errors import IndexUnavailable, StoreFileInvalid, StoreWriteError
from ..objectid import DIGEST_SIZE, ObjectId, hash_bytes
from .crypto import PLAIN, PlainSealer, Sealer, SealError
from .encoding import Encoding
from .layout import PRIVATE, StoreModes

INDEX_FORMAT = b"1"
DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
LONG_KEYS = b"longkeys"
COMPACT_PREFIX = "compact"
# (An LMDB "refs" database of older stores mirrored refs/ and was never read.)
TABLES = (b"objects", b"packs", b"meta", b"snapshots", b"timeline", b"treelinks", b"statcache",
          b"verified",
          LONG_KEYS)
_KEY_LENGTH = struct.Struct("<I")
# Virtual address space only: LMDB grows the file as pages are used.
MAP_SIZE = 1 << 40

LOOSE = 0
PACKED = 1
_OBJECT = struct.Struct("<BB6x32sQQQ")
_OBJECT_TAG = 16   # the MAC an encrypted store's objects record ends with
_PACK = struct.Struct("<QQ")
_NO_PACK = bytes(32)
_ENCODINGS = {e.value: e for e in Encoding}


@dataclass(frozen=True, slots=True)
class IndexEntry:
    oid: ObjectId
    encoding: Encoding
    size: int
    stored_length: int
    pack: ObjectId | None = None  # None: a loose object file
    offset: int = 0

    @property
    def chunked(self) -> bool:
        """Stored as a chunk list: the content is its chunks (``Store.content``)."""
        return self.encoding.inner is Encoding.CHUNKED

    def to_record(self) -> bytes:
        return _OBJECT.pack(
            PACKED if self.pack else LOOSE,
            self.encoding,
            self.pack.digest if self.pack else _NO_PACK,
            self.offset,
            self.stored_length,
            self.size,
        )

    @classmethod
    def from_record(cls, key: bytes, record: bytes,
                    packs: dict[bytes, ObjectId] | None = None) -> IndexEntry:
        """``packs``, when given, shares one pack id among the entries of a
        listing: a million entries would otherwise carry a million copies."""
        location, enc, pack, offset, stored_length, size = _OBJECT.unpack(record)
        pack_id = None
        if location == PACKED:
            pack_id = packs.get(pack) if packs is not None else None
            if pack_id is None:
                pack_id = ObjectId(bytes(pack))
                if packs is not None:
                    packs[pack_id.digest] = pack_id
        encoding = _ENCODINGS.get(enc)
        if encoding is None:
            encoding = Encoding(enc)  # raises ValueError: a damaged record
        return cls(ObjectId(bytes(key)), encoding, size, stored_length, pack_id, offset)


@dataclass(frozen=True, slots=True)
class PackRecord:
    pack: ObjectId
    file_size: int
    entry_count: int


# LMDB errors that mean the files are not a sound LMDB environment.
_DAMAGE = (lmdb.CorruptedError, lmdb.InvalidError, lmdb.PageNotFoundError,
           lmdb.VersionMismatchError)


def _translate(index: Index, e: Exception, writing: bool) -> Exception:
    if isinstance(e, (*_DAMAGE, struct.error, ValueError)):
        return IndexUnavailable(index.path, f"damaged ({e})")
    if writing or isinstance(e, lmdb.ReadonlyError):
        # A full disk (ENOSPC, often reported as an I/O error at commit), a
        # full map, a read-only store: a write failed; the index is sound.
        return StoreWriteError(index.path, str(e) or type(e).__name__)
    return IndexUnavailable(index.path, f"unreadable ({e})")


def _guarded(method=None, *, writing: bool = False):
    """Turn LMDB failures into one actionable error: damage of the index, or a
    write that failed. Never a key-size error: long keys are handled above."""
    if method is None:
        return functools.partial(_guarded, writing=writing)
    caught = (lmdb.Error, struct.error, ValueError)

    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def generator(self, *args, **kwargs):
            try:
                yield from method(self, *args, **kwargs)
            except caught as e:
                raise _translate(self, e, writing) from None
        return generator

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except caught as e:
            raise _translate(self, e, writing) from None

    return wrapper


def _cover_last_page(env: lmdb.Environment, path: str, read_only: bool) -> None:
    """Make sure the data file reaches the last page LMDB may map.

    A page past the end of a mapped file kills the process with SIGBUS
    instead of raising an error. A healthy file can legitimately end short
    of ``last_pgno`` (pages allocated and freed in one transaction are never
    written), so the file is extended with zeros up to it, as LMDB itself
    would: a truncated file's missing pages then read as zeros, which LMDB
    reports as damage. A read-only store is left as it is.
    """
    data = os.path.join(path, "data.mdb")
    try:
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if read_only or os.stat(data).st_size >= needed:
            return
        fd = os.open(data, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size < needed:
                os.ftruncate(fd, needed)
        finally:
            os.close(fd)
    except OSError:
        pass  # not ours to extend (permissions): read as it is
    except lmdb.Error:
        env.close()
        raise


class Index:
    def __init__(self, env: lmdb.Environment, path: str, read_only: bool = False,
                 sealer: Sealer | PlainSealer = PLAIN):
        self._env = env
        # Names object keys and seals values in an encrypted store (FORMAT §18.12).
        self.sealer = sealer
        self.path = path
        self.read_only = read_only
        # A read-only index cannot create a table an older cas did not make;
        # a missing one reads as empty (None).
        self._db = {name: _open_table(env, name, read_only) for name in TABLES}
        self._max_key = env.max_key_size()

    @classmethod
    def create(cls, path: str, store_id: str, modes: StoreModes = PRIVATE,
               sealer: Sealer | PlainSealer = PLAIN) -> Index:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        make_dir(path, modes.directory)
        index = _kind(cls, sealer)(cls._open_env(path, modes), path, sealer=sealer)
        with index._env.begin(write=True) as txn:
            txn.put(b"format", INDEX_FORMAT, db=index._db[b"meta"])
            txn.put(b"store_id", store_id.encode(), db=index._db[b"meta"])
        for name in (DATA_FILE, LOCK_FILE):
            # LMDB creates its files with the umask applied.
            os.chmod(os.path.join(path, name), modes.file)
        return index

    @classmethod
    def open(cls, path: str, store_id: str, modes: StoreModes = PRIVATE,
             sealer: Sealer | PlainSealer = PLAIN) -> Index:
        _check_files(path)
        read_only = not _writable(path)
        try:
            env = cls._open_env(path, modes, read_only)
            _cover_last_page(env, path, read_only)
            index = _kind(cls, sealer)(env, path, read_only, sealer)
            with index._env.begin() as txn:
                fmt = txn.get(b"format", db=index._db[b"meta"])
                owner = txn.get(b"store_id", db=index._db[b"meta"])
        except lmdb.Error as e:
            # Damage only when LMDB says so: a full disk or a permission is not.
            why = "damaged" if isinstance(e, _DAMAGE) else "unreadable"
            raise IndexUnavailable(path, f"{why} ({e})") from None
        if fmt != INDEX_FORMAT or owner != store_id.encode():
            index.close()
            raise IndexUnavailable(path, "not this store's index, or of an unknown format")
        return index

    @staticmethod
    def _open_env(path: str, modes: StoreModes, read_only: bool = False) -> lmdb.Environment:
        # A read-only store (a read-only mount, no write permission) is read
        # without LMDB's reader table when its lock file cannot be written.
        lock = not read_only or _writable(os.path.join(path, LOCK_FILE))
        return lmdb.open(
            path, map_size=MAP_SIZE, max_dbs=len(TABLES) + 4, subdir=True,
            readahead=False, metasync=True, sync=True, mode=modes.file,
            readonly=read_only, lock=lock, create=not read_only,
        )

    def close(self) -> None:
        self._env.close()

    @_guarded(writing=True)
    def compact(self) -> tuple[int, int]:
        """Rewrite the data file without its free pages; (bytes before, after).

        LMDB files never shrink: pages freed by gc and forget are reused,
        never returned. Call only with the store's exclusive lock (no other
        process may have the environment open). The copy is written to a
        temp file beside ``data.mdb``, fsynced, then renamed over it: a crash
        at any moment leaves one whole index in place, the old or the new.
        """
        data = os.path.join(self.path, DATA_FILE)
        before = os.stat(data).st_size
        if self.read_only:
            raise StoreWriteError(self.path, "read-only: the index cannot be compacted")
        _remove_stale_copies(self.path)
        temp, fd = open_temp(self.path, COMPACT_PREFIX, stat.S_IMODE(os.stat(data).st_mode))
        try:
            self._env.copyfd(fd, compact=True)
            os.fsync(fd)
            after = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            remove_quietly(temp)
            raise
        os.close(fd)
        self._env.close()
        try:
            os.rename(temp, data)
            fsync_dir(self.path)
        finally:
            self._reopen()
        return before, after

    def size(self) -> int:
        """Bytes of the data file."""
        return os.stat(os.path.join(self.path, DATA_FILE)).st_size

    def _reopen(self) -> None:
        self._env = lmdb.open(self.path, map_size=MAP_SIZE, max_dbs=len(TABLES) + 4, subdir=True,
                              readahead=False, metasync=True, sync=True, create=False)
        self._db = {name: _open_table(self._env, name, False) for name in TABLES}

    @_guarded
    def lookup(self, oid: ObjectId) -> IndexEntry | None:
        with self._env.begin(db=self._db[b"objects"]) as txn:
            record = txn.get(oid.digest)
        return None if record is None else IndexEntry.from_record(oid.digest, record)

    @_guarded
    def contains(self, oid: ObjectId) -> bool:
        """Whether ``oid`` is indexed, without decoding its record (a check per
        snapshot of a large history)."""
        with self._env.begin(db=self._db[b"objects"], buffers=True) as txn:
            return txn.get(oid.digest) is not None

    @_guarded
    def match_prefix(self, prefix: str, limit: int = 2) -> list[ObjectId]:
        """Ids whose hex starts with ``prefix`` (at most ``limit`` of them)."""
        start = bytes.fromhex(prefix[: len(prefix) // 2 * 2])
        if len(prefix) % 2:
            start += bytes([int(prefix[-1], 16) << 4])
        found: list[ObjectId] = []
        with self._env.begin(db=self._db[b"objects"]) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(start):
                return found
            for key in cursor.iternext(keys=True, values=False):
                if not bytes(key).hex().startswith(prefix):
                    break
                found.append(ObjectId(bytes(key)))
                if len(found) >= limit:
                    break
        return found

    @_guarded(writing=True)
    def record(self, entries: Iterable[IndexEntry], packs: Iterable[PackRecord] = ()) -> None:
        """Add entries in one transaction; call only once their bytes are durable."""
        with self._write() as txn:
            objects = self._db[b"objects"]
            for entry in entries:
                txn.put(entry.oid.digest, entry.to_record(), db=objects)
            for pack in packs:
                txn.put(pack.pack.digest, _PACK.pack(pack.file_size, pack.entry_count),
                        db=self._db[b"packs"])

    @_guarded(writing=True)
    def remove(self, oids: Iterable[ObjectId], packs: Iterable[ObjectId] = ()) -> None:
        with self._write() as txn:
            for oid in oids:
                txn.delete(oid.digest, db=self._db[b"objects"])
            for pack in packs:
                txn.delete(pack.digest, db=self._db[b"packs"])

    def _write(self) -> lmdb.Transaction:
        if self.read_only:
            raise StoreWriteError(self.path, "read-only: a read-only filesystem, or no "
                                             "permission to write")
        return self._env.begin(write=True)

    # -- key/value tables for the layers above (refs, snapshots, stat cache)

    def _fits(self, key: bytes) -> bool:
        return 0 < len(key) <= self._max_key

    def _long_key(self, table: bytes, key: bytes) -> bytes:
        """Where ``key`` of ``table`` lives in ``longkeys``: ordered by its head, unique by its hash."""
        head = self._max_key - len(table) - 1 - DIGEST_SIZE
        return table + b"\0" + key[:head] + hash_bytes(key).digest

    @_guarded
    def get(self, table: bytes, key: bytes) -> bytes | None:
        if self._fits(key):
            if self._db[table] is None:
                return None
            with self._env.begin(db=self._db[table]) as txn:
                value = txn.get(key)
            return None if value is None else bytes(value)
        if self._db[LONG_KEYS] is None:
            return None
        with self._env.begin(db=self._db[LONG_KEYS]) as txn:
            stored = txn.get(self._long_key(table, key))
        return None if stored is None else _split_long(stored)[1]

    @_guarded(writing=True)
    def update(self, table: bytes, put: Iterable[tuple[bytes, bytes]] = (),
               delete: Iterable[bytes] = ()) -> None:
        self.update_tables({table: (put, delete)})

    @_guarded(writing=True)
    def update_tables(self, changes: dict[bytes, tuple[Iterable[tuple[bytes, bytes]], Iterable[bytes]]]) -> None:
        """Puts and deletes in several tables, in one transaction (one commit)."""
        with self._write() as txn:
            for table, (put, delete) in changes.items():
                self._apply(txn, table, put, delete)

    def _apply(self, txn, table: bytes, put: Iterable[tuple[bytes, bytes]], delete: Iterable[bytes]) -> None:
        db, long_db = self._db[table], self._db[LONG_KEYS]
        for key in delete:
            if self._fits(key):
                txn.delete(key, db=db)
            else:
                txn.delete(self._long_key(table, key), db=long_db)
        for key, value in put:
            if self._fits(key):
                txn.put(key, value, db=db)
            else:
                txn.put(self._long_key(table, key),
                        _KEY_LENGTH.pack(len(key)) + key + value, db=long_db)

    @_guarded
    def scan(self, table: bytes, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in key order."""
        out = []
        if self._db[table] is not None:
            with self._env.begin(db=self._db[table]) as txn:
                out = _scan_prefix(txn.cursor(), prefix)
        if self._db[LONG_KEYS] is None:
            return out
        head = self._long_key(table, prefix)[:-DIGEST_SIZE]
        with self._env.begin(db=self._db[LONG_KEYS]) as txn:
            long = [_split_long(v) for _, v in _scan_prefix(txn.cursor(), head)]
        long = [(k, v) for k, v in long if k.startswith(prefix)]
        return sorted(out + long) if long else out

    @_guarded
    def count(self, table: bytes) -> int:
        """How many keys ``table`` holds (long keys not counted)."""
        if self._db[table] is None:
            return 0
        with self._env.begin() as txn:
            return txn.stat(self._db[table])["entries"]

    @_guarded
    def scan_oldest(self, table: bytes, prefix: bytes, limit: int = 1) -> list[tuple[bytes, bytes]]:
        """The first ``limit`` (key, value) pairs whose key starts with
        ``prefix``, in key order, reading only those. Short keys only."""
        if self._db[table] is None:
            return []
        out: list[tuple[bytes, bytes]] = []
        with self._env.begin(db=self._db[table]) as txn:
            cursor = txn.cursor()
            found = cursor.set_range(prefix)
            while found and len(out) < limit:
                key = bytes(cursor.key())
                if not key.startswith(prefix):
                    break
                out.append((key, bytes(cursor.value())))
                found = cursor.next()
        return out

    @_guarded
    def scan_newest(self, table: bytes, prefix: bytes, limit: int | None = None,
                    before: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` (key, value) pairs whose key starts with ``prefix``
        (and is less than ``before``, if given), in reverse key order, reading
        only those: the newest entries of a time-ordered table without
        walking all of it. Short keys only."""
        if self._db[table] is None:
            return []
        out: list[tuple[bytes, bytes]] = []
        with self._env.begin(db=self._db[table]) as txn:
            cursor = txn.cursor()
            after = _prefix_end(prefix)
            if before is not None and before.startswith(prefix):
                after = before
            if after and cursor.set_range(after):
                found = cursor.prev()  # the last key before the prefix's end
            else:
                found = cursor.last()
            if not found:
                return out
            for key, value in cursor.iterprev():  # from the current key back
                if not key.startswith(prefix) or (limit is not None and len(out) >= limit):
                    break
                out.append((key, value))
        return out

    @_guarded(writing=True)
    def clear(self, table: bytes, prefix: bytes = b"") -> None:
        keys = [k for k, _ in self.scan(table, prefix)]
        self.update(table, delete=keys)

    @_guarded
    def entries(self) -> Iterator[IndexEntry]:
        packs: dict[bytes, ObjectId] = {}
        with self._env.begin(db=self._db[b"objects"]) as txn:
            for key, record in txn.cursor():
                yield IndexEntry.from_record(key, record, packs)

    @_guarded
    def locations(self) -> Iterator[tuple[bytes, bytes | None, int]]:
        """(id digest, pack digest or None when loose, stored length) of every
        object: for passes over a million objects that need no more (gc's
        tally), without an IndexEntry and two ObjectIds built for each."""
        unpack = _OBJECT.unpack
        with self._env.begin(db=self._db[b"objects"]) as txn:
            for key, record in txn.cursor():
                location, _, pack, _, stored_length, _ = unpack(record)
                yield key, (pack if location == PACKED else None), stored_length

    @_guarded
    def packs(self) -> list[PackRecord]:
        with self._env.begin(db=self._db[b"packs"]) as txn:
            return [PackRecord(ObjectId(bytes(k)), *_PACK.unpack(v)) for k, v in txn.cursor()]

    @_guarded
    def object_count(self) -> int:
        with self._env.begin() as txn:
            return txn.stat(self._db[b"objects"])["entries"]


def _kind(cls: type[Index], sealer: Sealer | PlainSealer) -> type[Index]:
    """The class of an index: an encrypted store's names and seals what it
    holds; a plain store's runs the plain code with nothing added per call."""
    return SealedIndex if sealer.encrypted else cls


# -- the index of an encrypted store (docs/FORMAT.md §18.12) -------------------
#
# Every table keyed by something a reader must not learn (an id, a path, a
# branch) is keyed by a name or keyed hash instead, and its values are sealed
# together with the caller's own key: scans give back exactly the keys and
# values that were put. A key scheme says how a table's keys are stored:
# ``stored(key)``; ``cover(prefix)``, a stored prefix every key starting with
# ``prefix`` is stored under (empty: the whole table is read and filtered);
# ``tie``, how many leading bytes of a stored key keep the callers' order once
# the cover is non-empty (0: none, so a scan sorts what it read).


class _IdKeys:
    """snapshots, treelinks, verified: keyed by an object id, stored under its name."""

    tie = 0

    def __init__(self, sealer: Sealer, table: bytes):
        self._name, self._keyed, self._label = sealer.name, sealer.keyed, table + b" key"

    def stored(self, key: bytes) -> bytes:
        if len(key) == DIGEST_SIZE:
            return self._name(ObjectId(key)).digest
        return self._keyed(self._label, key)  # no caller makes one; kept apart all the same

    def cover(self, prefix: bytes) -> bytes:
        return b""


class _BranchPathKeys:
    """statcache, ``branch NUL path``: a keyed hash of the branch (one key
    range a branch, for its preload) then a keyed hash of the whole key."""

    tie = 0

    def __init__(self, sealer: Sealer):
        self._keyed = sealer.keyed
        self._heads: dict[bytes, bytes] = {}   # a scan's branch, hashed once

    def _head(self, key: bytes) -> bytes:
        cut = key.find(b"\0")
        branch = key if cut < 0 else key[:cut + 1]
        head = self._heads.get(branch)
        if head is None:
            if len(self._heads) >= 64:
                self._heads.clear()
            head = self._heads[branch] = self._keyed(b"statcache branch", branch, 16)
        return head

    def stored(self, key: bytes) -> bytes:
        return self._head(key) + self._keyed(b"statcache key", key, 16)

    def cover(self, prefix: bytes) -> bytes:
        return self._head(prefix) if b"\0" in prefix else b""


class _TimeKeys:
    """timeline, ``H(branch)[:8] || time (16 bytes) || id``: the branch hash
    keyed, the time in the clear (so a branch's snapshots stay one key range
    in time order), the id named."""

    tie = 24   # the keyed branch hash and the time

    def __init__(self, sealer: Sealer):
        self._keyed, self._name = sealer.keyed, sealer.name

    def stored(self, key: bytes) -> bytes:
        head = self._keyed(b"timeline branch", key[:8], 8) + key[8:24]
        if len(key) <= 24:
            return head
        if len(key) == 24 + DIGEST_SIZE:
            return head + self._name(ObjectId(key[24:])).digest
        return head + self._keyed(b"timeline key", key)

    def cover(self, prefix: bytes) -> bytes:
        if len(prefix) < 8:
            return b""
        return self._keyed(b"timeline branch", prefix[:8], 8) + prefix[8:24]


_KeyScheme = _IdKeys | _BranchPathKeys | _TimeKeys


class SealedIndex(Index):
    """The index of an encrypted store: the same interface, every id, path
    and branch name named, keyed or sealed (meta, objects and packs values
    hold only locations and sizes, and stay in the clear). An objects record
    carries a MAC of its name and bytes: a record changed on disk (an
    encoding turned raw, to make a read serve planted bytes) is damage."""

    sealer: Sealer

    def __init__(self, env: lmdb.Environment, path: str, read_only: bool = False,
                 sealer: Sealer | PlainSealer = PLAIN):
        if not isinstance(sealer, Sealer):
            raise TypeError("an encrypted store's index needs its keys")
        super().__init__(env, path, read_only, sealer)
        self._name, self._unname = sealer.name, sealer.unname
        self._keys: dict[bytes, _KeyScheme] = {
            b"snapshots": _IdKeys(sealer, b"snapshots"), b"treelinks": _IdKeys(sealer, b"treelinks"),
            b"verified": _IdKeys(sealer, b"verified"), b"statcache": _BranchPathKeys(sealer),
            b"timeline": _TimeKeys(sealer)}

    # -- objects, by name -----------------------------------------------------

    def _tag(self, name: bytes, record: bytes) -> bytes:
        return self.sealer.keyed(b"objects", name + record, _OBJECT_TAG)

    def _checked(self, name: bytes, stored: bytes) -> bytes:
        """An objects record's 64 bytes, once its MAC is checked (SealError: damage)."""
        record = bytes(stored[:_OBJECT.size])
        if len(stored) != _OBJECT.size + _OBJECT_TAG or \
                not hmac.compare_digest(bytes(stored[_OBJECT.size:]), self._tag(bytes(name), record)):
            raise SealError("an object record does not authenticate (changed, or moved from another key)")
        return record

    @_guarded
    def lookup(self, oid: ObjectId) -> IndexEntry | None:
        name = self._name(oid).digest
        with self._env.begin(db=self._db[b"objects"]) as txn:
            record = txn.get(name)
        return None if record is None else IndexEntry.from_record(oid.digest, self._checked(name, record))

    @_guarded
    def contains(self, oid: ObjectId) -> bool:
        with self._env.begin(db=self._db[b"objects"], buffers=True) as txn:
            return txn.get(self._name(oid).digest) is not None

    @_guarded
    def match_prefix(self, prefix: str, limit: int = 2) -> list[ObjectId]:
        """Names are in no order of their ids: every name is turned back into
        its id and compared (measured: 0.2 s of CPU per 100,000 objects; a
        plain index reads only the matching keys)."""
        head = bytes.fromhex(prefix[: len(prefix) // 2 * 2])
        nibble = int(prefix[-1], 16) if len(prefix) % 2 else None
        found: list[ObjectId] = []
        unname, at = self._unname, len(head)
        with self._env.begin(db=self._db[b"objects"]) as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                oid = unname(ObjectId(key))
                if oid.digest.startswith(head) and (nibble is None or oid.digest[at] >> 4 == nibble):
                    found.append(oid)
        return sorted(found)[:limit]

    @_guarded(writing=True)
    def record(self, entries: Iterable[IndexEntry], packs: Iterable[PackRecord] = ()) -> None:
        with self._write() as txn:
            objects = self._db[b"objects"]
            for entry in entries:
                name, record = self._name(entry.oid).digest, entry.to_record()
                txn.put(name, record + self._tag(name, record), db=objects)
            for pack in packs:
                txn.put(pack.pack.digest, _PACK.pack(pack.file_size, pack.entry_count),
                        db=self._db[b"packs"])

    @_guarded(writing=True)
    def remove(self, oids: Iterable[ObjectId], packs: Iterable[ObjectId] = ()) -> None:
        super().remove([self._name(oid) for oid in oids], packs)

    @_guarded
    def entries(self) -> Iterator[IndexEntry]:
        packs: dict[bytes, ObjectId] = {}
        unname = self._unname
        with self._env.begin(db=self._db[b"objects"]) as txn:
            for key, record in txn.cursor():
                yield IndexEntry.from_record(unname(ObjectId(key)).digest, self._checked(key, record), packs)

    @_guarded
    def locations(self) -> Iterator[tuple[bytes, bytes | None, int]]:
        unpack, unname = _OBJECT.unpack, self._unname
        with self._env.begin(db=self._db[b"objects"]) as txn:
            for key, record in txn.cursor():
                location, _, pack, _, stored_length, _ = unpack(self._checked(key, record))
                yield unname(ObjectId(key)).digest, (pack if location == PACKED else None), stored_length

    # -- the other tables: keyed, values sealed with the caller's key -----------

    def _seal(self, table: bytes, stored: bytes, key: bytes, value: bytes) -> bytes:
        return self.sealer.seal_value(table + b"\0" + stored, _KEY_LENGTH.pack(len(key)) + key + value)

    def _open(self, table: bytes, stored: bytes, sealed: bytes) -> tuple[bytes, bytes]:
        """(caller's key, value); SealError (damage) for a value that does not
        open, or was moved here from another key."""
        return _key_and_value(self.sealer.open_value(table + b"\0" + stored, sealed))

    @_guarded
    def get(self, table: bytes, key: bytes) -> bytes | None:
        scheme = self._keys.get(table)
        if scheme is None:
            return super().get(table, key)
        if self._db[table] is None:
            return None
        stored = scheme.stored(key)
        with self._env.begin(db=self._db[table]) as txn:
            sealed = txn.get(stored)
        if sealed is None:
            return None
        found, value = self._open(table, stored, sealed)
        return value if found == key else None   # another key with the same hash

    def _apply(self, txn, table: bytes, put: Iterable[tuple[bytes, bytes]], delete: Iterable[bytes]) -> None:
        scheme = self._keys.get(table)
        if scheme is None:
            super()._apply(txn, table, put, delete)
            return
        db = self._db[table]
        for key in delete:
            txn.delete(scheme.stored(key), db=db)
        for key, value in put:
            stored = scheme.stored(key)
            txn.put(stored, self._seal(table, stored, key, value), db=db)

    @_guarded
    def scan(self, table: bytes, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        scheme = self._keys.get(table)
        if scheme is None:
            return super().scan(table, prefix)
        if self._db[table] is None:
            return []
        # One loop, no generators: a branch's stat cache preload opens a
        # record per file. Measured per 100,000: 0.44 s of CPU (0.22 s of it
        # AES-GCM-SIV), against 0.09 s in a plain index.
        cover, context, open_value = scheme.cover(prefix), table + b"\0", self.sealer.open_value
        out: list[tuple[bytes, bytes]] = []
        with self._env.begin(db=self._db[table]) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(cover):
                return out
            for stored, sealed in cursor:
                if not stored.startswith(cover):
                    break
                key, value = _key_and_value(open_value(context + stored, sealed))
                if key.startswith(prefix):
                    out.append((key, value))
        out.sort(key=_first)   # keys are unique: the order of the pairs
        return out

    @_guarded
    def scan_oldest(self, table: bytes, prefix: bytes, limit: int = 1) -> list[tuple[bytes, bytes]]:
        scheme = self._keys.get(table)
        if scheme is None:
            return super().scan_oldest(table, prefix, limit)
        return self._scan(table, scheme, prefix, limit, newest=False)

    @_guarded
    def scan_newest(self, table: bytes, prefix: bytes, limit: int | None = None,
                    before: bytes | None = None) -> list[tuple[bytes, bytes]]:
        scheme = self._keys.get(table)
        if scheme is None:
            return super().scan_newest(table, prefix, limit, before)
        return self._scan(table, scheme, prefix, limit, newest=True, before=before)

    def _scan(self, table: bytes, scheme: _KeyScheme, prefix: bytes, limit: int | None,
              newest: bool, before: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """The callers' (key, value) pairs starting with ``prefix`` (below
        ``before``), in their key order (newest: reversed), reading the
        stored keys the prefix covers, up to the end of ``limit``'s tie."""
        if self._db[table] is None:
            return []
        cover = scheme.cover(prefix)
        tie = scheme.tie if cover else 0
        if not before or not before.startswith(prefix):
            before = None   # as the plain index: an empty bound, or one outside the prefix, bounds nothing
        with self._env.begin(db=self._db[table]) as txn:
            cursor = txn.cursor()
            if not newest:
                raw = _forward(cursor, cover)
            else:
                # The keys below ``before`` lie below the end of its cover when
                # the cover keeps order; else the whole prefix is read.
                end = scheme.cover(before) if before is not None and tie else cover
                raw = _backward(cursor, cover, _prefix_end(end))
            rows = ((stored, *self._open(table, stored, sealed)) for stored, sealed in raw)
            wanted = ((s, k, v) for s, k, v in rows
                      if k.startswith(prefix) and (before is None or k < before))
            return _in_key_order(wanted, tie, limit, newest)


def _first(pair: tuple[bytes, bytes]) -> bytes:
    return pair[0]


def _key_and_value(plain: bytes) -> tuple[bytes, bytes]:
    """The caller's key and value in an opened record: u32 key length, key, value."""
    end = _KEY_LENGTH.size + _KEY_LENGTH.unpack_from(plain)[0]
    if end > len(plain):
        raise ValueError("a sealed index record is shorter than its key")
    return plain[_KEY_LENGTH.size:end], plain[end:]


def _forward(cursor, cover: bytes) -> Iterator[tuple[bytes, bytes]]:
    if not cursor.set_range(cover):
        return
    for stored, sealed in cursor:
        if not stored.startswith(cover):
            return
        yield stored, sealed


def _backward(cursor, cover: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Stored pairs under ``cover`` below ``end`` (none: to the last), last first."""
    found = cursor.prev() if end and cursor.set_range(end) else cursor.last()
    if not found:
        return
    for stored, sealed in cursor.iterprev():
        if not stored.startswith(cover):
            return
        yield stored, sealed


def _in_key_order(rows: Iterator[tuple[bytes, bytes, bytes]], tie: int, limit: int | None,
                  newest: bool) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``rows`` (stored key, key, value) in the callers' key
    order. Stored keys keep that order only in their first ``tie`` bytes:
    rows equal there are sorted by key, and reading stops at the end of the
    tie that reaches ``limit``."""
    out: list[tuple[bytes, bytes]] = []
    group: list[tuple[bytes, bytes]] = []
    mark = None
    for stored, key, value in rows:
        here = stored[:tie]
        if here != mark:
            out += sorted(group, reverse=newest)
            group = []
            if limit is not None and len(out) >= limit:
                break
            mark = here
        group.append((key, value))
    else:
        out += sorted(group, reverse=newest)
    return out if limit is None else out[:limit]


def _remove_stale_copies(path: str) -> None:
    """Temp copies an interrupted compaction left (none can be in use: the
    caller holds the store's exclusive lock)."""
    for name in os.listdir(path):
        if name.startswith(COMPACT_PREFIX + "-") and name.endswith(".tmp"):
            remove_quietly(os.path.join(path, name))


def _open_table(env: lmdb.Environment, name: bytes, read_only: bool):
    try:
        return env.open_db(name, create=not read_only)
    except lmdb.NotFoundError:
        return None


def _scan_prefix(cursor, prefix: bytes) -> list[tuple[bytes, bytes]]:
    if not cursor.set_range(prefix):
        return []
    out = []
    for key, value in cursor:
        if not bytes(key).startswith(prefix):
            break
        out.append((bytes(key), bytes(value)))
    return out


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``
    (empty: there is none, the prefix is all 0xff)."""
    head = prefix.rstrip(b"\xff")
    return head[:-1] + bytes([head[-1] + 1]) if head else b""


def _split_long(stored: bytes) -> tuple[bytes, bytes]:
    """(whole key, value) of a ``longkeys`` record."""
    (length,) = _KEY_LENGTH.unpack_from(stored)
    end = _KEY_LENGTH.size + length
    if end > len(stored):
        raise ValueError("a long key record is shorter than its key")
    return bytes(stored[_KEY_LENGTH.size:end]), bytes(stored[end:])


def _writable(path: str) -> bool:
    return os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def _check_files(path: str) -> None:
    """The index's files must be LMDB's own regular files: a link or a FIFO
    planted there is refused, never opened (a FIFO would hang the open)."""
    for name in (DATA_FILE, LOCK_FILE):
        try:
            st = os.lstat(os.path.join(path, name))
        except FileNotFoundError:
            if name == DATA_FILE:
                raise IndexUnavailable(path, "missing") from None
            continue
        if not stat.S_ISREG(st.st_mode):
            raise StoreFileInvalid(os.path.join(path, name),
                                   "is not a regular file (a link, FIFO or device)")
