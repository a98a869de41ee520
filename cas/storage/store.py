"""The store: config, object files, packs and index behind one handle."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import io
import json
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..durable import fsync_dir, fsync_dirs, make_dir, read_bounded, write_all
from ..errors import (
    AmbiguousPrefix,
    CasError,
    ConfigDamaged,
    InvalidObjectId,
    ObjectDamaged,
    ObjectNotFound,
    PasswordRequired,
    StoreExists,
    StoreFileInvalid,
    StoreLocked,
    StoreNotFound,
    StoreWriteError,
)
from ..objectid import HEX_LENGTH, MIN_PREFIX, Hasher, ObjectId, is_hex
from . import keys
from .chunklist import ChunkList
from .config import CONFIG_FILE, FORMAT_NAME, StoreConfig
from .content import READ_BLOCK, Content, Contents
from .crypto import FILE_MAGIC, PLAIN, SEGMENT, PlainSealer, Sealer, SealError
from .encoding import Encoding, ZstdError
from .index import Index, IndexEntry
from .layout import Layout, StoreModes
from .pack import MAGIC as PACK_MAGIC
from .pack import SEALED_VERSION as SEALED_PACK_VERSION
from .seekable import BlockReader, SeekTableError, seekable_reader
from .storedfile import StoredFile
from .writer import DamageRecord, ObjectWriter, Placement

STORE_DIR = ".cas"
# Reused buffers of write_content: three of these are all the memory a restore
# of any size holds.
CONTENT_WINDOW = 8 << 20
MAPPED_WRITE_MIN = 1 << 20


def find_store(start: str) -> str:
    """The store for a working directory: walking up from ``start``, the first
    directory that is a store itself or holds ``.cas/``."""
    here = os.path.abspath(start)
    while True:
        if holds_store(here):
            return here
        candidate = os.path.join(here, STORE_DIR)
        if os.path.lexists(os.path.join(candidate, CONFIG_FILE)):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            raise StoreNotFound(os.path.abspath(start))
        here = parent


def locate_store(path: str) -> str:
    """The store a path given explicitly names (``--store``, ``CAS_STORE``, a
    registered store, ``store=`` in the Python API): the directory itself when
    it is a store (``cas --store PATH init`` made it), else ``PATH/.cas``.
    Never a store further up: an explicit path means that store."""
    path = os.path.abspath(path)
    if holds_store(path):
        return path
    candidate = os.path.join(path, STORE_DIR)
    if os.path.lexists(os.path.join(candidate, CONFIG_FILE)):
        return candidate
    if os.path.lexists(os.path.join(path, CONFIG_FILE)):
        return path  # some other config.json: opening it says it is not a store's
    raise StoreNotFound(path, searched_up=False)


def holds_store(directory: str) -> bool:
    """A directory is a store if its config.json says so (FORMAT §1). Model
    directories have a config.json too: the content decides. A config that
    cannot be read beside ``objects/`` is a damaged store, reported by
    opening it rather than passed over for another store."""
    try:
        doc = json.loads(read_bounded(os.path.join(directory, CONFIG_FILE)))
    except (FileNotFoundError, NotADirectoryError):
        return False
    except (OSError, ValueError, RecursionError):
        return os.path.isdir(os.path.join(directory, "objects"))
    return isinstance(doc, dict) and doc.get("format") == FORMAT_NAME


def dir_holds_store(dir_fd: int) -> bool:
    """Whether the directory open as ``dir_fd`` holds a cas store's
    config.json: a regular file (never followed through a link) whose head
    names the format. Generous on purpose: a store whose config no longer
    parses is still a store, never data to record and never a place to
    write a restore into."""
    try:
        fd = os.open(CONFIG_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and FORMAT_NAME.encode() in os.read(fd, 4096)
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StoreStats:
    objects: int
    loose_objects: int
    packed_objects: int
    packs: int
    unique_bytes: int          # content bytes, each distinct chunk or object once
    stored_bytes: int          # bytes on disk: compressed objects, chunk lists, pack framing
    compressed_objects: int
    chunked_files: int = 0
    chunked_bytes: int = 0

    @property
    def compression_ratio(self) -> float:
        return self.stored_bytes / self.unique_bytes if self.unique_bytes else 1.0


class Store:
    def __init__(self, path: str, config: StoreConfig, index: Index | None, lock_fd: int,
                 sealer: Sealer | PlainSealer = PLAIN):
        self.path = path
        self.config = config
        # What names and seals the store's bytes: PLAIN unless encrypted (FORMAT §18).
        self.sealer = sealer
        self.layout = Layout(path, config.shared, sealer)
        self._index = index
        self._lock_fd = lock_fd
        # Every read goes through the content layer; it holds the open packs.
        self.contents = Contents(self.layout, lambda: self.index)
        self.damage = DamageRecord(self.layout)

    # -- opening --------------------------------------------------------

    @classmethod
    def init(cls, path: str, config: StoreConfig | None = None, password: bytes | None = None) -> Store:
        """A new store at ``path``; encrypted when ``config.encryption`` is set,
        its first key slot wrapped by ``password``."""
        path = os.path.abspath(path)
        if os.path.lexists(os.path.join(path, CONFIG_FILE)):
            raise StoreExists(path)
        config = config or StoreConfig()
        if config.encryption is not None and password is None:
            raise PasswordRequired(path)
        layout = Layout(path, config.shared)
        modes = layout.modes
        os.makedirs(os.path.dirname(path), exist_ok=True)
        make_dir(path, modes.directory)
        # Also when the directory was there: it is the store now.
        os.chmod(path, modes.directory)
        for d in layout.directories():
            make_dir(d, modes.directory)
        fsync_dirs([path] + layout.directories())
        sealer: Sealer | PlainSealer = PLAIN
        if config.encryption is not None and password is not None:
            master, slot = keys.create_master(config.store_id, password)
            keys.write_slot(path, slot, modes.directory, modes.file)
            keys.remember(config.store_id, master, path)
            sealer = Sealer(master)
        Index.create(layout.index, config.store_id, modes, sealer).close()
        os.close(_create_lock(layout.lock, modes))
        # The config is written last: its presence is what makes a store.
        config.save(path, modes.file)
        fsync_dir(os.path.dirname(path))
        return cls.open(path)

    @classmethod
    def open(cls, path: str, *, exclusive: bool = False, with_index: bool = True,
             password: keys.PasswordSource | None = None) -> Store:
        """Open the store at ``path`` (a store directory, or a tree holding ``.cas/``).

        A store that cannot be written (a read-only mount, no write
        permission) opens read-only: every read works, every write fails
        with ``StoreWriteError``. An encrypted store is unlocked with
        ``password`` (bytes, or a function giving them), else with the
        process's password source (``keys.set_password_source``).
        """
        path = locate_store(path)
        config = StoreConfig.load(path)
        if config.encryption is None:
            _refuse_downgrade(path)
        sealer = keys.sealer_for(path, config.store_id, config.encryption is not None, password)
        layout = Layout(path, config.shared, sealer)
        lock_fd = _lock(layout, exclusive)
        try:
            index = Index.open(layout.index, config.store_id, layout.modes, sealer) if with_index else None
        except CasError:
            if lock_fd >= 0:
                os.close(lock_fd)
            raise
        return cls(path, config, index, lock_fd, sealer)

    @property
    def read_only(self) -> bool:
        """True when the store could only be opened for reading."""
        return self._index.read_only if self._index is not None else not _writable(self.path)

    def exposed_paths(self) -> list[str]:
        """The store directory and its top-level entries that give more access
        than the config allows (group or others on a private store, others
        on a shared one): a store made by an older cas, or chmod'ed since.
        Empty when the store directory itself is closed: then nothing in it
        can be reached, whatever the modes of what other code made inside."""
        # The store directory may be a link (.cas to another disk): its target counts.
        if not self._exposed(self.path, follow=True):
            return []
        inside = [os.path.join(self.path, n) for n in _top_level(self.path)]
        return [self.path] + [p for p in inside if self._exposed(p)]

    def _exposed(self, path: str, follow: bool = False) -> bool:
        try:
            st = os.stat(path, follow_symlinks=follow)
        except OSError:
            return False
        return not stat.S_ISLNK(st.st_mode) and \
            bool(self.layout.modes.exposed(st.st_mode, stat.S_ISDIR(st.st_mode)))

    def close(self) -> None:
        self.contents.close()
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reopen_index(self) -> None:
        """Open the index again (after a rebuild swapped a new one in)."""
        if self._index is not None:
            self._index.close()
        self._index = Index.open(self.layout.index, self.config.store_id, self.layout.modes, self.sealer)

    @property
    def index(self) -> Index:
        assert self._index is not None, "store opened without its index"
        return self._index

    # -- writing --------------------------------------------------------

    def writer(self, on_stored: Callable[[int, int], None] | None = None,
               placement: Placement | None = None, replace=(), public: bool = False) -> ObjectWriter:
        """``replace``: ids to store again although indexed (see ``ObjectWriter``).
        ``public``: loose objects stay unsealed in an encrypted store (a public
        model's weights, ``cas model import --public``)."""
        if public:
            placement = dataclasses.replace(placement or Placement(), public=True)
        return ObjectWriter(self.layout, self.config, self.index, on_stored, placement, replace)

    def record_damage(self, oids) -> None:
        """Remember objects found damaged, so that the next write of their
        content replaces them (nothing is kept on a read-only store)."""
        if not self.read_only:
            self.damage.add(oids)

    def forget_cached(self) -> None:
        """Drop cached chunk lists and seek tables (after objects were replaced)."""
        self.contents.forget_cached()

    def _note_damage(self, entry: IndexEntry, error: ObjectDamaged) -> None:
        """Record what a read found damaged: the object, and for a chunked
        file whose whole hash failed, the chunks that do not hash to their
        ids (found by a second read, paid only when damage was found)."""
        ids = {entry.oid}
        if is_hex(error.oid) and len(error.oid) == HEX_LENGTH:
            ids.add(ObjectId.parse(error.oid))
        if entry.chunked and error.oid == entry.oid.hex:
            ids |= self._damaged_chunks(entry)
        try:
            self.record_damage(ids)
        except CasError:
            pass  # the index could not say whether the store is writable: the read's error stands

    def _damaged_chunks(self, entry: IndexEntry) -> set[ObjectId]:
        try:
            chunks = self.contents.resolve(entry).chunks
        except (CasError, OSError):
            return set()
        found = set()
        for chunk in chunks:
            try:
                self.contents.checked_chunk(chunk)
            except (CasError, OSError):
                found.add(chunk[0])
        return found

    def put_bytes(self, data: bytes) -> ObjectId:
        with self.writer() as w:
            return w.put_bytes(data)

    def put_file(self, path: str) -> ObjectId:
        with self.writer() as w:
            return w.put_file(path, follow_symlinks=True)[0]

    # -- reading --------------------------------------------------------

    def resolve(self, text: str) -> ObjectId:
        """A full id or a unique prefix (at least 6 hex digits) to an id."""
        text = text.strip().lower()
        if len(text) < MIN_PREFIX or len(text) > HEX_LENGTH or not is_hex(text):
            raise InvalidObjectId(text)
        if len(text) == HEX_LENGTH:
            oid = ObjectId.parse(text)
            if self.index.lookup(oid) is None:
                raise ObjectNotFound(text)
            return oid
        matches = self.index.match_prefix(text, limit=2)
        if not matches:
            raise ObjectNotFound(text)
        if len(matches) > 1:
            raise AmbiguousPrefix(text, len(self.index.match_prefix(text, limit=1000)))
        return matches[0]

    def entry(self, oid: ObjectId) -> IndexEntry:
        entry = self.index.lookup(oid)
        if entry is None:
            raise ObjectNotFound(oid.hex)
        return entry

    def has(self, oid: ObjectId) -> bool:
        return self.index.lookup(oid) is not None

    def content(self, oid: ObjectId) -> Content | None:
        """What ``oid``'s content is made of (its pieces: chunks, or the
        object itself), None when it is not in the store. A chunk list that
        cannot be read raises ``ObjectDamaged`` naming the object."""
        return self.contents.get(oid)

    def read_stored(self, entry: IndexEntry) -> bytes:
        """The bytes as stored (possibly compressed) of a packed object."""
        return self.contents.read_stored(entry)

    def open_raw(self, entry: IndexEntry) -> BinaryIO:
        """A stream of the object's content, not checked against its id."""
        contents = self.contents
        if entry.pack is not None:
            return io.BytesIO(contents.decode(entry, contents.read_stored(entry)))
        if entry.chunked:
            chunks = contents.resolve(entry).chunks
            return io.BufferedReader(BlockReader(
                [n for _, n in chunks],
                lambda i: contents.chunk_content(chunks[i])), READ_BLOCK)
        stored = contents.open_loose(entry)
        if entry.encoding is Encoding.RAW:
            return os.fdopen(stored.fd, "rb")
        try:
            if entry.encoding.inner is Encoding.RAW:
                return io.BufferedReader(_segment_reader(stored), READ_BLOCK)
            return io.BufferedReader(seekable_reader(stored, lambda: os.close(stored.fd)), READ_BLOCK)
        except (SeekTableError, SealError) as e:
            os.close(stored.fd)
            raise ObjectDamaged(entry.oid.hex, str(e)) from None

    def open_object(self, oid: ObjectId) -> BinaryIO:
        return self.open_raw(self.entry(oid))

    def read_object(self, oid: ObjectId) -> bytes:
        """The whole content of an object (a tree, a manifest, a chunk list),
        checked to hash to ``oid``: what is loaded to decide what to restore
        or trust is never taken on faith. Hashing a small object costs
        microseconds (docs/PERFORMANCE.md)."""
        return b"".join(self.iter_content(oid))

    def iter_content(self, oid: ObjectId, check_chunks: bool = False) -> Iterator[bytes]:
        """Stream an object's content, checking it hashes to its id.

        The check completes with the last block: a damaged object raises
        ``ObjectDamaged`` after its bytes were yielded, so callers writing
        to a file keep it under a temp name until the iteration ends.
        """
        entry = self.entry(oid)
        try:
            yield from self._checked_blocks(entry, check_chunks)
        except ObjectDamaged as e:
            self._note_damage(entry, e)
            raise

    def entry_is_sound(self, entry: IndexEntry) -> bool:
        """Whether a copy described by ``entry`` (indexed or not: a loose file
        the index does not point to) reads back whole and hashes to its id."""
        try:
            for _ in self._checked_blocks(entry, True):
                pass
        except (CasError, OSError):
            return False
        return True

    def _checked_blocks(self, entry: IndexEntry, check_chunks: bool) -> Iterator[bytes]:
        oid = entry.oid
        hasher = Hasher()
        total = 0
        try:
            for block in self.contents.blocks(entry, check_chunks):
                total += len(block)
                if total > entry.size:
                    # Checked before the block goes out: a file longer than
                    # its record (or a crafted one) never gets copied whole.
                    raise ObjectDamaged(oid.hex, f"has more than the {entry.size} bytes recorded")
                hasher.update(block)
                yield block
        except ZstdError as e:
            raise ObjectDamaged(oid.hex, f"cannot be decompressed ({e})") from None
        except (SeekTableError, SealError) as e:
            raise ObjectDamaged(oid.hex, str(e)) from None
        _check_whole(entry, total, hasher)

    def write_content(self, oid: ObjectId, fd: int) -> int:
        """Write an object's content to ``fd``, checking it against its id.

        As with ``iter_content`` the check completes at the end: on damage
        ``ObjectDamaged`` is raised after bytes were written, so callers
        write to a temp file. Content that lies raw on disk (raw loose
        objects, raw chunks) is mapped from its files and hashed and written
        from the page cache itself, with the writes on a second thread: no
        copy into Python memory at all, which halved the time of a 1 GB
        chunked file. Anything else streams through ``iter_content``.
        Returns the bytes written.
        """
        entry = self.entry(oid)
        # Small objects: a mapping and a thread cost more than they save.
        pieces = self._raw_pieces(entry) if entry.size >= MAPPED_WRITE_MIN else None
        if pieces is None:
            total = 0
            for block in self.iter_content(oid):  # records damage itself
                write_all(fd, block)
                total += len(block)
            return total
        try:
            return self._write_mapped(entry, pieces, fd)
        except ObjectDamaged as e:
            self._note_damage(entry, e)
            raise

    def _write_mapped(self, entry: IndexEntry, pieces: list[tuple[IndexEntry, int]], fd: int) -> int:
        hasher = Hasher()
        ready: queue.Queue = queue.Queue(maxsize=4)
        failure: list[BaseException] = []

        def writer() -> None:
            while (view := ready.get()) is not None:
                try:
                    if not failure:
                        write_all(fd, view)
                except BaseException as e:  # reported by the reading thread
                    failure.append(e)
                view.release()

        thread = threading.Thread(target=writer, name="cas-write", daemon=True)
        thread.start()
        try:
            total = self._feed_mapped(pieces, hasher, ready, failure)
        finally:
            ready.put(None)
            thread.join()
        if failure:
            raise failure[0]
        _check_whole(entry, total, hasher)
        return total

    def _feed_mapped(self, pieces: list[tuple[IndexEntry, int]], hasher: Hasher,
                     ready: queue.Queue, failure: list[BaseException]) -> int:
        """Hash the pieces' mapped windows and queue them for the writing
        thread, until done or it failed; returns the bytes queued."""
        total = 0
        for piece, length in pieces:
            if failure:
                break
            with self.contents.mapped(piece, length) as view:
                for start in range(0, length, CONTENT_WINDOW):
                    window = view[start:start + CONTENT_WINDOW]
                    hasher.update(window)
                    ready.put(window)
                total += length
        return total

    def _raw_pieces(self, entry: IndexEntry) -> list[tuple[IndexEntry, int]] | None:
        """(object, length) pieces of the content, all raw on disk; None otherwise."""
        return self.contents.raw_pieces(entry)

    def chunk_list(self, oid: ObjectId) -> ChunkList | None:
        """The chunks of a chunked object, or None for an object stored whole."""
        entry = self.entry(oid)
        if not entry.chunked:
            return None
        return self.contents.chunk_list(entry)

    def plain_path(self, oid: ObjectId) -> str | None:
        """The file holding exactly the object's content (a raw loose object),
        which other programs may open and read in place; None otherwise."""
        entry = self.entry(oid)
        if entry.pack is not None or entry.encoding is not Encoding.RAW:
            return None
        return self.layout.loose_path(oid, entry.encoding)

    def backing_files(self, oid: ObjectId) -> list[str]:
        """The files on disk that hold an object's content (its chunks' packs
        and loose files too), sorted."""
        entry = self.entry(oid)
        content = self.contents.resolve(entry)
        found = set()
        if content.chunked:
            found.add(self.layout.loose_path(oid, entry.encoding))
        for chunk, length in content.chunks or ((oid, entry.size),):
            stored = self.contents.chunk_entry(chunk, length) if content.chunked else entry
            found.add(self.layout.pack_path(stored.pack) if stored.pack is not None
                      else self.layout.loose_path(chunk, stored.encoding))
        return sorted(found)

    def read_into(self, oid: ObjectId, offset: int, buf) -> None:
        """Fill ``buf`` with the object's content starting at ``offset``.

        Plain bytes on disk (a raw loose file, a raw packed object, raw
        chunks) are read straight into ``buf``, with no copy in between;
        compressed parts are decoded first. Nothing is checked against an
        id here: callers that need a check hash what they read.
        """
        view = memoryview(buf).cast("B")
        entry = self.entry(oid)
        if offset < 0 or offset + len(view) > entry.size:
            raise ValueError(f"range {offset}+{len(view)} lies outside object {oid.short}")
        try:
            self.contents.read_into(entry, offset, view)
        except ZstdError as e:
            raise ObjectDamaged(oid.hex, f"cannot be decompressed ({e})") from None
        except (SeekTableError, SealError) as e:
            raise ObjectDamaged(oid.hex, str(e)) from None

    # -- listing --------------------------------------------------------

    def entries(self) -> Iterator[IndexEntry]:
        return self.index.entries()

    def stats(self) -> StoreStats:
        objects = loose = compressed = unique = stored = packed_stored = 0
        chunked = chunked_bytes = 0
        for e in self.index.entries():
            objects += 1
            stored += e.stored_length
            if e.chunked:
                # Its content is its chunks, counted as objects of their own.
                chunked += 1
                chunked_bytes += e.size
            else:
                unique += e.size
                compressed += e.encoding.inner is Encoding.ZSTD
            if e.pack is None:
                loose += 1
            else:
                packed_stored += e.stored_length
        packs = self.index.packs()
        # Pack headers and trailers are stored bytes too.
        overhead = max(sum(p.file_size for p in packs) - packed_stored, 0)
        return StoreStats(objects, loose, objects - loose, len(packs), unique,
                          stored + overhead, compressed, chunked, chunked_bytes)


def _refuse_downgrade(path: str) -> None:
    """A config saying "plain" in a store that holds key slots or a sealed
    HEAD was changed (config.json is not sealed): opened as plain, the next
    snapshot would write plaintext beside the sealed history."""
    try:
        # Never through a link, never waiting on a FIFO: refs.py's own rules.
        sealed_head = read_bounded(os.path.join(path, "HEAD"), 1 << 16).startswith(FILE_MAGIC)
    except OSError:
        sealed_head = False
    if sealed_head or os.path.lexists(keys.keys_dir(path)) or _first_pack_sealed(path):
        raise ConfigDamaged(os.path.join(path, CONFIG_FILE),
                            "it says the store is not encrypted, but the store holds key slots or sealed "
                            "files: the config was changed; put back its \"encryption\" setting from a copy")


def _first_pack_sealed(path: str) -> bool:
    """Whether the first pack found is a sealed one (version 2): a few
    system calls, which catch a downgrade that also removed keys/ and HEAD."""
    try:
        with os.scandir(os.path.join(path, "packs")) as fans:
            fan = next((e.path for e in fans if e.is_dir(follow_symlinks=False)), None)
        if fan is None:
            return False
        with os.scandir(fan) as packs:
            pack = next((e.path for e in packs if e.name.endswith(".pack")
                         and e.is_file(follow_symlinks=False)), None)
        if pack is None:
            return False
        fd = os.open(pack, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return os.pread(fd, 16, 0) == PACK_MAGIC + SEALED_PACK_VERSION.to_bytes(4, "little") + bytes(4)
        finally:
            os.close(fd)
    except OSError:
        return False


def _segment_reader(stored: StoredFile) -> BlockReader:
    """A seekable reader over a sealed raw object, a few segments at a time."""
    block = 4 * SEGMENT
    sizes = [min(block, stored.size - at) for at in range(0, stored.size, block)]
    return BlockReader(sizes, lambda i: stored.pread(block, i * block), lambda: os.close(stored.fd))


def _check_whole(entry: IndexEntry, total: int, hasher: Hasher) -> None:
    """The end of every checked read: all the bytes, hashing to the id."""
    if total != entry.size:
        raise ObjectDamaged(entry.oid.hex, f"has {total} bytes, {entry.size} recorded")
    if hasher.object_id() != entry.oid:
        raise ObjectDamaged(entry.oid.hex, "its content does not hash to its id")


def _lock(layout: Layout, exclusive: bool) -> int:
    """Shared for ordinary work, exclusive for index rebuilds and gc; -1 when
    the store is read-only and has no lock file to take (nothing can write
    such a store, so nothing needs to be kept out)."""
    fd = _open_lock(layout)
    if fd < 0:
        if exclusive:
            raise StoreWriteError(layout.root, "read-only: a read-only filesystem, or no "
                                               "permission to write")
        return fd
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreFileInvalid(layout.lock, "is not a regular file (a FIFO or device)")
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(layout.root) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


_READ_ONLY_ERRORS = (errno.EROFS, errno.EACCES, errno.EPERM)


def _open_lock(layout: Layout) -> int:
    # O_NOFOLLOW: a link planted as the lock must not make cas create or
    # lock a file elsewhere; O_NONBLOCK: a FIFO must not hang the open.
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(layout.lock, os.O_RDWR | flags)
    except FileNotFoundError:
        try:
            return _create_lock(layout.lock, layout.modes)
        except OSError as e:
            if e.errno in _READ_ONLY_ERRORS:
                return -1
            raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StoreFileInvalid(layout.lock, "is a symbolic link") from None
        if e.errno not in _READ_ONLY_ERRORS:
            raise
    # flock works on a descriptor opened for reading, so a read-only store
    # still keeps out a writer that can write it (root on a chmod'ed store).
    try:
        return os.open(layout.lock, os.O_RDONLY | flags)
    except OSError as e:
        if e.errno in _READ_ONLY_ERRORS:
            return -1
        raise


def _create_lock(path: str, modes: StoreModes) -> int:
    """The lock file, created private (or group-writable in a shared store, so
    every member can take it): a lock others could open, they could hold."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 modes.file)
    try:
        os.fchmod(fd, modes.file)
    except OSError:
        os.close(fd)
        raise
    return fd


def _writable(path: str) -> bool:
    return os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def _top_level(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []
