"""Chunk lists: how a chunked file's content is made of chunk objects.

A chunked file keeps its own id (the BLAKE3 of its whole content, what
``b3sum`` prints). Its stored form is a chunk list, canonical JSON, in the
loose file ``objects/<2 hex>/<62 hex>.chunks`` named by that id::

    {"chunks":[["<chunk id>",<length>],...],"id":"<file id>","size":<n>,
     "type":"chunks","version":1}

Each chunk is an ordinary object (packed or loose, raw or compressed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..objectid import HEX_LENGTH, ObjectId, is_hex

CHUNKS_VERSION = 1


class ChunkListError(ValueError):
    """A chunk list is malformed."""


@dataclass(frozen=True)
class ChunkList:
    oid: ObjectId
    size: int
    chunks: tuple[tuple[ObjectId, int], ...]

    def to_json(self) -> bytes:
        doc = {"type": "chunks", "version": CHUNKS_VERSION, "id": self.oid.hex, "size": self.size,
               "chunks": [[c.hex, n] for c, n in self.chunks]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "ChunkList":
        try:
            doc = json.loads(data)
            if doc.get("type") != "chunks" or doc.get("version") != CHUNKS_VERSION:
                raise ChunkListError("not a version 1 chunk list")
            oid = _oid(doc["id"])
            chunks = tuple((_oid(c), n) for c, n in doc["chunks"])
            size = doc["size"]
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ChunkListError(f"malformed chunk list ({e})") from None
        except RecursionError:
            # json nests by recursion: "[[[[..." thousands deep must be damage, not a crash.
            raise ChunkListError("malformed chunk list (nested too deeply)") from None
        if type(size) is not int or any(type(n) is not int or n <= 0 for _, n in chunks) \
                or sum(n for _, n in chunks) != size:
            raise ChunkListError("chunk lengths do not add up to the size")
        if any(c == oid for c, _ in chunks):
            # Reading it would read itself, without end.
            raise ChunkListError("a chunk list names its own file as a chunk")
        return cls(oid, size, chunks)


def _oid(text) -> ObjectId:
    if not isinstance(text, str) or len(text) != HEX_LENGTH or not is_hex(text):
        raise ChunkListError(f"bad id {text!r}")
    return ObjectId.parse(text)
