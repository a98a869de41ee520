"""Object ids and content hashing.

An object's id is the BLAKE3-256 digest of its content. This is the only
module that imports ``blake3``, so the choice of hash lives in one place
(an encrypted store will switch to keyed BLAKE3 here).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import blake3

DIGEST_SIZE = 32
HEX_LENGTH = 2 * DIGEST_SIZE
MIN_PREFIX = 6
_HEX_RE = re.compile(r"[0-9a-f]+\Z")

# Hashing this many bytes or more is done with all cores: below it the
# thread start-up costs more than it saves.
_PARALLEL_HASH_MIN = 8 << 20


@dataclass(frozen=True, slots=True, order=True)
class ObjectId:
    """A 32-byte BLAKE3 digest naming one object."""

    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_SIZE:
            raise ValueError(f"object id must be {DIGEST_SIZE} bytes, got {len(self.digest)}")

    @classmethod
    def parse(cls, text: str) -> ObjectId:
        if len(text) != HEX_LENGTH or not is_hex(text):
            raise ValueError(f"not a full object id: {text!r}")
        return cls(bytes.fromhex(text))

    @property
    def hex(self) -> str:
        return self.digest.hex()

    @property
    def short(self) -> str:
        return self.hex[:12]

    def fanout(self) -> tuple[str, str]:
        """The (directory, file name) pair used to lay objects out on disk."""
        h = self.hex
        return h[:2], h[2:]

    def __str__(self) -> str:
        return self.hex

    def __repr__(self) -> str:
        return f"ObjectId({self.short}…)"


def is_hex(text: str) -> bool:
    # A regex: a per-character loop was the largest single cost of walking
    # a million tree entries.
    return _HEX_RE.match(text) is not None


def hash_bytes(data: bytes | memoryview) -> ObjectId:
    if len(data) >= _PARALLEL_HASH_MIN:
        return ObjectId(blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest())
    return ObjectId(blake3.blake3(data).digest())


_HASH_BLOCK = 16 << 20


def hash_fd(fd: int) -> ObjectId:
    """Hash a whole file from its descriptor, on all cores.

    Reads into one reused buffer rather than mapping the file, so resident
    memory stays flat however large the file is.
    """
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buf = bytearray(_HASH_BLOCK)
    view = memoryview(buf)
    offset = 0
    while True:
        n = os.preadv(fd, [buf], offset)
        if n == 0:
            return ObjectId(h.digest())
        h.update(view[:n])
        offset += n


def hash_path(path: str | os.PathLike) -> ObjectId:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return hash_fd(fd)
    finally:
        os.close(fd)


class Hasher:
    """Incremental hashing for content that arrives in blocks."""

    __slots__ = ("_h",)

    def __init__(self, parallel: bool = False) -> None:
        # parallel: hash each (multi-megabyte) block on all cores.
        self._h = blake3.blake3(max_threads=blake3.blake3.AUTO) if parallel else blake3.blake3()

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)

    def object_id(self) -> ObjectId:
        return ObjectId(self._h.digest())
