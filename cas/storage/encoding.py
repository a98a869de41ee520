"""How an object's bytes are stored: raw, or zstd-compressed.

This is the only module that imports ``zstandard``. Every compressed frame
is a standard zstd frame with the content size in its header, so the
``zstd`` command line tool decompresses it. A compressed packed object is one
frame; a compressed loose object is a sequence of frames with a seek table
(see ``seekable``).
"""

from __future__ import annotations

import enum
import threading

import zstandard


class Encoding(enum.IntEnum):
    RAW = 0
    ZSTD = 1
    # Sealed (docs/FORMAT.md §18): the stored bytes of RAW, ZSTD and CHUNKED
    # inside an AEAD envelope, in an encrypted store.
    SEALED_RAW = 2
    SEALED_ZSTD = 3
    CHUNKED = 4   # stored as a chunk list: the content is the chunks in order
    SEALED_CHUNKED = 5

    @property
    def suffix(self) -> str:
        return _SUFFIX[self]

    @property
    def sealed(self) -> bool:
        return self in (Encoding.SEALED_RAW, Encoding.SEALED_ZSTD, Encoding.SEALED_CHUNKED)

    @property
    def inner(self) -> Encoding:
        """What the stored bytes are once opened: RAW, ZSTD or CHUNKED."""
        return _INNER[self]

    def sealed_as(self, sealed: bool) -> Encoding:
        """This encoding with its bytes sealed (or not)."""
        inner = _INNER[self]
        return _SEAL[inner] if sealed else inner

    @staticmethod
    def suffixed() -> tuple[Encoding, ...]:
        """Encodings with a file name suffix, longest suffix first."""
        return (Encoding.SEALED_CHUNKED, Encoding.SEALED_ZSTD, Encoding.SEALED_RAW,
                Encoding.CHUNKED, Encoding.ZSTD)


_SUFFIX = {Encoding.RAW: "", Encoding.ZSTD: ".zst", Encoding.CHUNKED: ".chunks",
           Encoding.SEALED_RAW: ".sealed", Encoding.SEALED_ZSTD: ".zst.sealed",
           Encoding.SEALED_CHUNKED: ".chunks.sealed"}
_INNER = {Encoding.RAW: Encoding.RAW, Encoding.ZSTD: Encoding.ZSTD, Encoding.CHUNKED: Encoding.CHUNKED,
          Encoding.SEALED_RAW: Encoding.RAW, Encoding.SEALED_ZSTD: Encoding.ZSTD,
          Encoding.SEALED_CHUNKED: Encoding.CHUNKED}
_SEAL = {Encoding.RAW: Encoding.SEALED_RAW, Encoding.ZSTD: Encoding.SEALED_ZSTD,
         Encoding.CHUNKED: Encoding.SEALED_CHUNKED}


# Below this size zstd's frame overhead eats the saving.
MIN_COMPRESS_SIZE = 64
# A zstd block holds at most 128 KiB of content and takes at least 4 stored
# bytes (a 3-byte header and the one byte of an RLE block), so no frame
# expands more than this: a larger claimed size is damage, known for free.
MAX_EXPANSION = (128 << 10) // 4
# One-shot decompression allocates the whole output first; larger frames
# (none that cas writes: its blocks are 4 MiB) are read in pieces.
ONE_SHOT_MAX = 64 << 20
STREAM_PIECE = 1 << 20

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def encode_small(data: bytes, level: int, min_saving: float) -> tuple[Encoding, bytes]:
    """Compress when it saves at least ``min_saving`` of the size, else keep raw."""
    if len(data) < MIN_COMPRESS_SIZE:
        return Encoding.RAW, data
    packed = _compressor(level).compress(data)
    if len(packed) <= len(data) * (1.0 - min_saving):
        return Encoding.ZSTD, packed
    return Encoding.RAW, data


def worth_compressing(sample: bytes, level: int, min_saving: float) -> bool:
    if len(sample) < MIN_COMPRESS_SIZE:
        return False
    return len(_compressor(level).compress(sample)) <= len(sample) * (1.0 - min_saving)


def decode(encoding: Encoding, stored: bytes, size: int) -> bytes:
    """A packed object's content from its stored bytes; ``size`` is what its
    record says. Raises ``ZstdError`` for bytes that cannot be that content."""
    if encoding is Encoding.RAW:
        return stored
    if encoding is not Encoding.ZSTD:
        raise ZstdError(f"encoding {encoding.name.lower()} cannot be decoded from a pack")
    return decompress_frame(stored, size)


def compress_frame(block: bytes | memoryview, level: int) -> bytes:
    """One independent zstd frame (content size in its header)."""
    return _compressor(level).compress(block)


def max_content_size(stored_length: int) -> int:
    """The most content ``stored_length`` bytes of zstd frames can hold."""
    return stored_length * MAX_EXPANSION


def decompress_frame(frame: bytes | memoryview, size: int) -> bytes:
    """One frame's content, which its record says is ``size`` bytes.

    Nothing is allocated on the word of stored bytes alone: zstd allocates
    whatever a frame header claims (2^40 bytes in a crafted one), so the
    header must agree with the record, and the record with what the frame's
    length can hold, before any output buffer exists.
    """
    declared = zstandard.get_frame_parameters(frame).content_size
    if declared != zstandard.CONTENTSIZE_UNKNOWN and declared != size:
        raise ZstdError(f"its frame header says {declared} bytes, {size} recorded")
    if size > max_content_size(len(frame)):
        raise ZstdError(f"{len(frame)} compressed bytes cannot hold the {size} recorded")
    if declared == size and size <= ONE_SHOT_MAX:
        return _decompressor().decompress(frame)
    return _decompress_bounded(frame, size)


def _decompress_bounded(frame: bytes | memoryview, size: int) -> bytes:
    """Decompress piece by piece, so memory follows the content the frame
    really holds, and stop as soon as it holds more than ``size``."""
    out = bytearray()
    with _decompressor().stream_reader(frame) as reader:
        while piece := reader.read(STREAM_PIECE):
            out += piece
            if len(out) > size:
                raise ZstdError(f"frame holds more than the {size} bytes recorded")
    if len(out) != size:
        raise ZstdError(f"frame holds {len(out)} bytes, {size} recorded")
    return bytes(out)


ZstdError = zstandard.ZstdError
