"""``cas repair``: replace damaged or missing objects with good copies.

A full verify names what is damaged (and the store's damage record adds
what reads found since). Good copies are then looked for in each source in
turn: a directory (its files hashed, only those of a size some damaged
object has) or another cas store (read by id, each checked against its
hash). Every copy goes through the ordinary writer, asked to replace those
ids: it is durable and indexed before the index stops naming the damaged
copy, and the damage record is cleared only then. A damaged chunk is also
cut from a good copy of a file that holds it.

Packs whose bytes no longer hash to their names keep their sound objects:
once every damaged object of such a pack has a good copy elsewhere, its
sound objects are copied into a new pack (durable and indexed first) and
the damaged pack is dropped, as pack consolidation does. Call with the
store opened exclusively, as for gc.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..durable import open_temp, remove_quietly
from ..errors import CasError, ObjectDamaged, SourceError, StoreIsEncrypted, StoreNotFound
from ..model.history import History
from ..objectid import ObjectId, hash_bytes
from ..problems import Problem
from ..storage.encoding import Encoding
from ..storage.index import IndexEntry
from ..storage.store import Store, holds_store, locate_store
from ..storage.writer import ObjectWriter, Placement, identify_file
from .packs import drop_packs, rewrite_packs
from .reindex import LOOSE_ERRORS, loose_sizes
from .verify import VerifyReport, _check_packed, verify


@dataclass
class RepairReport:
    found: list[Problem] = field(default_factory=list)      # damage before the repair
    repaired: list[ObjectId] = field(default_factory=list)
    packs_rewritten: list[ObjectId] = field(default_factory=list)
    still_damaged: list[Problem] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.still_damaged

    def to_doc(self) -> dict:
        return {"ok": self.ok, "found": len(self.found),
                "repaired": [o.hex for o in self.repaired],
                "packs_rewritten": [p.hex for p in self.packs_rewritten],
                "still_damaged": [_damage_doc(d) for d in self.still_damaged],
                "sources": list(self.sources)}


def _damage_doc(d: Problem) -> dict:
    return d.damage_doc()


def repair(history: History, sources: list[str] | None = None,
           on_progress: Callable[[int], None] | None = None) -> RepairReport:
    """Verify the store, replace every damaged or missing object a source
    has a good copy of, rewrite damaged packs whose objects are all sound
    again, and report what is still damaged."""
    store = history.store
    report = RepairReport(sources=list(sources or []))
    before = verify(store, full=True, on_progress=on_progress, history=history)
    report.found = before.damage
    wanted = _wanted(store, before)
    if wanted:
        opened = [_open_source(s) for s in report.sources]
        adopted = _adopt_own_copies(store, wanted)
        sizes = _expected_sizes(history, before, wanted)
        report.repaired = adopted + _copy_in(store, wanted - set(adopted), opened, sizes)
        store.forget_cached()
    report.packs_rewritten = _rewrite_damaged_packs(store, before)
    report.still_damaged = _still_damaged(history, before, wanted)
    return report


def _wanted(store: Store, report: VerifyReport) -> set[ObjectId]:
    """Ids to find good copies of: damaged or missing objects and trees."""
    wanted = {d.oid for d in report.damage if d.oid is not None and d.kind in ("object", "tree")}
    return wanted | store.damage.ids()


def _expected_sizes(history: History, before: VerifyReport,
                    wanted: set[ObjectId]) -> dict[ObjectId, int]:
    """The content size our own records give each wanted object: its index
    entry, or for a missing file the size its tree entry records. A source
    claiming another size for the id is not copied from (a crafted chunk
    list under a small object's id would otherwise fill the disk). Missing
    trees and manifests have no recorded size and are left out."""
    sizes = {}
    for oid in wanted:
        entry = history.store.index.lookup(oid)
        if entry is not None:
            sizes[oid] = entry.size
    for d in before.damage:
        if d.oid in wanted and d.oid not in sizes and d.kind == "object" and d.used_by:
            size = _tree_size(history, d.oid, d.used_by[0])
            if size is not None:
                sizes[d.oid] = size
    return sizes


def _tree_size(history: History, oid: ObjectId, use: tuple[ObjectId, bytes]) -> int | None:
    """The size the snapshot ``use`` names records for the file ``oid`` at its path."""
    snap_id, path = use
    try:
        entry = history.entry_at(history.load_snapshot(snap_id).tree, path)
    except (CasError, OSError):
        return None
    return entry.size if entry is not None and entry.oid == oid else None


def _adopt_own_copies(store: Store, wanted: set[ObjectId]) -> list[ObjectId]:
    """Sound loose files of wanted objects that the index does not point to
    (an earlier replacement of a damaged pack entry, which an index rebuild
    passed over for the pack): checked, then indexed in place of the damaged copy."""
    adopted = []
    for oid in sorted(wanted, key=lambda o: o.hex):
        current = store.index.lookup(oid)
        for encoding in (Encoding.RAW, Encoding.ZSTD, Encoding.SEALED_RAW, Encoding.SEALED_ZSTD):
            if current is not None and current.pack is None and current.encoding is encoding:
                continue  # the damaged copy itself
            path = store.layout.loose_path(oid, encoding)
            try:
                stored, size = loose_sizes(oid, encoding, path, store.layout)
            except LOOSE_ERRORS:
                continue
            entry = IndexEntry(oid, encoding, size, stored)
            if store.entry_is_sound(entry):
                store.index.record([entry])
                adopted.append(oid)
                break
    store.damage.clear(adopted)
    return adopted


# -- sources ------------------------------------------------------------------

@dataclass
class _Source:
    path: str
    store_path: str | None = None   # another cas store's, else a directory or file


def _open_source(path: str) -> _Source:
    try:
        other = locate_store(path)
    except StoreNotFound:
        if not os.path.lexists(path):
            raise SourceError(path, "does not exist; name a directory, a file or a cas store "
                                    "holding good copies") from None
        return _Source(path)
    if other == os.path.abspath(path) and not holds_store(other):
        return _Source(path)  # a model directory's own config.json names no store
    return _Source(path, other)


def _copy_in(store: Store, wanted: set[ObjectId], sources: list[_Source],
             sizes: dict[ObjectId, int]) -> list[ObjectId]:
    """Store good copies of ``wanted`` found in the sources; returns the ids replaced."""
    pieces = _chunk_places(store, wanted)
    with _Writers(store, wanted) as writers:
        for source in sources:
            if source.store_path is None:
                _from_files(source.path, wanted - writers.got, pieces, sizes, writers)
            else:
                _from_store(store, source.store_path, wanted - writers.got, pieces, sizes, writers)
    return sorted(writers.replaced, key=lambda o: o.hex)


def _chunk_places(store: Store, wanted: set[ObjectId]) -> dict[ObjectId, list[tuple[ObjectId, int, int]]]:
    """For each chunked file holding a wanted chunk: (chunk, offset, length)
    of each such chunk, so a good copy of the file yields the chunk."""
    places: dict[ObjectId, list[tuple[ObjectId, int, int]]] = {}
    for oid in wanted:
        try:
            content = store.content(oid)
        except (CasError, OSError):
            continue
        if content is None or not content.chunked:
            continue
        for piece in content.pieces:
            if piece.oid in wanted:
                places.setdefault(oid, []).append((piece.oid, piece.offset, piece.length))
    return places


class _Writers:
    """One writer per placement, so that each copy takes the form its damaged
    copy had (model weights raw and whole, for instance)."""

    def __init__(self, store: Store, wanted: set[ObjectId]):
        self.store = store
        self.wanted = wanted
        self.got: set[ObjectId] = set()
        self.replaced: list[ObjectId] = []
        self._writers: dict[Placement, ObjectWriter] = {}
        self._stack = contextlib.ExitStack()

    def for_id(self, oid: ObjectId) -> ObjectWriter:
        placement = _placement(self.store.index.lookup(oid))
        writer = self._writers.get(placement)
        if writer is None:
            writer = self._stack.enter_context(self.store.writer(placement=placement,
                                                                 replace=self.wanted))
            self._writers[placement] = writer
        return writer

    def put_file(self, oid: ObjectId, path: str, expect: tuple[int, int] | None = None,
                 opener: Callable[[int], int] | None = None) -> None:
        stored, _ = self.for_id(oid).put_file(path, expect=expect, opener=opener)
        if stored == oid:
            self.got.add(oid)

    def put_bytes(self, oid: ObjectId, data: bytes) -> None:
        self.for_id(oid).put_bytes(data)
        self.got.add(oid)

    def __enter__(self) -> _Writers:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)
        for writer in self._writers.values():
            self.replaced.extend(writer.replaced)


def _placement(entry: IndexEntry | None) -> Placement:
    if entry is None or entry.chunked:
        return Placement()
    if entry.pack is not None:
        return Placement(raw=entry.encoding.inner is Encoding.RAW)
    # A public object (raw, unsealed in an encrypted store) stays public.
    return Placement(raw=entry.encoding.inner is Encoding.RAW, whole=True,
                     public=entry.encoding is Encoding.RAW)


def _from_files(root: str, wanted: set[ObjectId],
                pieces: dict[ObjectId, list[tuple[ObjectId, int, int]]],
                sizes: dict[ObjectId, int], writers: _Writers) -> None:
    """Hash the files under ``root`` whose size a wanted object (or a file
    holding a wanted chunk) has; store those that are wanted."""
    wanted_sizes = _sizes(wanted | set(pieces), sizes)
    for path, st in _regular_files(root):
        if wanted_sizes is not None and st.st_size not in wanted_sizes:
            continue
        try:
            oid, _ = identify_file(path, expect=(st.st_dev, st.st_ino))
            for chunk, offset, length in pieces.get(oid, ()):
                if chunk not in writers.got:
                    _piece_from_file(path, chunk, offset, length, writers)
            if oid in wanted and oid not in writers.got:
                writers.put_file(oid, path, expect=(st.st_dev, st.st_ino))
        except (SourceError, OSError):
            continue  # vanished, replaced or unreadable: another source may have it


def _sizes(ids: set[ObjectId], sizes: dict[ObjectId, int]) -> set[int] | None:
    """The content sizes of ``ids``; None if one is unknown."""
    if not ids <= sizes.keys():
        return None
    return {sizes[oid] for oid in ids}


def _regular_files(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files at or below ``root``, following no symbolic link."""
    st = os.lstat(root)
    if stat.S_ISREG(st.st_mode):
        yield root, st
        return
    for directory, _, names in os.walk(root, followlinks=False):
        for name in sorted(names):
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield path, st


def _piece_from_file(path: str, chunk: ObjectId, offset: int, length: int,
                     writers: _Writers) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    if hash_bytes(data) == chunk:
        writers.put_bytes(chunk, data)


def _from_store(store: Store, path: str, wanted: set[ObjectId],
                pieces: dict[ObjectId, list[tuple[ObjectId, int, int]]],
                sizes: dict[ObjectId, int], writers: _Writers) -> None:
    """Copy wanted objects out of another store, each checked against its id
    and the size our records give it."""
    if os.path.realpath(path) == os.path.realpath(store.path):
        raise SourceError(path, "is the store being repaired; name another store or directory")
    with Store.open(path) as other:
        for oid in sorted(wanted, key=lambda o: o.hex):
            theirs = other.index.lookup(oid)
            if oid in writers.got or theirs is None:
                continue
            if oid in sizes and theirs.size != sizes[oid]:
                continue  # not the object we lost, whatever its id claims
            _copy_object(store, other, oid, writers)
        for file_id, places in pieces.items():
            for chunk, offset, length in places:
                if chunk not in writers.got and other.has(file_id):
                    _piece_from_store(other, file_id, chunk, offset, length, writers)


def _piece_from_store(other: Store, file_id: ObjectId, chunk: ObjectId, offset: int,
                      length: int, writers: _Writers) -> None:
    """A chunk cut from the other store's copy of a file that holds it
    (cut otherwise there), kept only if it hashes to the chunk's id."""
    data = bytearray(length)
    try:
        if other.entry(file_id).size < offset + length:
            return
        other.read_into(file_id, offset, data)
    except (ObjectDamaged, OSError):
        return  # damaged there too
    if hash_bytes(memoryview(data)) == chunk:
        writers.put_bytes(chunk, bytes(data))


def _reopen(fd: int) -> Callable[[int], int]:
    """Opens the memory file ``fd`` again for reading from its start: a dup
    shares the offset the write left at the end, and small files are read
    from wherever it is (each attempt of put_file opens it anew)."""
    def opener(_flags: int) -> int:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.dup(fd)
    return opener


def _copy_object(store: Store, other: Store, oid: ObjectId, writers: _Writers) -> None:
    """Through a temp file: the content is checked as it is read, and a
    large object never sits in memory whole. ``write_content`` writes no
    more than the size the other store records (checked against ours by the
    caller) however long its files are. In an encrypted store, where no
    plaintext may touch the disk, the temp file is an anonymous one in memory."""
    if store.sealer.encrypted:
        if not hasattr(os, "memfd_create"):
            raise StoreIsEncrypted(f"repairing {oid.short} through a temp file",
                                   "this system has no memory files (memfd_create); repair on Linux")
        temp, fd = "(in memory)", os.memfd_create("cas-repair", os.MFD_CLOEXEC)
    else:
        temp, fd = open_temp(store.layout.tmp, "repair")
    try:
        try:
            other.write_content(oid, fd)
        except ObjectDamaged:
            return  # damaged there too
        # A memory file is read through a second fd; tmp/'s is opened by name.
        opener = _reopen(fd) if store.sealer.encrypted else None
        writers.put_file(oid, temp, opener=opener)
    finally:
        os.close(fd)
        if not store.sealer.encrypted:
            remove_quietly(temp)


# -- packs and the final word -------------------------------------------------

def _rewrite_damaged_packs(store: Store, before: VerifyReport) -> list[ObjectId]:
    """Packs that verify found damaged: once none of the objects the index
    still finds there is damaged, those are copied to a new pack and the
    damaged pack is dropped (its damaged objects live elsewhere now). Packs
    no object is found in any more (a repair stopped before dropping them)
    are dropped too: an index rebuild must not take objects from them."""
    damaged = {d.oid for d in before.damage if d.kind == "pack" and d.oid is not None}
    held: dict[ObjectId, list[IndexEntry]] = {p.pack: [] for p in store.index.packs()}
    for entry in store.entries():
        if entry.pack is not None and entry.pack in held:
            held[entry.pack].append(entry)
    done = []
    for pack, entries in sorted(held.items(), key=lambda item: item[0].hex):
        if entries and pack not in damaged:
            continue
        if entries and (not os.path.exists(store.layout.pack_path(pack))
                        or _check_packed(store, pack, entries)[1]):
            continue  # still holds damage with no good copy: kept for what it has
        if entries:
            rewrite_packs(store, entries)
        drop_packs(store, [pack])
        if pack in damaged:
            done.append(pack)
    return done


def _still_damaged(history: History, before: VerifyReport, wanted: set[ObjectId]) -> list[Problem]:
    """What a quick verify finds, plus each object that was damaged and
    does not read back whole now, plus packs left as they were."""
    store = history.store
    after = verify(store, full=False, history=history)
    found = {(d.kind, d.path): d for d in after.damage}
    used_by = {d.path: d.used_by for d in before.damage}
    for oid in sorted(wanted, key=lambda o: o.hex):
        if ("object", oid.hex) in found or not store.has(oid):
            continue
        try:
            for _ in store.iter_content(oid, check_chunks=True):
                pass
        except ObjectDamaged as e:
            why = str(e).split(": ", 1)[-1].removesuffix(" (run 'cas verify --full')")
            if e.oid != oid.hex:
                why = f"its chunk {e.oid} is damaged"
            found[("object", oid.hex)] = Problem.damage(oid, "object", why, used_by.get(oid.hex, ()))
        except (CasError, OSError) as e:
            why = str(e).split(": ", 1)[-1].removesuffix(" (run 'cas verify --full')")
            found[("object", oid.hex)] = Problem.damage(oid, "object", why, used_by.get(oid.hex, ()))
    kept = {p.pack for p in store.index.packs()}
    for d in before.damage:
        if d.kind == "pack" and d.oid in kept:
            found.setdefault((d.kind, d.path), d)
    return sorted(found.values(), key=lambda d: (d.kind, d.path))
