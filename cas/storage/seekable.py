"""Large compressed objects: independent zstd frames plus a seek table.

A compressed loose object is a sequence of zstd frames, each holding one
block (4 MiB) of the content, followed by a seek table in the zstd seekable
format (zstd's ``contrib/seekable_format``): a skippable frame that the
``zstd`` tool ignores when decompressing. The table lets readers decompress
blocks on several cores, jump to any offset (tensors inside model weights),
and tells an index rebuild the content size without decompressing.

Seek table layout (little-endian)::

    u32 0x184D2A5E            skippable frame magic
    u32 8 * N + 9             size of what follows
    N x (u32 compressed size, u32 decompressed size)
    u32 N                     number of frames
    u8  0                     descriptor: no per-frame checksums
    u32 0x8F92EAB1            seekable magic
"""

from __future__ import annotations

import bisect
import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from .encoding import ZstdError, decompress_frame, max_content_size
from .storedfile import PlainFile, StoredFile
from .workers import ordered_map

SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
_HEADER = struct.Struct("<II")
_ENTRY = struct.Struct("<II")
_FOOTER = struct.Struct("<IBI")
_RESERVED_BITS = 0x7C   # descriptor bits 2-6: zero in every version of the format


class SeekTableError(ValueError):
    """The object does not end with a valid seek table."""


@dataclass(frozen=True, slots=True)
class Frame:
    offset: int            # in the stored file
    length: int            # compressed length
    content_offset: int
    content_size: int


def seek_table(frames: list[tuple[int, int]]) -> bytes:
    """The table for frames given as (compressed size, content size) pairs."""
    body = b"".join(_ENTRY.pack(c, d) for c, d in frames)
    footer = _FOOTER.pack(len(frames), 0, SEEKABLE_MAGIC)
    return _HEADER.pack(SKIPPABLE_MAGIC, len(body) + len(footer)) + body + footer


def _stored(src: int | StoredFile) -> StoredFile:
    """The stored bytes of an object file given as an fd (a plain file) or already opened."""
    return PlainFile(src, os.fstat(src).st_size) if isinstance(src, int) else src


def read_seek_table(src: int | StoredFile) -> list[Frame]:
    """The frames of a compressed loose object, from the table its stored bytes end with."""
    f = _stored(src)
    file_size = f.size
    if file_size < _HEADER.size + _FOOTER.size:
        raise SeekTableError("too short for a seek table")
    count, descriptor, magic = _FOOTER.unpack(f.pread(_FOOTER.size, file_size - _FOOTER.size))
    if magic != SEEKABLE_MAGIC:
        raise SeekTableError("no seek table at the end")
    entry_size = _ENTRY.size + (4 if descriptor & 0x80 else 0)
    table_size = _HEADER.size + count * entry_size + _FOOTER.size
    if table_size > file_size:
        raise SeekTableError("seek table larger than the file")
    table = f.pread(table_size, file_size - table_size)
    skippable, length = _HEADER.unpack_from(table)
    if skippable != SKIPPABLE_MAGIC or length != table_size - _HEADER.size:
        raise SeekTableError("bad seek table header")
    if descriptor & _RESERVED_BITS:
        raise SeekTableError(f"seek table descriptor {descriptor:#04x} sets reserved bits")
    frames = []
    offset = content = 0
    for i in range(count):
        c, d = _ENTRY.unpack_from(table, _HEADER.size + i * entry_size)
        # Checked here, once per frame, so no reader sizes a buffer by a
        # content size its frame could never hold.
        if c == 0 or d > max_content_size(c):
            raise SeekTableError(f"frame {i} of the seek table cannot hold {d} bytes in {c}")
        frames.append(Frame(offset, c, content, d))
        offset += c
        content += d
    if offset != file_size - table_size:
        raise SeekTableError("frame sizes do not add up to the file size")
    return frames


def content_size(frames: list[Frame]) -> int:
    return frames[-1].content_offset + frames[-1].content_size if frames else 0


def read_frame(src: int | StoredFile, frame: Frame) -> bytes:
    data = _stored(src).pread(frame.length, frame.offset)
    if len(data) != frame.length:
        raise ZstdError("object file is truncated")
    out = decompress_frame(data, frame.content_size)
    if len(out) != frame.content_size:
        raise ZstdError(f"frame at {frame.offset} holds {len(out)} bytes, {frame.content_size} recorded")
    return out


def iter_blocks(src: int | StoredFile, frames: list[Frame]) -> Iterator[bytes]:
    """The content, block by block, decompressed on all cores."""
    f = _stored(src)
    return ordered_map(lambda frame: read_frame(f, frame), frames)


class BlockReader(io.RawIOBase):
    """A read-only, seekable file object over content held in consecutive blocks.

    ``load(i)`` returns block i's bytes; the block being read is cached.
    """

    def __init__(self, sizes: list[int], load, on_close=None):
        self._starts = []
        pos = 0
        for n in sizes:
            self._starts.append(pos)
            pos += n
        self._size = pos
        self._load = load
        self._on_close = on_close
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf) -> int:
        if self._pos >= self._size:
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1
        if self._cached is None or self._cached[0] != i:
            self._cached = (i, self._load(i))
        data = self._cached[1]
        start = self._pos - self._starts[i]
        n = min(len(buf), len(data) - start)
        buf[:n] = data[start:start + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed and self._on_close is not None:
            self._on_close()
        super().close()


def seekable_reader(f: StoredFile, on_close) -> BlockReader:
    """A seekable reader over a compressed loose object file."""
    frames = read_seek_table(f)
    return BlockReader([fr.content_size for fr in frames], lambda i: read_frame(f, frames[i]),
                       on_close)
