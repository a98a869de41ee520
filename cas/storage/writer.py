"""Writing objects: small ones into packs, large ones into files of their own.

Ordering rules (see docs/FORMAT.md, "Write ordering"):

1. an object's bytes are written to a temp file and fsynced;
2. the temp file is renamed to its final name and the receiving directory
   is fsynced;
3. only then is the object recorded in the index.

Small objects accumulate in one open pack and share its single fsync.
Large-object index entries wait for the next pack flush (or ``close``),
so their directory fsyncs are batched too. ``ObjectWriter`` is safe to use
from several threads; hashing, compression and file I/O release the GIL.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..durable import fsync_dirs, make_dir, open_temp, publish, remove_quietly
from ..errors import SourceError, StoreWriteError
from ..objectid import HEX_LENGTH, Hasher, ObjectId, hash_bytes, hash_fd, is_hex
from .chunking import GENERAL_CDC, LIVE_CDC, CdcParams, is_live, iter_chunks
from .chunklist import ChunkList, ChunkListError
from .config import StoreConfig
from .crypto import Sealer, SealError
from .encoding import Encoding, compress_frame, encode_small, worth_compressing
from .index import Index, IndexEntry, PackRecord
from .layout import Layout
from .pack import PackWriter
from .seekable import seek_table
from .storedfile import PlainSink, SealedSink, read_loose_bytes
from .workers import ordered_map

BATCH_BYTES = 1 << 20
# Large objects are read, and compressed as independent frames, in blocks of this size.
BLOCK = 4 << 20
# How many times a file that changes under us is re-read before giving up.
READ_ATTEMPTS = 3
# Under the store: one empty file per object id found damaged (FORMAT.md §"Damage record").
DAMAGED_DIR = "damaged"


def _stat_key(st: os.stat_result) -> tuple:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class DamageRecord:
    """The ids of stored objects known to be damaged, kept as empty files
    named by id in ``damaged/`` beneath the store.

    Verify, model verify and every checked read add to it; writers consult
    it on dedup hits so that content whose stored copy is damaged is written
    again, then clear the ids they replaced. One file per id: creating and
    unlinking a name are atomic, so concurrent processes lose no update and
    a crash leaves each id recorded or not. Outside the index on purpose: it
    survives ``cas index rebuild``. Empty (or absent) in the normal case, so
    loading it costs one failed or empty directory listing per writer.
    """

    def __init__(self, layout: Layout):
        self.path = os.path.join(layout.root, DAMAGED_DIR)
        self._modes = layout.modes
        # Files are named by the objects' names: ids stay hidden when encrypted.
        self._layout = layout

    def ids(self) -> set[ObjectId]:
        try:
            fd = self._open()
        except OSError:
            return set()  # none yet (the normal case), or not a directory we follow
        try:
            names = os.listdir(fd)
        except OSError:
            return set()
        finally:
            os.close(fd)
        return {self._layout.id_of(ObjectId.parse(n)) for n in names if len(n) == HEX_LENGTH and is_hex(n)}

    def add(self, oids) -> bool:
        """Record ids as damaged; False when the store cannot be written
        (a read-only store: the damage is found again by the next check)."""
        oids = list(oids)
        if not oids:
            return True
        try:
            make_dir(self.path, self._modes.directory)
            fd = self._open()
        except OSError:
            return False
        try:
            for oid in oids:
                os.close(os.open(self._layout.name_of(oid).hex, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                                 | os.O_CLOEXEC, self._modes.file, dir_fd=fd))
            os.fsync(fd)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def clear(self, oids) -> None:
        """Forget ids (replaced by good copies, or found sound)."""
        oids = list(oids)
        if not oids:
            return
        try:
            fd = self._open()
        except OSError:
            return
        try:
            for oid in oids:
                try:
                    os.unlink(self._layout.name_of(oid).hex, dir_fd=fd)
                except OSError:
                    pass  # not recorded, or a read-only store
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _open(self) -> int:
        """The record's directory, never through a link: names are created
        and removed relative to it, so nothing is written outside the store."""
        return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


@dataclass(frozen=True)
class Placement:
    """How new content is laid out; content already stored keeps its form.

    The default suits a data directory: large files cut into chunks, and
    everything compressed where zstd saves enough. Model weights are read
    far more often than they are written, at memory speed by MLX, so they
    may be kept ``raw`` (readable in place, no decoding) and ``whole`` (one
    loose object per file: a plain file other tools can open directly).
    """

    raw: bool = False
    whole: bool = False
    # Left unsealed in an encrypted store (a public model's weights, read
    # in place by other programs); packed objects are sealed all the same.
    public: bool = False


class ObjectWriter:
    def __init__(self, layout: Layout, config: StoreConfig, index: Index,
                 on_stored: Callable[[int, int], None] | None = None,
                 placement: Placement | None = None, replace: Iterable[ObjectId] = ()):
        """``replace``: ids to write again although the index has them (a
        repair's targets), besides those the damage record names."""
        self._layout = layout
        self._placement = placement or Placement()
        self._sealer = layout.names
        self._seal_loose = isinstance(layout.names, Sealer) and not self._placement.public
        self._config = config
        self._index = index
        self._lock = threading.Lock()
        self._deferred: list[_DeferredList] = []
        self._pack: PackWriter | None = None
        self._aborted = False
        # Written but not yet indexed: dedup within a batch must see them.
        self._pending: dict[ObjectId, IndexEntry] = {}
        # Chunk lists written but not yet indexed, with their chunk lengths:
        # a chunk equal to one of these files must be cut as that list is.
        self._lists: dict[ObjectId, tuple[int, ...]] = {}
        self._loose_ready: list[IndexEntry] = []
        self._dirs_to_sync: set[str] = set()
        self._on_stored = on_stored
        self._damage = DamageRecord(layout)
        # Stored copies to supersede on a dedup hit; empty in the normal
        # case, so a hit costs one test of an empty set.
        self._replace: set[ObjectId] = self._damage.ids() | set(replace)
        self._superseded: dict[ObjectId, IndexEntry] = {}
        self.replaced: list[ObjectId] = []
        self.new_objects = 0
        self.new_bytes = 0
        self.stored_bytes = 0

    # -- public API -----------------------------------------------------

    def put_bytes(self, data: bytes, level: int | None = None) -> ObjectId:
        """Store bytes; ``level`` overrides the zstd level chosen by size."""
        oid = hash_bytes(data)
        if not self._known(oid):
            self._store_whole(oid, data, level)
        return oid

    def put_file(self, path: str, follow_symlinks: bool = False,
                 expect: tuple[int, int] | None = None,
                 opener: Callable[[int], int] | None = None) -> tuple[ObjectId, os.stat_result]:
        """Store a regular file's content; returns its id and the stat it was read under.

        ``expect`` is the (st_dev, st_ino) a directory listing gave for the
        file: opening ``path`` must reach that very file, or a directory on
        the way was swapped (for a symbolic link, say) since it was listed.
        ``opener(flags)``, when given, opens the file instead of ``os.open(path)``
        (a scan opens it beneath its source's fd, following no link).
        Raises ``SourceError`` for a file that cannot be read, that is not
        the one expected, or that keeps changing while it is read.
        """
        for _ in range(READ_ATTEMPTS):
            try:
                result = self._try_put_file(path, follow_symlinks, expect, opener)
            except _SourceReadError as e:
                raise SourceError(path, _describe(e.error)) from None
            except OSError as e:
                raise SourceError(path, _describe(e)) from None
            if result is not None:
                return result
        raise SourceError(path, f"changed while being read ({READ_ATTEMPTS} attempts); not stored")

    def will_replace(self, oid: ObjectId) -> bool:
        """Whether a stored ``oid`` is to be written again (recorded damaged,
        or named by a repair) and is not yet: a scan's stat cache must then
        read the file rather than take the stored copy as good."""
        return bool(self._replace) and oid in self._replace

    def replacing(self) -> bool:
        """Whether any stored id is still to be written again. A scan then
        reads every file instead of trusting its stat cache: an unchanged
        file may hold the damaged chunk, and only a read finds which."""
        return bool(self._replace)

    def flush(self) -> None:
        """Make everything written so far durable and indexed."""
        with self._lock:
            pack, self._pack = self._pack, None
        self._seal(pack)

    def close(self) -> None:
        self.flush()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            pack, self._pack = self._pack, None
            deferred, self._deferred = self._deferred, []
            self._lists.clear()
        if pack is not None:
            pack.abandon()
        for d in deferred:
            remove_quietly(d.temp_path)

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or not issubclass(exc_type, (StoreWriteError, KeyboardInterrupt)):
            try:
                self.flush()
                return
            except StoreWriteError:
                if exc_type is None:
                    raise
        self.abort()

    # -- internals ------------------------------------------------------

    def _known(self, oid: ObjectId) -> bool:
        # _lists before the index: a list leaves it only once it is indexed.
        if oid in self._pending or oid in self._lists:
            return True
        entry = self._index.lookup(oid)
        return entry is not None and not (self._replace and self._supersedes(entry))

    def _supersedes(self, entry: IndexEntry) -> bool:
        """Whether a dedup hit on ``entry`` must be written again (its stored
        copy is damaged, or a repair asked for it); remembers the old copy."""
        if entry.oid not in self._replace:
            return False
        with self._lock:
            self._superseded.setdefault(entry.oid, entry)
        return True

    def _store_whole(self, oid: ObjectId, data: bytes, level: int | None) -> None:
        if len(data) >= self._config.loose_min_size or self._replaces_packed(oid):
            self._write_loose_from_bytes(oid, data)
        else:
            self._add_small(oid, data, level)

    def _replaces_packed(self, oid: ObjectId) -> bool:
        """A damaged packed copy is replaced by a loose object: a loose file
        is what an index rebuild prefers over a pack entry, and the damaged
        pack stays until 'cas repair' rewrites it."""
        if not self._superseded:
            return False
        with self._lock:
            was = self._superseded.get(oid)
        return was is not None and was.pack is not None

    def _chunk_entries(self, data: bytes, level: int) -> list[tuple[ObjectId, int]]:
        """A cut chunk's entries in a new chunk list: normally the chunk itself.

        Chunks are stored whole, and readers refuse a list naming a chunked
        object. A chunk whose bytes are a file already stored as chunks (a
        64 KiB page equal to a 64 KiB log) is therefore cut again where that
        file's own list cuts it: the new list stays flat and names the same
        chunks, each checked by its hash and stored only if missing. A list
        that cannot be read leaves the chunk one piece, stored whole, which
        the index then records in place of the damaged list.
        """
        oid = hash_bytes(data)
        if oid in self._pending:
            return [(oid, len(data))]
        lengths = self._lists.get(oid)
        if lengths is None:
            entry = self._index.lookup(oid)
            if entry is None or (self._replace and self._supersedes(entry)):
                self._store_whole(oid, data, level)
                return [(oid, len(data))]
            if not entry.chunked:
                return [(oid, len(data))]
            lengths = self._stored_lengths(entry) or (len(data),)
        entries, pos = [], 0
        for n in lengths:
            piece = data[pos:pos + n]
            pos += n
            piece_id = hash_bytes(piece)
            if not self._known_whole(piece_id):
                self._store_whole(piece_id, piece, level)
            entries.append((piece_id, n))
        return entries

    def _known_whole(self, oid: ObjectId) -> bool:
        """Stored (or pending) as a whole object, so a chunk list may name it."""
        if oid in self._pending:
            return True
        entry = self._index.lookup(oid)
        return entry is not None and not entry.chunked \
            and not (self._replace and self._supersedes(entry))

    def _stored_lengths(self, entry: IndexEntry) -> tuple[int, ...] | None:
        """The chunk lengths of an indexed chunk list; None if it cannot be read."""
        try:
            listed = ChunkList.from_json(read_loose_bytes(self._layout, entry))
        except (OSError, ChunkListError, SealError, RecursionError, MemoryError):
            return None
        if listed.oid != entry.oid or listed.size != entry.size or len(listed.chunks) < 2:
            return None
        return tuple(n for _, n in listed.chunks)

    def _try_put_file(self, path: str, follow: bool, expect: tuple[int, int] | None,
                      opener: Callable[[int], int] | None) -> tuple[ObjectId, os.stat_result] | None:
        # O_NONBLOCK: a FIFO swapped in for a file must not hang us.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        fd = opener(flags) if opener is not None else os.open(path, flags)
        try:
            before = os.fstat(fd)
            check_opened(path, before, expect)
            size = before.st_size
            if self._is_live(path, fd, size):
                oid = self._put_chunked(fd, size, before, LIVE_CDC)
            elif size < min(self._config.loose_min_size, self._config.chunk_min_size):
                data = _read_upto(fd, size + 1)
                if len(data) != size or _stat_key(os.fstat(fd)) != _stat_key(before):
                    return None
                return self.put_bytes(data), before
            elif size >= self._config.chunk_min_size and not self._placement.whole:
                oid = self._put_chunked(fd, size, before)
            else:
                oid = self._put_large(fd, size, before)
            return None if oid is None else (oid, before)
        finally:
            os.close(fd)

    def _is_live(self, path: str, fd: int, size: int) -> bool:
        """Below the chunking threshold, a database or log worth cutting anyway.
        Only files in that size band pay the check (a 100-byte read at most)."""
        config = self._config
        return (config.live_chunk_min_size <= size < config.chunk_min_size
                and not self._placement.whole and is_live(os.path.basename(path), fd, size))

    def _add_small(self, oid: ObjectId, data: bytes, level: int | None = None) -> None:
        comp = self._config.compression
        if level is None:
            level = comp.small_level
        if self._placement.raw:
            encoding, stored = Encoding.RAW, data
        else:
            encoding, stored = encode_small(data, level, comp.min_saving)
        full = None
        with self._lock:
            if oid in self._pending:
                return
            if self._aborted:
                raise StoreWriteError(self._layout.root, "the write was abandoned")
            if self._pack is None:
                self._pack = self._store_side(PackWriter, self._layout.tmp, self._layout.modes.object,
                                              self._sealer)
            try:
                packed = self._pack.add(oid, encoding, stored, len(data))
            except OSError as e:
                # Other workers must not append to a pack whose file is short.
                broken, self._pack = self._pack, None
                broken.abandon()
                for lost in broken.entries:
                    self._pending.pop(lost.oid, None)
                raise self._write_error(e) from None
            self._pending[oid] = IndexEntry(oid, packed.encoding, len(data), packed.stored_length)
            self._count(len(data), packed.stored_length)
            if self._pack.size >= self._config.pack_target_size:
                full, self._pack = self._pack, None
        if full is not None:
            self._seal(full)

    def _write_loose_from_bytes(self, oid: ObjectId, data: bytes) -> None:
        comp = self._config.compression
        encoding = Encoding.RAW
        stored: list[bytes | memoryview] = [data]
        if not self._placement.raw and \
                worth_compressing(data[:BLOCK], comp.large_level, comp.min_saving):
            view = memoryview(data)
            blocks = (view[i:i + BLOCK] for i in range(0, len(data), BLOCK))
            frames = list(ordered_map(lambda b: compress_frame(b, comp.large_level), blocks))
            sizes = [(len(f), min(BLOCK, len(data) - i * BLOCK)) for i, f in enumerate(frames)]
            encoding, stored = Encoding.ZSTD, [*frames, seek_table(sizes)]
        temp_path, encoding, length = self._write_temp("obj", stored, oid, encoding)
        self._publish_loose(oid, encoding, temp_path, len(data), length)

    def _write_temp(self, kind: str, parts: list, oid: ObjectId,
                    encoding: Encoding) -> tuple[str, Encoding, int]:
        """Write and fsync a temp file in the store holding ``oid``'s stored
        bytes ``parts`` (sealed in an encrypted store); returns its path,
        the encoding it was stored in and the file's size."""
        temp_path, fd = self._store_side(open_temp, self._layout.tmp, kind,
                                           self._layout.modes.object)
        try:
            sink = self._sink(fd)
            for part in parts:
                sink.write(part)
            encoding, length = self._finish(sink, oid, encoding)
            os.fsync(fd)
        except OSError as e:
            remove_quietly(temp_path)
            raise self._write_error(e) from None
        finally:
            os.close(fd)
        return temp_path, encoding, length

    def _sink(self, fd: int) -> SealedSink | PlainSink:
        """Where a loose object's stored bytes go: sealed in an encrypted store."""
        if self._seal_loose:
            assert isinstance(self._sealer, Sealer)
            return SealedSink(fd, self._sealer.new_file())
        return PlainSink(fd)

    def _finish(self, sink: SealedSink | PlainSink, oid: ObjectId,
                encoding: Encoding) -> tuple[Encoding, int]:
        """Close a sink for ``oid``: its final encoding and file size."""
        if isinstance(sink, PlainSink):
            return encoding, sink.length
        encoding = encoding.sealed_as(True)
        return encoding, sink.finish(Sealer.object_context(self._layout.name_of(oid), encoding))

    def _put_chunked(self, src: int, size: int, before: os.stat_result,
                     cdc: CdcParams = GENERAL_CDC) -> ObjectId | None:
        """Store a large file as chunks plus a chunk list named by the file's id;
        None when it changed while it was read."""
        def chunks() -> Iterator[bytes]:
            try:
                yield from iter_chunks(src, size, cdc)
            except OSError as e:
                raise _SourceReadError(e) from None

        oid, listed, read = self._store_chunks(chunks())
        if read != size or _stat_key(os.fstat(src)) != _stat_key(before):
            return None
        return self._list_chunks(oid, size, listed)

    def put_chunks(self, chunks: Iterable[bytes]) -> ObjectId:
        """Store content given as its chunks, in order: cut where they are cut
        (a copy from another store keeps its cuts, and never holds more than
        a few chunks in memory)."""
        oid, listed, size = self._store_chunks(iter(chunks))
        return self._list_chunks(oid, size, listed)

    def _store_chunks(self, chunks: Iterator[bytes]) -> tuple[ObjectId, list[tuple[ObjectId, int]], int]:
        """Chunks hashed, deduplicated, compressed and packed on all cores
        while the whole content's hash is computed in order: its id, the
        chunk list's entries and the bytes read."""
        hasher = Hasher()
        read = 0

        def hashed() -> Iterator[bytes]:
            nonlocal read
            for data in chunks:
                hasher.update(data)
                read += len(data)
                yield data

        # Chunks of large files get the fast level, as whole large objects
        # do: the same ratio on weights and pages, ~5% less on logs.
        level = self._config.compression.large_level

        def store_batch(batch: list[bytes]) -> list[tuple[ObjectId, int]]:
            return [entry for d in batch for entry in self._chunk_entries(d, level)]

        # Batches of about a megabyte: a task per 4 KiB SQLite page would
        # spend more on thread hand-offs than on the page.
        listed = [c for batch in ordered_map(store_batch, _batches(hashed(), BATCH_BYTES), ahead=4)
                  for c in batch]
        return hasher.object_id(), listed, read

    def _list_chunks(self, oid: ObjectId, size: int, listed: list[tuple[ObjectId, int]]) -> ObjectId:
        """The chunk list naming ``oid``'s chunks, written and left to be
        published by the seal that makes its last chunk durable, so no chunk
        list on disk ever names a chunk that a crash could lose."""
        # A file of one chunk is that chunk, stored whole under the file's id.
        if self._known(oid):
            return oid
        data = ChunkList(oid, size, tuple(listed)).encode(self._config.version)
        temp_path, encoding, length = self._write_temp("chunks", [data], oid, Encoding.CHUNKED)
        with self._lock:
            if oid in self._pending or oid in self._lists:
                # Another thread stored the same content meanwhile.
                remove_quietly(temp_path)
                return oid
            self._deferred.append(_DeferredList(oid, temp_path, size, length,
                                                frozenset(c for c, _ in listed), encoding))
            self._lists[oid] = tuple(n for _, n in listed)
            self._count(0, length)
        return oid

    def _put_large(self, src: int, size: int, before: os.stat_result) -> ObjectId | None:
        """Copy a large file into a loose object in one pass: read, hash, compress, write.

        One pass costs a wasted copy when the content turns out to be stored
        already, but saves a full second read and hash of every new file,
        which is the common case for large files (the snapshot stat cache
        keeps unchanged ones from being read at all). Returns None when the
        file changed while it was read.
        """
        comp = self._config.compression
        sample = os.pread(src, min(BLOCK, size), 0)
        encoding = Encoding.RAW if self._placement.raw else \
            Encoding.ZSTD if worth_compressing(sample, comp.large_level, comp.min_saving) \
            else Encoding.RAW
        return self._write_loose(_source_blocks(src), encoding, lambda length: length == size and
                                 _stat_key(os.fstat(src)) == _stat_key(before))

    def _write_loose(self, blocks: Iterator[bytes], encoding: Encoding,
                     unchanged: Callable[[int], bool] | None = None) -> ObjectId | None:
        """One loose object from a stream of blocks, in one pass: hashed and
        written (compressed when ``encoding`` says, sealed in an encrypted
        store) to a temp file, then published. None when ``unchanged(length)``
        says its source changed while it was read."""
        comp = self._config.compression
        temp_path, fd = self._store_side(open_temp, self._layout.tmp, "obj", self._layout.modes.object)
        published = False
        try:
            try:
                sink = self._sink(fd)
                oid, length = self._copy_blocks(blocks, sink, encoding, comp.large_level)
                if unchanged is not None and not unchanged(length):
                    return None
                if self._known(oid):
                    return oid
                encoding, stored_length = self._finish(sink, oid, encoding)
                os.fsync(fd)
            except OSError as e:
                raise self._write_error(e) from None
            os.close(fd)
            fd = -1
            self._publish_loose(oid, encoding, temp_path, length, stored_length)
            published = True
            return oid
        finally:
            if fd >= 0:
                os.close(fd)
            if not published:
                remove_quietly(temp_path)

    def _copy_blocks(self, blocks: Iterator[bytes], sink: SealedSink | PlainSink, encoding: Encoding,
                     level: int) -> tuple[ObjectId, int]:
        """Blocks hashed and written to the sink: raw, or compressed as
        independent frames on all cores then a seek table. Returns the id of
        the content and its length."""
        hasher = Hasher()
        read = 0

        def hashed() -> Iterator[bytes]:
            nonlocal read
            for block in blocks:
                read += len(block)
                hasher.update(block)
                yield block

        if encoding is Encoding.RAW:
            for block in hashed():
                sink.write(block)
            return hasher.object_id(), read
        sizes = []
        for frame, content in ordered_map(lambda b: (compress_frame(b, level), len(b)), hashed()):
            sink.write(frame)
            sizes.append((len(frame), content))
        sink.write(seek_table(sizes))
        return hasher.object_id(), read

    def put_stream(self, blocks: Iterable[bytes]) -> ObjectId:
        """Store content given as a stream of blocks as one loose object (a
        copy from another store, where there is no file to read): memory
        holds a few blocks, whatever the size."""
        stream = iter(blocks)
        first = next(stream, b"")
        comp = self._config.compression
        encoding = Encoding.ZSTD if not self._placement.raw and \
            worth_compressing(first[:BLOCK], comp.large_level, comp.min_saving) else Encoding.RAW
        oid = self._write_loose(itertools.chain([first], stream), encoding)
        assert oid is not None   # nothing to change under a stream
        return oid

    def _publish_loose(self, oid: ObjectId, encoding: Encoding, temp_path: str,
                       size: int, stored_length: int) -> None:
        # A chunk list adds no content of its own: its chunks were counted.
        new_content = 0 if encoding.inner is Encoding.CHUNKED else size
        final = self._layout.loose_path(oid, encoding)
        try:
            publish(temp_path, final)
        except OSError as e:
            remove_quietly(temp_path)
            raise self._write_error(e) from None
        entry = IndexEntry(oid, encoding, size, stored_length)
        with self._lock:
            self._pending[oid] = entry
            self._loose_ready.append(entry)
            self._dirs_to_sync.add(os.path.dirname(final))
            self._count(new_content, stored_length)

    def _seal(self, pack: PackWriter | None) -> None:
        """Finish a pack (if any), then index it and the loose objects ready so far."""
        entries: list[IndexEntry] = []
        packs: list[PackRecord] = []
        dirs: set[str] = set()
        if pack is not None and pack.entries:
            try:
                entries, record, directory = seal_pack(self._layout, pack)
            except OSError as e:
                raise self._write_error(e) from None
            dirs.add(directory)
            packs.append(record)
        elif pack is not None:
            pack.abandon()
        with self._lock:
            entries.extend(self._loose_ready)
            self._loose_ready = []
            dirs |= self._dirs_to_sync
            self._dirs_to_sync = set()
            ready, dropped = self._ready_lists({e.oid for e in entries})
        for d in dropped:
            remove_quietly(d.temp_path)
        entries.extend(self._publish_lists(ready, dirs))
        if not entries:
            return
        try:
            fsync_dirs(dirs)
        except OSError as e:
            raise self._write_error(e) from None
        self._index.record(entries, packs)
        with self._lock:
            for entry in entries:
                self._pending.pop(entry.oid, None)
            for d in ready:
                self._lists.pop(d.oid, None)
        self._settle_replaced(entries)

    def _publish_lists(self, ready: list[_DeferredList], dirs: set[str]) -> list[IndexEntry]:
        """Chunk lists renamed into place (their directories added to ``dirs``)."""
        entries = []
        for d in ready:
            final = self._layout.loose_path(d.oid, d.encoding)
            try:
                publish(d.temp_path, final)
            except OSError as e:
                raise self._write_error(e) from None
            dirs.add(os.path.dirname(final))
            entries.append(IndexEntry(d.oid, d.encoding, d.size, d.stored_length))
        return entries

    def _settle_replaced(self, entries: list[IndexEntry]) -> None:
        """After the good copies are durable and indexed: drop the damaged
        loose files they superseded (a packed one stays until its pack is
        rewritten: 'cas repair' does that) and clear their damage records."""
        if not self._replace:
            return
        with self._lock:
            done = [e for e in entries if e.oid in self._replace]
            self._replace.difference_update(e.oid for e in done)
            old = [self._superseded.pop(e.oid, None) for e in done]
            self.replaced.extend(e.oid for e in done)
        for new, was in zip(done, old, strict=True):
            if was is not None and was.pack is None and \
                    (new.pack is not None or was.encoding is not new.encoding):
                # Not overwritten by the new copy's rename: left in place, a
                # rebuild could adopt it.
                remove_quietly(self._layout.loose_path(was.oid, was.encoding))
        self._damage.clear(e.oid for e in done)

    def _ready_lists(self, sealing: set[ObjectId]) -> tuple[list, list]:
        """Deferred lists whose chunks this seal makes durable, and those of
        them to drop; called under the lock."""
        ready = [d for d in self._deferred
                 if all(c in sealing or c not in self._pending for c in d.chunks)]
        self._deferred = [d for d in self._deferred if d not in ready]
        # The same content stored whole since the list was written (a chunk
        # of another file, cut by another thread): the whole object wins, as
        # new chunk lists may already name it as a chunk.
        dropped = [d for d in ready if d.oid in sealing or d.oid in self._pending]
        for d in dropped:
            self._lists.pop(d.oid, None)
        return [d for d in ready if d not in dropped], dropped

    def _count(self, size: int, stored: int) -> None:
        self.new_objects += 1
        self.new_bytes += size
        self.stored_bytes += stored
        if self._on_stored is not None:
            self._on_stored(size, stored)

    def _store_side(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            raise self._write_error(e) from None

    def _write_error(self, e: OSError) -> StoreWriteError:
        return StoreWriteError(self._layout.root, e.strerror or str(e))


def seal_pack(layout: Layout, pack: PackWriter) -> tuple[list[IndexEntry], PackRecord, str]:
    """Finish a pack and publish it under its name: the index entries of
    its objects, its pack record, and the directory to fsync before they
    are indexed. On failure the temp file is removed and the error raised."""
    try:
        pack_id = pack.finish()
        final = layout.pack_path(pack_id)
        publish(pack.temp_path, final)
    except BaseException:
        pack.abandon()
        raise
    entries = [IndexEntry(e.oid, e.encoding, e.size, e.stored_length, pack_id, e.offset)
               for e in pack.entries]
    return entries, PackRecord(pack_id, pack.size, len(pack.entries)), os.path.dirname(final)


@dataclass(frozen=True, eq=False)
class _DeferredList:
    """A chunk list fsynced under a temp name, waiting for its chunks to be durable."""
    oid: ObjectId
    temp_path: str
    size: int
    stored_length: int
    chunks: frozenset
    encoding: Encoding = Encoding.CHUNKED   # SEALED_CHUNKED in an encrypted store


def _source_blocks(src: int) -> Iterator[bytes]:
    """A source file's bytes in ``BLOCK``s to its end; read errors surface
    as ``_SourceReadError`` (anything else is a store-side failure)."""
    read = 0
    while True:
        try:
            block = os.pread(src, BLOCK, read)
        except OSError as e:
            raise _SourceReadError(e) from None
        if not block:
            return
        read += len(block)
        yield block


def _batches(chunks: Iterator[bytes], limit: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= limit:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def check_opened(path: str, st: os.stat_result, expect: tuple[int, int] | None) -> None:
    """Refuse what an open reached if it is not the regular file listed."""
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(path, "not a regular file; skipped")
    if expect is not None and (st.st_dev, st.st_ino) != expect:
        raise SourceError(path, "was replaced while the tree was read (a directory on the way "
                                "changed); skipped")


def identify_file(path: str, expect: tuple[int, int] | None = None,
                  opener: Callable[[int], int] | None = None) -> tuple[ObjectId, os.stat_result]:
    """A file's id without storing it (for status and diff), read consistently."""
    for _ in range(READ_ATTEMPTS):
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = opener(flags) if opener is not None else os.open(path, flags)
            try:
                before = os.fstat(fd)
                check_opened(path, before, expect)
                oid = hash_fd(fd)
                if _stat_key(os.fstat(fd)) == _stat_key(before):
                    return oid, before
            finally:
                os.close(fd)
        except OSError as e:
            raise SourceError(path, _describe(e)) from None
    raise SourceError(path, f"changed while being read ({READ_ATTEMPTS} attempts)")


class _SourceReadError(Exception):
    def __init__(self, error: OSError):
        self.error = error


def _read_upto(fd: int, limit: int) -> bytes:
    chunks = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def _describe(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "is a symbolic link (or a loop of them); not followed"
    if e.errno == errno.EACCES:
        return "permission denied"
    if e.errno == errno.ENOENT:
        return "vanished before it could be read"
    if e.errno == errno.EISDIR:
        return "is a directory"
    return e.strerror or str(e)
