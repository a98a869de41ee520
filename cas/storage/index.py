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
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

import lmdb

from ..errors import IndexUnavailable
from ..objectid import ObjectId
from .encoding import Encoding

INDEX_FORMAT = b"1"
DATA_FILE = "data.mdb"
TABLES = (b"objects", b"packs", b"meta", b"refs", b"snapshots", b"statcache", b"verified")
# Virtual address space only: LMDB grows the file as pages are used.
MAP_SIZE = 1 << 40

LOOSE = 0
PACKED = 1
_OBJECT = struct.Struct("<BB6x32sQQQ")
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
                    packs: dict[bytes, ObjectId] | None = None) -> "IndexEntry":
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


def _guarded(method):
    """Turn LMDB failures into one actionable error about the index."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (lmdb.CorruptedError, lmdb.InvalidError, lmdb.PageNotFoundError,
                lmdb.BadValsizeError, lmdb.VersionMismatchError) as e:
            raise IndexUnavailable(self.path, f"damaged ({e})") from None
        except (struct.error, ValueError) as e:
            raise IndexUnavailable(self.path, f"damaged (bad record: {e})") from None

    return wrapper


class Index:
    def __init__(self, env: lmdb.Environment, path: str):
        self._env = env
        self.path = path
        self._db = {name: env.open_db(name) for name in TABLES}

    @classmethod
    def create(cls, path: str, store_id: str) -> "Index":
        os.makedirs(path, exist_ok=True)
        index = cls(cls._open_env(path), path)
        with index._env.begin(write=True) as txn:
            txn.put(b"format", INDEX_FORMAT, db=index._db[b"meta"])
            txn.put(b"store_id", store_id.encode(), db=index._db[b"meta"])
        return index

    @classmethod
    def open(cls, path: str, store_id: str) -> "Index":
        if not os.path.exists(os.path.join(path, DATA_FILE)):
            raise IndexUnavailable(path, "missing")
        try:
            index = cls(cls._open_env(path), path)
            with index._env.begin() as txn:
                fmt = txn.get(b"format", db=index._db[b"meta"])
                owner = txn.get(b"store_id", db=index._db[b"meta"])
        except lmdb.Error as e:
            raise IndexUnavailable(path, f"damaged ({e})") from None
        if fmt != INDEX_FORMAT or owner != store_id.encode():
            index.close()
            raise IndexUnavailable(path, "not this store's index, or of an unknown format")
        return index

    @staticmethod
    def _open_env(path: str) -> lmdb.Environment:
        return lmdb.open(
            path, map_size=MAP_SIZE, max_dbs=len(TABLES) + 4, subdir=True,
            readahead=False, metasync=True, sync=True,
        )

    def close(self) -> None:
        self._env.close()

    @_guarded
    def lookup(self, oid: ObjectId) -> IndexEntry | None:
        with self._env.begin(db=self._db[b"objects"]) as txn:
            record = txn.get(oid.digest)
        return None if record is None else IndexEntry.from_record(oid.digest, record)

    @_guarded
    def match_prefix(self, prefix: str, limit: int = 2) -> list[ObjectId]:
        """Ids whose hex starts with ``prefix`` (at most ``limit`` of them)."""
        start = bytes.fromhex(prefix[: len(prefix) // 2 * 2])
        if len(prefix) % 2:
            start += bytes([int(prefix[-1], 16) << 4])
        found = []
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

    @_guarded
    def record(self, entries: Iterable[IndexEntry], packs: Iterable[PackRecord] = ()) -> None:
        """Add entries in one transaction; call only once their bytes are durable."""
        with self._env.begin(write=True) as txn:
            objects = self._db[b"objects"]
            for entry in entries:
                txn.put(entry.oid.digest, entry.to_record(), db=objects)
            for pack in packs:
                txn.put(pack.pack.digest, _PACK.pack(pack.file_size, pack.entry_count),
                        db=self._db[b"packs"])

    @_guarded
    def remove(self, oids: Iterable[ObjectId], packs: Iterable[ObjectId] = ()) -> None:
        with self._env.begin(write=True) as txn:
            for oid in oids:
                txn.delete(oid.digest, db=self._db[b"objects"])
            for pack in packs:
                txn.delete(pack.digest, db=self._db[b"packs"])

    # -- key/value tables for the layers above (refs, snapshots, stat cache)

    @_guarded
    def get(self, table: bytes, key: bytes) -> bytes | None:
        with self._env.begin(db=self._db[table]) as txn:
            value = txn.get(key)
        return None if value is None else bytes(value)

    @_guarded
    def update(self, table: bytes, put: Iterable[tuple[bytes, bytes]] = (),
               delete: Iterable[bytes] = ()) -> None:
        with self._env.begin(write=True, db=self._db[table]) as txn:
            for key in delete:
                txn.delete(key)
            for key, value in put:
                txn.put(key, value)

    @_guarded
    def scan(self, table: bytes, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        with self._env.begin(db=self._db[table]) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(prefix):
                return []
            out = []
            for key, value in cursor:
                if not bytes(key).startswith(prefix):
                    break
                out.append((bytes(key), bytes(value)))
            return out

    @_guarded
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
    def packs(self) -> list[PackRecord]:
        with self._env.begin(db=self._db[b"packs"]) as txn:
            return [PackRecord(ObjectId(bytes(k)), *_PACK.unpack(v)) for k, v in txn.cursor()]

    @_guarded
    def object_count(self) -> int:
        with self._env.begin() as txn:
            return txn.stat(self._db[b"objects"])["entries"]
