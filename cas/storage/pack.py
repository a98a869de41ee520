"""Pack files: many small objects in one file, fsynced once.

Layout (all integers little-endian)::

    header   b"CASPACK\\0"  u32 version=1  u32 reserved=0          16 bytes
    blobs    the stored bytes of each entry, back to back
    trailer  one 64-byte record per entry:
             id[32] u8 encoding  7 zero bytes  u64 offset  u64 stored_length  u64 size
    footer   u64 trailer_offset  u64 entry_count  trailer_hash[32]  b"CASPACK\\0"  56 bytes

``trailer_hash`` is the BLAKE3 of the trailer records, so a damaged trailer
is told apart from a damaged blob. An encrypted store writes version 2
(docs/FORMAT.md §18.6): a 32-byte salt follows the header, every blob is
sealed (AES-256-GCM, nonce from its offset) and the trailer is sealed whole,
``trailer_hash`` then hashing the sealed trailer. The pack's file name is the BLAKE3 of the
whole file. A pack describes itself, which is what lets the index be
rebuilt from the packs alone.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass

from ..durable import READ_ONLY_FILE, open_temp, remove_quietly, start_writeback, write_all
from ..objectid import DIGEST_SIZE, Hasher, ObjectId, hash_bytes
from .crypto import PLAIN, SALT_SIZE, TAG_SIZE, PackCipher, PlainSealer, Sealer, SealError
from .encoding import Encoding, max_content_size

MAGIC = b"CASPACK\0"
VERSION = 1
SEALED_VERSION = 2
HEADER = struct.Struct("<8sII")
RECORD = struct.Struct("<32sB7xQQQ")
FOOTER = struct.Struct("<QQ32s8s")


class PackFormatError(Exception):
    """A pack file does not follow the format; the message says where."""


@dataclass(frozen=True, slots=True)
class PackEntry:
    oid: ObjectId
    encoding: Encoding
    offset: int
    stored_length: int
    size: int


# Small objects gather in memory up to this before one write to the pack.
PACK_WRITE_BUFFER = 1 << 20
WRITEBACK_STEP = 4 << 20


class PackWriter:
    """Appends objects to a temp pack file; ``finish`` seals and fsyncs it."""

    def __init__(self, tmp_dir: str, mode: int = READ_ONLY_FILE,
                 sealer: Sealer | PlainSealer = PLAIN):
        self.temp_path, self._fd = open_temp(tmp_dir, "pack", mode)
        self._sealer = sealer
        self._hasher = Hasher()
        self._offset = 0
        # Small objects are gathered and written a megabyte at a time: a
        # write per object cost a system call each, and a file event each
        # for a watcher of a tree that holds its own store.
        self._buffer = bytearray()
        self._failure: OSError | None = None
        self._written = 0   # bytes handed to the kernel
        self._flushed = 0   # of those, bytes whose writeback was started
        self.entries: list[PackEntry] = []
        self._cipher: PackCipher | None = None
        if isinstance(sealer, Sealer):
            salt = os.urandom(SALT_SIZE)
            self._cipher = sealer.pack_cipher(salt)
            self._header = HEADER.pack(MAGIC, SEALED_VERSION, 0) + salt
        else:
            self._header = HEADER.pack(MAGIC, VERSION, 0)
        self._write(self._header)

    @property
    def size(self) -> int:
        return self._offset

    def _write(self, data: bytes | memoryview) -> None:
        if self._failure is not None:
            # The file no longer matches what was hashed: never append to it.
            raise OSError(self._failure.errno, f"pack write failed earlier: {self._failure.strerror}")
        self._hasher.update(data)
        self._offset += len(data)
        if len(self._buffer) + len(data) <= PACK_WRITE_BUFFER:
            self._buffer += data
            return
        self._flush()
        if len(data) >= PACK_WRITE_BUFFER:
            self._write_out(data)
        else:
            self._buffer += data

    def _flush(self) -> None:
        if self._buffer:
            self._write_out(self._buffer)
            self._buffer.clear()

    def _write_out(self, data) -> None:
        try:
            write_all(self._fd, data)
        except OSError as e:
            self._failure = e
            raise
        self._written += len(data)
        if self._written - self._flushed >= WRITEBACK_STEP:
            start_writeback(self._fd, self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def add(self, oid: ObjectId, encoding: Encoding, stored: bytes, size: int) -> PackEntry:
        """Append an object's stored bytes (sealed here in an encrypted store)."""
        if self._cipher is not None:
            assert isinstance(self._sealer, Sealer)
            encoding = encoding.sealed_as(True)
            context = Sealer.entry_context(self._sealer.name(oid), encoding)
            stored = self._cipher.seal_entry(self._offset, context, stored)
        entry = PackEntry(oid, encoding, self._offset, len(stored), size)
        self._write(stored)
        self.entries.append(entry)
        return entry

    def finish(self) -> ObjectId:
        """Write the trailer and fsync; return the pack's id (hash of the file)."""
        trailer_offset = self._offset
        records = b"".join(
            RECORD.pack(e.oid.digest, e.encoding, e.offset, e.stored_length, e.size)
            for e in self.entries
        )
        if self._cipher is not None:
            records = self._cipher.seal_trailer(trailer_offset, self._header, records)
        self._write(records)
        self._write(
            FOOTER.pack(trailer_offset, len(self.entries), hash_bytes(records).digest, MAGIC)
        )
        self._flush()
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        return self._hasher.object_id()

    def abandon(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        remove_quietly(self.temp_path)


def read_entries(path: str, sealer: Sealer | PlainSealer = PLAIN) -> list[PackEntry]:
    """Parse a pack's trailer, checking that it is whole and consistent.

    Every length is checked against the file's size before anything is read
    by it, so a damaged or crafted footer costs at most the file's size. A
    sealed pack (version 2) needs the store's keys to be read at all.
    """
    with _open_pack(path) as f:
        file_size = os.fstat(f.fileno()).st_size
        if file_size < HEADER.size + FOOTER.size:
            raise PackFormatError("too short to be a pack")
        header, cipher = read_header(f, sealer)
        f.seek(file_size - FOOTER.size)
        trailer_offset, count, trailer_hash, end_magic = FOOTER.unpack(f.read(FOOTER.size))
        if end_magic != MAGIC:
            raise PackFormatError("bad footer magic (truncated pack?)")
        sealed_extra = TAG_SIZE if cipher is not None else 0
        if trailer_offset < len(header) or \
                trailer_offset + count * RECORD.size + sealed_extra != file_size - FOOTER.size:
            raise PackFormatError("footer does not match the file size")
        f.seek(trailer_offset)
        records = f.read(count * RECORD.size + sealed_extra)
    if hash_bytes(records).digest != trailer_hash:
        raise PackFormatError("trailer checksum mismatch")
    if cipher is not None:
        try:
            records = cipher.open_trailer(trailer_offset, header, records)
        except SealError as e:
            raise PackFormatError(str(e)) from None
    return [_entry(records, i, trailer_offset, len(header)) for i in range(count)]


def read_header(f, sealer: Sealer | PlainSealer) -> tuple[bytes, PackCipher | None]:
    """A pack's header (with its salt when sealed) and its cipher, read from
    the start of ``f``; refused when the pack and the store disagree on sealing."""
    return parse_header(f.read(HEADER.size + SALT_SIZE), sealer)


def parse_header(head: bytes, sealer: Sealer | PlainSealer) -> tuple[bytes, PackCipher | None]:
    """The header of a pack from its first 48 bytes (fewer for a short file),
    with its cipher when sealed."""
    if len(head) < HEADER.size:
        raise PackFormatError("too short to be a pack")
    magic, version, _ = HEADER.unpack_from(head)
    if magic != MAGIC:
        raise PackFormatError("bad header magic")
    if version == SEALED_VERSION and isinstance(sealer, Sealer):
        if len(head) < HEADER.size + SALT_SIZE:
            raise PackFormatError("too short for a sealed pack's header")
        header = head[:HEADER.size + SALT_SIZE]
        return header, sealer.pack_cipher(header[HEADER.size:])
    if version == SEALED_VERSION:
        raise PackFormatError("is sealed (version 2), but this store is not encrypted")
    if version != VERSION:
        raise PackFormatError(f"unknown pack version {version}")
    if isinstance(sealer, Sealer):
        raise PackFormatError("is not sealed, but this store is encrypted")
    return head[:HEADER.size], None


def _open_pack(path: str):
    """The pack file, only if it is a regular file: never a FIFO (a read
    would wait forever) or a device such as /dev/zero."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PackFormatError("is a symbolic link, not a pack file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PackFormatError("is not a regular file")
    return os.fdopen(fd, "rb")


_PACKED = {False: (Encoding.RAW, Encoding.ZSTD), True: (Encoding.SEALED_RAW, Encoding.SEALED_ZSTD)}


def _entry(records: bytes, i: int, trailer_offset: int, header_size: int) -> PackEntry:
    digest, enc, offset, stored_length, size = RECORD.unpack_from(records, i * RECORD.size)
    if offset < header_size or offset + stored_length > trailer_offset:
        raise PackFormatError(f"entry {i} lies outside the blob area")
    try:
        encoding = Encoding(enc)
    except ValueError:
        raise PackFormatError(f"entry {i} has unknown encoding {enc}") from None
    sealed = header_size > HEADER.size
    if encoding not in _PACKED[sealed]:
        raise PackFormatError(f"entry {i} has encoding {encoding.name.lower()}, never packed "
                              f"in a {'sealed' if sealed else 'plain'} pack")
    if sealed:
        if stored_length < TAG_SIZE:
            raise PackFormatError(f"entry {i} is too short to be sealed")
        stored_length -= TAG_SIZE   # what the checks below are about: the bytes inside
    if encoding.inner is Encoding.RAW and size != stored_length:
        raise PackFormatError(f"entry {i} is raw but records {size} bytes in {stored_length}")
    if encoding.inner is Encoding.ZSTD and size > max_content_size(stored_length):
        raise PackFormatError(f"entry {i} records {size} bytes, more than its "
                              f"{stored_length} compressed bytes can hold")
    return PackEntry(ObjectId(digest), encoding, offset, stored_length + (TAG_SIZE if sealed else 0), size)


assert RECORD.size == 64 and FOOTER.size == 56 and DIGEST_SIZE == 32
