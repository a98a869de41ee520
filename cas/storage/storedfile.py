"""Reading and writing the bytes of a loose object file, sealed or not.

A loose object's *stored bytes* are its content (raw), zstd frames and a
seek table, or a chunk list. In a plain store the file holds them as they
are; in an encrypted store it holds them sealed (docs/FORMAT.md §18.5).
Readers see the stored bytes through one interface, ``pread`` and
``readinto`` at offsets of the stored bytes, whichever the file is, so the
decoding code above (seek tables, chunk lists) is the same for both.
"""

from __future__ import annotations

import os

from ..durable import read_bounded, start_writeback, write_all
from ..objectid import ObjectId
from .crypto import FILE_HEADER_SIZE, SEGMENT, TAG_SIZE, FileCipher, Sealer, SealError, plain_size
from .encoding import Encoding
from .index import IndexEntry
from .layout import Layout


class PlainFile:
    """A file whose bytes are the stored bytes."""

    def __init__(self, fd: int, size: int):
        self.fd = fd
        self.size = size

    def pread(self, length: int, offset: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def readinto(self, view: memoryview, offset: int) -> int:
        """Fill ``view`` from ``offset``; returns how much could be read."""
        done = 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got <= 0:
                break
            done += got
        return done


class SealedFile:
    """A sealed file read as its stored bytes: each segment is read and
    opened when first needed; the last one opened is kept for the next
    small read (a seek table's footer, then the table)."""

    def __init__(self, fd: int, file_size: int, cipher: FileCipher):
        self.fd = fd
        self.size = plain_size(file_size)
        self._cipher = cipher
        self._segments = max(1, -(-self.size // SEGMENT))
        self._cached: tuple[int, bytes] | None = None

    def _segment_span(self, number: int) -> tuple[int, int]:
        """(file offset, plaintext length) of a segment."""
        length = min(SEGMENT, self.size - number * SEGMENT)
        return FILE_HEADER_SIZE + number * (SEGMENT + TAG_SIZE), length

    def _read_sealed(self, number: int) -> tuple[bytes, int]:
        at, length = self._segment_span(number)
        sealed = os.pread(self.fd, length + TAG_SIZE, at)
        if len(sealed) != length + TAG_SIZE:
            raise SealError(f"segment {number} is cut short")
        return sealed, length

    def _open_into(self, number: int, out: memoryview) -> None:
        sealed, _length = self._read_sealed(number)
        self._cipher.open_segment_into(number, number == self._segments - 1, sealed, out)

    def _segment(self, number: int) -> bytes:
        cached = self._cached   # read once: other threads may replace it
        if cached is not None and cached[0] == number:
            return cached[1]
        sealed, _length = self._read_sealed(number)
        data = self._cipher.open_segment(number, number == self._segments - 1, sealed)
        self._cached = (number, data)
        return data

    def pread(self, length: int, offset: int) -> bytes:
        out = bytearray(max(0, min(length, self.size - offset)))
        got = self.readinto(memoryview(out), offset)
        return bytes(out[:got])

    def readinto(self, view: memoryview, offset: int) -> int:
        """Fill ``view`` from ``offset`` of the stored bytes: whole segments
        are opened straight into it, partial ones through a copy."""
        end = min(self.size, offset + len(view))
        pos = offset
        while pos < end:
            number, inner = divmod(pos, SEGMENT)
            _at, length = self._segment_span(number)
            take = min(length - inner, end - pos)
            out = view[pos - offset:pos - offset + take]
            if inner == 0 and take == length:
                self._open_into(number, out)
            else:
                out[:] = memoryview(self._segment(number))[inner:inner + take]
            pos += take
        return max(0, end - offset)


StoredFile = PlainFile | SealedFile


class PlainSink:
    """Writes stored bytes to a new file as they are, starting its writeback
    as it goes (so the fsync at the end has little left to do)."""

    def __init__(self, fd: int):
        self._fd = fd
        self.length = 0

    def write(self, data: bytes | memoryview) -> None:
        write_all(self._fd, data)
        start_writeback(self._fd, self.length, len(data))
        self.length += len(data)


class SealedSink:
    """Writes stored bytes to a new file as a sealed file: segments are
    sealed as they fill; the header, bound to what the file holds, is
    written at the end (when a streamed object's id is known)."""

    def __init__(self, fd: int, cipher: FileCipher):
        self._fd = fd
        self._cipher = cipher
        self._pending = bytearray()
        self._number = 0
        self.length = 0          # stored bytes taken
        self.file_size = FILE_HEADER_SIZE
        write_all(fd, bytes(FILE_HEADER_SIZE))

    def write(self, data: bytes | memoryview) -> None:
        self.length += len(data)
        self._pending += data
        # The segment holding the end is kept back: only finish knows it is the last.
        full = (len(self._pending) - 1) // SEGMENT
        if full <= 0:
            return
        view = memoryview(self._pending)
        sealed = [self._cipher.seal_segment(self._number + i, False, view[i * SEGMENT:(i + 1) * SEGMENT])
                  for i in range(full)]
        view.release()
        self._number += full
        del self._pending[:full * SEGMENT]
        for part in sealed:
            write_all(self._fd, part)
            start_writeback(self._fd, self.file_size, len(part))
            self.file_size += len(part)

    def finish(self, context: bytes) -> int:
        """Seal the last segment and write the header; returns the file's size."""
        last = self._cipher.seal_segment(self._number, True, self._pending)
        write_all(self._fd, last)
        self.file_size += len(last)
        os.pwrite(self._fd, self._cipher.header(context), 0)
        self._pending = bytearray()
        return self.file_size


def read_loose_bytes(layout: Layout, entry: IndexEntry) -> bytes:
    """The whole stored bytes of a small loose object file (a chunk list),
    read no further than its recorded length and opened when sealed.
    Raises OSError, or SealError for a sealed file that does not open."""
    return opened_bytes(layout, entry, read_bounded(layout.loose_path(entry.oid, entry.encoding),
                                                    entry.stored_length))


def opened_bytes(layout: Layout, entry: IndexEntry, data: bytes) -> bytes:
    """A whole loose object file's stored bytes: ``data`` itself, or opened
    when sealed (SealError for a file that is not this object's)."""
    if not entry.encoding.sealed:
        return data
    assert isinstance(layout.names, Sealer)
    return layout.names.open_bytes(Sealer.object_context(layout.name_of(entry.oid), entry.encoding), data)


def open_stored(fd: int, size: int, layout: Layout, oid: ObjectId, encoding: Encoding) -> StoredFile:
    """A loose object file open as ``fd`` (``size`` bytes), read as its stored
    bytes; SealError for a sealed file that is not this object's."""
    if not encoding.sealed:
        return PlainFile(fd, size)
    assert isinstance(layout.names, Sealer)
    context = Sealer.object_context(layout.name_of(oid), encoding)
    return SealedFile(fd, size, layout.names.file_cipher(os.pread(fd, FILE_HEADER_SIZE, 0), context))
