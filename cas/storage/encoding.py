"""How an object's bytes are stored: raw, or as one zstd frame.

This is the only module that imports ``zstandard``. A compressed object is
a standard zstd frame with the content size in its header, so the ``zstd``
command line tool decompresses it, and an index rebuild can learn its size
without decompressing.
"""

from __future__ import annotations

import enum
import threading
from typing import BinaryIO, Iterator

import zstandard


class Encoding(enum.IntEnum):
    RAW = 0
    ZSTD = 1
    # 2 and 3 are reserved for AEAD-encrypted raw and zstd objects.

    @property
    def suffix(self) -> str:
        return ".zst" if self is Encoding.ZSTD else ""


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


def frame_content_size(head: bytes) -> int:
    """The content size recorded in a zstd frame header, or -1 if absent."""
    params = zstandard.get_frame_parameters(head)
    size = params.content_size
    return -1 if size == zstandard.CONTENTSIZE_UNKNOWN else size


class StreamCompressor:
    """Compresses a large object block by block into a file descriptor."""

    def __init__(self, level: int, size: int, threads: int = 0):
        params = zstandard.ZstdCompressor(level=level, write_content_size=True, threads=threads)
        self._obj = params.compressobj(size=size)

    def compress(self, block: bytes | memoryview) -> bytes:
        return self._obj.compress(block)

    def flush(self) -> bytes:
        return self._obj.flush()


def decompressed_blocks(f: BinaryIO, block_size: int = 1 << 20) -> Iterator[bytes]:
    reader = _decompressor().stream_reader(f, read_size=block_size, closefd=False)
    while True:
        block = reader.read(block_size)
        if not block:
            return
        yield block


def open_decompressed(f: BinaryIO) -> BinaryIO:
    return zstandard.ZstdDecompressor().stream_reader(f, read_size=1 << 20, closefd=True)


ZstdError = zstandard.ZstdError
