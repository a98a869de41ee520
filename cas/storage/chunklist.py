"""Chunk lists: how a chunked file's content is made of chunk objects.

A chunked file keeps its own id (the BLAKE3 of its whole content, what
``b3sum`` prints). Its stored form is a chunk list in the loose file
``objects/<2 hex>/<62 hex>.chunks`` named by that id, in one of two versions
(docs/FORMAT.md §14):

* version 1, canonical JSON::

    {"chunks":[["<chunk id>",<length>],...],"id":"<file id>","size":<n>,
     "type":"chunks","version":1}

* version 2, binary: the same facts in about 32 bytes a chunk instead of
  75, written by stores of format version 2. A 335 KB SQLite database is 81
  pages; every version of it that a snapshot keeps pays its list again,
  which in JSON cost more than the pages that changed.

Readers take both. Each chunk is an ordinary object (packed or loose, raw
or compressed).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from ..objectid import DIGEST_SIZE, HEX_LENGTH, ObjectId, is_hex

CHUNKS_VERSION = 1
BINARY_VERSION = 2
MAGIC = b"CASLIST\0"
# magic, u32 version, file id, u64 size, u32 chunk count
_HEAD = struct.Struct(f"<8sI{DIGEST_SIZE}sQI")
_VARINT_MAX_BYTES = 9   # 63 bits: more than any size a store accepts
HEAD_SIZE = _HEAD.size
# The most of a chunk list an index rebuild reads and parses: about 3.5
# million chunks of version 1 (8 million of version 2), a file of 200 GiB
# and more at the general chunk size.
LIST_PARSE_LIMIT = 256 << 20


class ChunkListError(ValueError):
    """A chunk list is malformed."""


@dataclass(frozen=True)
class ChunkList:
    oid: ObjectId
    size: int
    chunks: tuple[tuple[ObjectId, int], ...]

    def encode(self, version: int) -> bytes:
        return self.to_binary() if version >= BINARY_VERSION else self.to_json()

    def to_json(self) -> bytes:
        doc = {"type": "chunks", "version": CHUNKS_VERSION, "id": self.oid.hex, "size": self.size,
               "chunks": [[c.hex, n] for c, n in self.chunks]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def to_binary(self) -> bytes:
        parts = [_HEAD.pack(MAGIC, BINARY_VERSION, self.oid.digest, self.size, len(self.chunks))]
        parts.extend(c.digest for c, _ in self.chunks)
        parts.append(_length_runs(n for _, n in self.chunks))
        return b"".join(parts)

    @classmethod
    def from_json(cls, data: bytes) -> ChunkList:
        """A chunk list of either version (the name is older than version 2)."""
        size: object   # from JSON anything: checked below
        if data.startswith(MAGIC):
            oid, size, chunks = _parse_binary(data)
        else:
            oid, size, chunks = _parse_json(data)
        if type(size) is not int or any(type(n) is not int or n <= 0 for _, n in chunks) \
                or sum(n for _, n in chunks) != size:
            raise ChunkListError("chunk lengths do not add up to the size")
        if any(c == oid for c, _ in chunks):
            # Reading it would read itself, without end.
            raise ChunkListError("a chunk list names its own file as a chunk")
        return cls(oid, size, chunks)

    parse = from_json


def _parse_json(data: bytes) -> tuple[ObjectId, object, tuple]:
    try:
        doc = json.loads(data)
        if doc.get("type") != "chunks" or doc.get("version") != CHUNKS_VERSION:
            raise ChunkListError("not a version 1 chunk list")
        oid = _oid(doc["id"])
        chunks = tuple((_oid(c), n) for c, n in doc["chunks"])
        return oid, doc["size"], chunks
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ChunkListError(f"malformed chunk list ({e})") from None
    except RecursionError:
        # json nests by recursion: "[[[[..." thousands deep must be damage, not a crash.
        raise ChunkListError("malformed chunk list (nested too deeply)") from None


def _parse_binary(data: bytes) -> tuple[ObjectId, int, tuple]:
    if len(data) < _HEAD.size:
        raise ChunkListError("truncated chunk list")
    _, version, digest, size, count = _HEAD.unpack_from(data)
    if version != BINARY_VERSION:
        raise ChunkListError(f"unknown chunk list version {version}")
    ids_end = _HEAD.size + count * DIGEST_SIZE
    # Checked before anything is allocated by the count.
    if ids_end > len(data):
        raise ChunkListError(f"{count} chunks do not fit in {len(data)} bytes")
    lengths = _parse_runs(data, ids_end, count)
    ids = (ObjectId(data[i:i + DIGEST_SIZE]) for i in range(_HEAD.size, ids_end, DIGEST_SIZE))
    return ObjectId(digest), size, tuple(zip(ids, lengths, strict=True))


def binary_header(head: bytes) -> tuple[ObjectId, int, range]:
    """A version 2 list's file id, file size, and the range of byte lengths a
    list with its chunk count can have (ids, then at most one run a chunk),
    from its first ``HEAD_SIZE`` bytes: what an index rebuild needs, without
    reading (or allocating) the rest on the word of a crafted count."""
    if len(head) < _HEAD.size or not head.startswith(MAGIC):
        raise ChunkListError("truncated chunk list")
    _, version, digest, size, count = _HEAD.unpack_from(head)
    if version != BINARY_VERSION:
        raise ChunkListError(f"unknown chunk list version {version}")
    ids_end = _HEAD.size + count * DIGEST_SIZE
    return ObjectId(digest), size, range(ids_end, ids_end + count * 2 * _VARINT_MAX_BYTES + 1)


def _length_runs(lengths) -> bytes:
    """Chunk lengths as (count, length) runs: a database's pages are one run."""
    out = bytearray()
    run_length, run = 0, 0   # no run yet: run_length is not compared with run at 0
    for n in lengths:
        if n == run_length:
            run += 1
            continue
        if run:
            out += _varint(run) + _varint(run_length)
        run_length, run = n, 1
    if run:
        out += _varint(run) + _varint(run_length)
    return bytes(out)


def _parse_runs(data: bytes, pos: int, count: int) -> list[int]:
    lengths: list[int] = []
    while pos < len(data):
        run, pos = _read_varint(data, pos)
        length, pos = _read_varint(data, pos)
        if run == 0 or length == 0 or len(lengths) + run > count:
            raise ChunkListError("chunk length runs do not match the chunk count")
        lengths.extend([length] * run)
    if len(lengths) != count:
        raise ChunkListError("chunk length runs do not match the chunk count")
    return lengths


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(pos + _VARINT_MAX_BYTES, len(data))):
        value |= (data[i] & 0x7F) << shift
        if not data[i] & 0x80:
            if i > pos and data[i] == 0:
                raise ChunkListError("a chunk length is not in its shortest form")
            return value, i + 1
        shift += 7
    raise ChunkListError("truncated or overlong chunk length")


def _oid(text) -> ObjectId:
    if not isinstance(text, str) or len(text) != HEX_LENGTH or not is_hex(text):
        raise ChunkListError(f"bad id {text!r}")
    return ObjectId.parse(text)
