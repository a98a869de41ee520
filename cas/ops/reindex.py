"""``cas index rebuild``: recreate the LMDB index from objects and packs.

The new index is built beside the old one and swapped in by rename, under
the store's exclusive lock, so a crash mid-rebuild leaves the old index
(or none) and the rebuild can simply run again.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass, field

from ..durable import fsync_dir
from ..model.history import History
from ..objectid import ObjectId, hash_fd
from ..storage.chunklist import HEAD_SIZE, LIST_PARSE_LIMIT, MAGIC, ChunkList, ChunkListError, binary_header
from ..storage.crypto import SealError
from ..storage.encoding import Encoding
from ..storage.index import Index, IndexEntry, PackRecord
from ..storage.layout import Layout
from ..storage.pack import PackFormatError, read_entries
from ..storage.seekable import SeekTableError, content_size, read_seek_table
from ..storage.store import Store
from ..storage.storedfile import StoredFile, open_stored

BATCH = 10_000


@dataclass
class RebuildReport:
    objects: int = 0
    packs: int = 0
    loose: int = 0
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    temp_files_removed: int = 0


def rebuild_index(store_path: str) -> RebuildReport:
    report = RebuildReport()
    with Store.open(store_path, exclusive=True, with_index=False) as store:
        layout = store.layout
        new_path = layout.index + ".new"
        shutil.rmtree(new_path, ignore_errors=True)
        index = Index.create(new_path, store.config.store_id, store.layout.modes, store.sealer)
        try:
            entries = _Entries(index)
            # Loose files first: a loose copy of an id that is also in a pack
            # is the replacement of a damaged pack entry (packs are never
            # rewritten in place), so it wins unless it is unsound itself.
            _add_loose(layout, entries, report)
            _add_packs(store, entries, report)
            entries.flush()
            report.objects = len(entries.seen)
        finally:
            index.close()
        _swap_in(layout, new_path)
        store.reopen_index()
        # Snapshots and refs come back from their plain files; the stat
        # cache starts empty (it is only ever a shortcut). A record whose
        # bytes do not hash to its name is left out and reported.
        report.bad_files.extend(History(store).reload_index())
        # Under the exclusive lock no writer is running: every temp file is debris.
        for name in os.listdir(layout.tmp):
            os.unlink(os.path.join(layout.tmp, name))
            report.temp_files_removed += 1
    return report


class _Entries:
    """The new index's object records, written in batches; the loose ones
    kept until the packs are read, to settle an id found in both."""

    def __init__(self, index: Index):
        self.index = index
        self.seen: set[ObjectId] = set()
        self.loose: dict[ObjectId, IndexEntry] = {}
        self.batch: list[IndexEntry] = []

    def add(self, entry: IndexEntry) -> None:
        self.seen.add(entry.oid)
        if entry.pack is None:
            self.loose[entry.oid] = entry
        self.batch.append(entry)
        if len(self.batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        self.index.record(self.batch)
        self.batch.clear()


def _add_loose(layout: Layout, entries: _Entries, report: RebuildReport) -> None:
    for oid, encoding, path in layout.scan_loose():
        try:
            stored, size = loose_sizes(oid, encoding, path, layout)
            _check_unsealed(layout, oid, encoding, path)
        except LOOSE_ERRORS as e:
            report.bad_files.append((path, str(e)))
            continue
        report.loose += 1
        if oid not in entries.seen:
            entries.add(IndexEntry(oid, encoding, size, stored))


def _add_packs(store: Store, entries: _Entries, report: RebuildReport) -> None:
    for pack, path in store.layout.scan_packs():
        try:
            records = read_entries(path, store.sealer)
            size = os.path.getsize(path)
        except (PackFormatError, OSError) as e:
            report.bad_files.append((path, str(e)))
            continue
        entries.index.record([], [PackRecord(pack, size, len(records))])
        report.packs += 1
        for rec in records:
            entry = IndexEntry(rec.oid, rec.encoding, rec.size, rec.stored_length, pack, rec.offset)
            if rec.oid not in entries.seen or _loose_unsound(store, entries, rec.oid):
                entries.loose.pop(rec.oid, None)
                entries.add(entry)   # recorded after the loose one, so it overwrites


def _loose_unsound(store: Store, entries: _Entries, oid: ObjectId) -> bool:
    """Whether the loose copy of an id also found in a pack fails its hash
    (paid only for ids in both, which a replacement makes). A chunk list
    cannot be read without the index; it was parsed already, and stays."""
    loose = entries.loose.get(oid)
    if loose is None or loose.chunked:
        return False
    return not store.entry_is_sound(loose)


def _swap_in(layout: Layout, new_path: str) -> None:
    old_path = layout.index + ".old"
    shutil.rmtree(old_path, ignore_errors=True)
    if os.path.exists(layout.index):
        os.rename(layout.index, old_path)
    os.rename(new_path, layout.index)
    fsync_dir(layout.root)
    shutil.rmtree(old_path, ignore_errors=True)


LOOSE_ERRORS = (OSError, SeekTableError, ChunkListError, SealError)


def loose_sizes(oid: ObjectId, encoding: Encoding, path: str, layout: Layout) -> tuple[int, int]:
    """(stored, content) size of a loose object file, as the index records them;
    raises one of LOOSE_ERRORS for a file the index cannot take. A sealed
    file must open under the store's keys as this object's."""
    fd = _open_regular(path)
    try:
        stored = os.fstat(fd).st_size
        f = open_stored(fd, stored, layout, oid, encoding)
        if encoding.inner is Encoding.RAW:
            return stored, f.size
        if encoding.inner is Encoding.CHUNKED:
            return stored, _chunked_size(f, oid)
        return stored, content_size(read_seek_table(f))
    finally:
        os.close(fd)


def _check_unsealed(layout: Layout, oid: ObjectId, encoding: Encoding, path: str) -> None:
    """In an encrypted store, an unsealed file (a public model's weights) is
    adopted only if its content hashes to the id its name stands for: a
    sealed file authenticates itself, a raw one only by its hash, and anyone
    who can write the disk can plant one under a name."""
    if layout.names.encrypted and not encoding.sealed:
        fd = _open_regular(path)
        try:
            if hash_fd(fd) != oid:
                raise OSError(errno.EINVAL, "unsealed, and its content is not the object its name stands for")
        finally:
            os.close(fd)


def _open_regular(path: str) -> int:
    """A store file opened for reading only if it is a regular file: a link
    or a FIFO planted under objects/ must not be followed or hang a rebuild."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def _chunked_size(f: StoredFile, oid: ObjectId) -> int:
    """The content size a chunk list records, reading no more than it needs.

    A list up to ``LIST_PARSE_LIMIT`` bytes is parsed whole, as every read
    does. A version 2 list may be longer only if its header's chunk count
    needs that length, and then only the header is taken (its body is
    checked by every read and by verify). A version 1 list has no header to
    bound it: longer is damage. A sparse file of any length planted under
    objects/ costs no memory.
    """
    stored = f.size
    head = f.pread(HEAD_SIZE, 0)
    if head.startswith(MAGIC):
        listed, size, lengths = binary_header(head)
        if stored not in lengths:
            raise ChunkListError(f"{stored} bytes do not fit a chunk list of its chunk count")
    elif stored > LIST_PARSE_LIMIT:
        raise ChunkListError(f"a version 1 chunk list larger than {LIST_PARSE_LIMIT} bytes")
    if stored <= LIST_PARSE_LIMIT:
        chunks = ChunkList.from_json(f.pread(LIST_PARSE_LIMIT + 1, 0))
        listed, size = chunks.oid, chunks.size
    if listed != oid:
        raise ChunkListError("chunk list names another file")
    return size
