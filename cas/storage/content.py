"""The content layer: what an object id's content is made of, and reading it.

An object is stored whole (a loose file, raw or compressed, or an entry in
a pack) or chunked (a chunk list naming whole objects, its chunks, in
order; docs/FORMAT.md §14). ``Contents.resolve`` turns an id into its
``Content``: the object's own record and its pieces, each a (stored
object, offset, length) of the content. Everything above storage that
needs to know what an object is made of (gc, usage, growth, verify,
repair) asks this layer instead of reading chunk lists itself, and every
read entry point of ``Store`` reads through ``Contents``.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import mmap
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..durable import read_upto
from ..errors import ObjectDamaged
from ..objectid import ObjectId, hash_bytes
from .chunklist import ChunkList, ChunkListError
from .crypto import PackCipher, Sealer, SealError
from .encoding import Encoding, ZstdError, decode
from .index import Index, IndexEntry
from .layout import Layout
from .pack import PackFormatError, parse_header
from .seekable import SeekTableError, iter_blocks, read_frame, read_seek_table
from .storedfile import SealedFile, StoredFile, open_stored, opened_bytes
from .workers import ordered_map

READ_BLOCK = 1 << 20
# A sealed raw file is read this much at a time (whole 1 MiB segments).
_SEALED_BLOCK = 4 << 20
PACK_HEADER_SIZE = 48   # a sealed pack's header and salt
_MAX_OPEN_PACKS = 64
# Chunk lists and seek tables kept: a model's tensors are read a few at a
# time from the same few files.
_CACHED_LISTS = 64


@dataclass(frozen=True, slots=True)
class Piece:
    """A stretch of an object's content: ``length`` bytes at ``offset`` of
    the content, held by the stored object ``oid`` (a chunk, or for an
    object stored whole, the object itself)."""
    oid: ObjectId
    offset: int
    length: int


@dataclass(frozen=True)
class Content:
    """What an id's content is made of."""
    entry: IndexEntry
    # (chunk id, length) in order for a chunked object; () for one stored whole.
    chunks: tuple[tuple[ObjectId, int], ...] = ()
    starts: tuple[int, ...] = ()

    @property
    def oid(self) -> ObjectId:
        return self.entry.oid

    @property
    def size(self) -> int:
        return self.entry.size

    @property
    def chunked(self) -> bool:
        return self.entry.chunked

    @property
    def chunk_ids(self) -> list[ObjectId]:
        """The chunks' ids in order; [] for an object stored whole."""
        return [c for c, _ in self.chunks]

    @property
    def pieces(self) -> list[Piece]:
        """The stored objects holding the content, with where each lies in it."""
        if not self.chunked:
            return [Piece(self.entry.oid, 0, self.entry.size)]
        return [Piece(c, s, n) for (c, n), s in zip(self.chunks, self.starts, strict=True)]


class Contents:
    """Resolves ids to their content and reads it, for one store.

    Holds the open pack files and the cached chunk lists and seek tables;
    ``index`` gives the store's current index (it is swapped by a rebuild).
    """

    def __init__(self, layout: Layout, index: Callable[[], Index]):
        self.layout = layout
        self._index = index
        self._packs: dict[ObjectId, tuple[int, int]] = {}   # open pack files: fd, size
        self._packs_lock = threading.Lock()
        self._lists: dict[ObjectId, Content] = {}
        self._frames: dict[ObjectId, list] = {}
        self._sealer = layout.names
        self._pack_ciphers: dict[ObjectId, PackCipher] = {}

    def close(self) -> None:
        with self._packs_lock:
            for fd, _ in self._packs.values():
                os.close(fd)
            self._packs.clear()

    def forget_cached(self) -> None:
        self._lists.clear()
        self._frames.clear()

    # -- what an object is made of ---------------------------------------

    def get(self, oid: ObjectId) -> Content | None:
        """The content of ``oid``, None when it is not indexed. A chunk list
        that cannot be read or is malformed raises ``ObjectDamaged`` naming
        the object."""
        entry = self._index().lookup(oid)
        return None if entry is None else self.resolve(entry)

    def resolve(self, entry: IndexEntry) -> Content:
        if not entry.chunked:
            return Content(entry)
        cached = self._lists.get(entry.oid)
        if cached is None or cached.entry != entry:
            chunks = self.chunk_list(entry).chunks
            starts, pos = [], 0
            for _, n in chunks:
                starts.append(pos)
                pos += n
            cached = Content(entry, chunks, tuple(starts))
            if len(self._lists) >= _CACHED_LISTS:
                self._lists.clear()
            self._lists[entry.oid] = cached
        return cached

    def chunk_list(self, entry: IndexEntry) -> ChunkList:
        """A chunked object's chunk list, read no further than its recorded length."""
        fd = self.open_file(self.layout.loose_path(entry.oid, entry.encoding), entry.oid)[0]
        try:
            data = read_upto(fd, entry.stored_length + 1)
        except MemoryError:
            # A list whose header claims millions of chunks, a sparse file
            # rebuilt into the index: damage to report, not a crash.
            raise ObjectDamaged(entry.oid.hex, f"its chunk list of {entry.stored_length} bytes "
                                               "does not fit in memory") from None
        finally:
            os.close(fd)
        if len(data) != entry.stored_length:
            raise ObjectDamaged(entry.oid.hex, f"its chunk list has {len(data)} bytes or more, "
                                               f"{entry.stored_length} recorded")
        try:
            chunks = ChunkList.from_json(opened_bytes(self.layout, entry, data))
        except (ChunkListError, SealError, RecursionError) as e:
            raise ObjectDamaged(entry.oid.hex, str(e) or "malformed chunk list") from None
        if chunks.oid != entry.oid or chunks.size != entry.size:
            raise ObjectDamaged(entry.oid.hex, "its chunk list belongs to another file")
        return chunks

    def chunk_entry(self, oid: ObjectId, length: int) -> IndexEntry:
        """The stored chunk a chunk list names with ``length`` bytes. Chunks
        are stored whole: a chunk that is itself chunked (a list naming
        itself, a loop, nesting) is damage, refused here so no read path can
        recurse on it. So is a listed length other than the chunk's recorded
        size: a read that trusted it would run past a raw chunk's end into
        its neighbour in the pack."""
        entry = self._index().lookup(oid)
        if entry is None:
            raise ObjectDamaged(oid.hex, "a chunk is missing from the store")
        if entry.chunked:
            raise ObjectDamaged(oid.hex, "a chunk list names a chunked object as a chunk "
                                         "(itself, or a loop); chunks are stored whole")
        if entry.size != length:
            raise ObjectDamaged(oid.hex, f"a chunk list lists {length} bytes for this chunk, "
                                         f"which has {entry.size}")
        return entry

    def raw_pieces(self, entry: IndexEntry) -> list[tuple[IndexEntry, int]] | None:
        """(object, length) pieces that make up the content, all raw on disk;
        None when any piece is compressed (or a chunk is missing)."""
        if entry.encoding is Encoding.RAW:
            return [(entry, entry.size)]
        if entry.encoding is not Encoding.CHUNKED:
            return None
        pieces = []
        lookup = self._index().lookup
        for chunk, length in self.resolve(entry).chunks:
            stored = lookup(chunk)
            # Anything else is read (and reported) the slow way.
            if stored is None or stored.encoding is not Encoding.RAW or stored.size != length \
                    or stored.stored_length != length:
                return None
            pieces.append((stored, length))
        return pieces

    # -- reading -----------------------------------------------------------

    def blocks(self, entry: IndexEntry, check_chunks: bool = False) -> Iterator[bytes]:
        """An object's content in blocks (not checked against its id), decoded on all cores."""
        if entry.pack is not None:
            yield self.packed_content(entry)
            return
        if entry.chunked:
            load = self.checked_chunk if check_chunks else self.chunk_content
            yield from ordered_map(load, self.resolve(entry).chunks, ahead=8)
            return
        stored = self.open_loose(entry)
        try:
            if entry.encoding.inner is Encoding.ZSTD:
                yield from iter_blocks(stored, read_seek_table(stored))
            elif isinstance(stored, SealedFile):
                # Segments opened on all cores, a block of several at a time.
                starts = range(0, stored.size, _SEALED_BLOCK)
                yield from ordered_map(lambda at: stored.pread(_SEALED_BLOCK, at), starts)
            else:
                yield from _plain_blocks(stored.fd)
        finally:
            os.close(stored.fd)

    def chunk_content(self, chunk: tuple[ObjectId, int]) -> bytes:
        oid, length = chunk
        entry = self.chunk_entry(oid, length)
        try:
            data = b"".join(self.blocks(entry))
        except ZstdError as e:
            raise ObjectDamaged(oid.hex, f"cannot be decompressed ({e})") from None
        except (SeekTableError, SealError) as e:
            raise ObjectDamaged(oid.hex, str(e)) from None
        if len(data) != length:
            raise ObjectDamaged(oid.hex, f"chunk has {len(data)} bytes, {length} listed")
        return data

    def checked_chunk(self, chunk: tuple[ObjectId, int]) -> bytes:
        """A chunk checked against its own id, so damage names the chunk, not only its file."""
        data = self.chunk_content(chunk)
        if hash_bytes(data) != chunk[0]:
            raise ObjectDamaged(chunk[0].hex, "content does not hash to its id")
        return data

    def read_into(self, entry: IndexEntry, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the content from ``offset`` (unchecked)."""
        if not len(view):
            return
        if entry.pack is not None:
            self._read_packed_into(entry, offset, view)
        elif entry.chunked:
            content = self.resolve(entry)
            i = bisect.bisect_right(content.starts, offset) - 1
            pos = 0
            while pos < len(view):
                chunk, length = content.chunks[i]
                inner = offset + pos - content.starts[i]
                take = min(length - inner, len(view) - pos)
                # Never chunked itself: this recursion is one level deep.
                self.read_into(self.chunk_entry(chunk, length), inner, view[pos:pos + take])
                pos += take
                i += 1
        else:
            self._read_loose_into(entry, offset, view)

    def _read_packed_into(self, entry: IndexEntry, offset: int, view: memoryview) -> None:
        assert entry.pack is not None
        if entry.encoding is Encoding.RAW:   # raw and unsealed: read in place
            if entry.size != entry.stored_length:
                # Reading by the size would run into the next object of the pack.
                raise ObjectDamaged(entry.oid.hex, f"its record says {entry.size} bytes "
                                                   f"stored raw in {entry.stored_length}")
            pread_exact(self.pack_file(entry.pack)[0], view, entry.offset + offset, entry.oid)
        else:
            view[:] = memoryview(self.packed_content(entry))[offset:offset + len(view)]

    def _read_loose_into(self, entry: IndexEntry, offset: int, view: memoryview) -> None:
        stored = self.open_loose(entry)
        try:
            if entry.encoding.inner is Encoding.RAW:
                if stored.readinto(view, offset) != len(view):
                    raise ObjectDamaged(entry.oid.hex, "its file is truncated")
                return
            pos = 0
            for frame in self._seek_table(entry.oid, stored):
                end = frame.content_offset + frame.content_size
                if end <= offset + pos:
                    continue
                data = read_frame(stored, frame)
                inner = offset + pos - frame.content_offset
                take = min(frame.content_size - inner, len(view) - pos)
                view[pos:pos + take] = memoryview(data)[inner:inner + take]
                pos += take
                if pos == len(view):
                    return
            raise ObjectDamaged(entry.oid.hex, f"its frames end before the {entry.size} bytes "
                                               "recorded")
        finally:
            os.close(stored.fd)

    def _seek_table(self, oid: ObjectId, stored: StoredFile) -> list:
        frames = self._frames.get(oid)
        if frames is None:
            frames = read_seek_table(stored)
            if len(self._frames) >= _CACHED_LISTS:
                self._frames.clear()
            self._frames[oid] = frames
        return frames

    def read_stored(self, entry: IndexEntry) -> bytes:
        """The bytes as stored (possibly compressed) of a packed object."""
        assert entry.pack is not None
        fd, size = self.pack_file(entry.pack)
        if entry.offset + entry.stored_length > size:
            # Checked before reading: a damaged index record must not make
            # pread allocate whatever length it claims.
            raise ObjectDamaged(entry.oid.hex, f"its record lies outside pack {entry.pack.short}")
        data = os.pread(fd, entry.stored_length, entry.offset)
        if len(data) != entry.stored_length:
            raise ObjectDamaged(entry.oid.hex, f"pack {entry.pack.short} is truncated")
        return data

    def packed_content(self, entry: IndexEntry) -> bytes:
        """A packed object's content, of the size its record says: a sealed
        entry opens to whatever length it was sealed at, which a damaged or
        crafted record need not match."""
        content = self.decode(entry, self.read_stored(entry))
        if len(content) != entry.size:
            raise ObjectDamaged(entry.oid.hex, f"its record says {entry.size} bytes, "
                                               f"its stored copy holds {len(content)}")
        return content

    def decode(self, entry: IndexEntry, stored: bytes) -> bytes:
        """A packed object's content from its stored bytes (opened first when sealed)."""
        if entry.encoding.sealed:
            stored = self.open_entry(entry, stored)
        try:
            return decode(entry.encoding.inner, stored, entry.size)
        except ZstdError as e:
            raise ObjectDamaged(entry.oid.hex, f"cannot be decompressed ({e})") from None

    def open_entry(self, entry: IndexEntry, stored: bytes) -> bytes:
        """A sealed pack entry's bytes as they were before sealing."""
        assert entry.pack is not None and isinstance(self._sealer, Sealer)
        context = Sealer.entry_context(self._sealer.name(entry.oid), entry.encoding)
        try:
            return self.pack_cipher(entry).open_entry(entry.offset, context, stored)
        except SealError as e:
            raise ObjectDamaged(entry.oid.hex, f"{e} (pack {entry.pack.short})") from None

    def pack_cipher(self, entry: IndexEntry) -> PackCipher:
        """The cipher of the sealed pack holding ``entry``, from the salt in
        its header (read with pread: the pack's fd is shared by threads)."""
        pack = entry.pack
        assert pack is not None
        cipher = self._pack_ciphers.get(pack)
        if cipher is None:
            fd, _size = self.pack_file(pack)
            try:
                _header, cipher = parse_header(os.pread(fd, PACK_HEADER_SIZE, 0), self._sealer)
            except PackFormatError as e:
                raise ObjectDamaged(entry.oid.hex, f"its pack file {pack.short} {e}") from None
            if cipher is None:
                raise ObjectDamaged(entry.oid.hex, f"its pack file {pack.short} is not sealed")
            self._pack_ciphers[pack] = cipher
        return cipher

    def open_loose(self, entry: IndexEntry) -> StoredFile:
        """A loose object's file, read as its stored bytes (the caller closes ``.fd``)."""
        fd, size = self.open_file(self.layout.loose_path(entry.oid, entry.encoding), entry.oid)
        try:
            return open_stored(fd, size, self.layout, entry.oid, entry.encoding)
        except SealError as e:
            os.close(fd)
            raise ObjectDamaged(entry.oid.hex, str(e)) from None

    @contextlib.contextmanager
    def mapped(self, entry: IndexEntry, length: int) -> Iterator[memoryview]:
        """The first ``length`` stored bytes of a raw object, mapped read-only.

        The file's size is checked first: touching a mapping past the end of
        a truncated file would kill the process (SIGBUS) instead of raising.
        """
        if entry.pack is not None:
            path, offset = self.layout.pack_path(entry.pack), entry.offset
        else:
            path, offset = self.layout.loose_path(entry.oid, entry.encoding), 0
        fd, size = self.open_file(path, entry.oid)
        try:
            if size < offset + length:
                raise ObjectDamaged(entry.oid.hex, f"its file {path} is truncated")
            if length == 0:
                yield memoryview(b"")
                return
            aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
            mapping = mmap.mmap(fd, offset - aligned + length, offset=aligned,
                                prot=mmap.PROT_READ,
                                flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        finally:
            os.close(fd)
        view = memoryview(mapping)[offset - aligned:]
        try:
            yield view
        finally:
            view.release()
            try:
                mapping.close()
            except BufferError:
                pass  # windows still queued: the mapping goes when they do

    # -- files ---------------------------------------------------------------

    def open_file(self, path: str, oid: ObjectId, what: str = "its file") -> tuple[int, int]:
        """(fd, size) of an object or pack file: missing, a link, or anything
        but a regular file (a FIFO would hang a read, /dev/zero never end) is damage."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectDamaged(oid.hex, f"{what} {path} is missing") from None
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise ObjectDamaged(oid.hex, f"{what} {path} is a symbolic link") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ObjectDamaged(oid.hex, f"{what} {path} is not a regular file")
        return fd, st.st_size

    def pack_file(self, pack: ObjectId) -> tuple[int, int]:
        """An open pack file's (fd, size), kept open for the next read."""
        with self._packs_lock:
            opened = self._packs.get(pack)
            if opened is None:
                opened = self.open_file(self.layout.pack_path(pack), pack, "pack file")
                if len(self._packs) >= _MAX_OPEN_PACKS:
                    old_pack, (old_fd, _) = next(iter(self._packs.items()))
                    del self._packs[old_pack]
                    os.close(old_fd)
                self._packs[pack] = opened
            return opened


def _plain_blocks(fd: int) -> Iterator[bytes]:
    """A plain file's bytes to its end (a file longer than recorded shows as such)."""
    offset = 0
    while block := os.pread(fd, READ_BLOCK, offset):
        offset += len(block)
        yield block


def pread_exact(fd: int, view: memoryview, offset: int, oid: ObjectId) -> None:
    while len(view):
        got = os.preadv(fd, [view], offset)
        if got <= 0:
            raise ObjectDamaged(oid.hex, "its file is truncated")
        view, offset = view[got:], offset + got
