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
    # 2 and 3 are reserved for AEAD-encrypted raw and zstd objects.
    CHUNKED = 4   # stored as a chunk list: the content is the chunks in order

    @property
    def suffix(self) -> str:
        return {Encoding.RAW: "", Encoding.ZSTD: ".zst", Encoding.CHUNKED: ".chunks"}[self]


# Below this size zstd's frame overhead eats the saving.
MIN_COMPRESS_SIZE = 64

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
    if encoding is Encoding.RAW:
        return stored
    return _decompressor().decompress(stored, max_output_size=size)


def compress_frame(block: bytes | memoryview, level: int) -> bytes:
    """One independent zstd frame (content size in its header)."""
    return _compressor(level).compress(block)


def decompress_frame(frame: bytes | memoryview, size: int) -> bytes:
    return _decompressor().decompress(frame, max_output_size=size)


ZstdError = zstandard.ZstdError
