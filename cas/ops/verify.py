"""``cas verify``: is every indexed object present, whole and correct?

The quick check compares the index with what is on disk (files exist,
sizes match). ``full`` also reads every byte back and checks that each
object hashes to its id and each pack to its name, on all cores.

Every problem found is reported and the check goes on: one damaged object,
record, pack or tree never hides the next.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial

from ..errors import CasError, ManifestInvalid, ObjectDamaged
from ..model.history import SNAPSHOTS, History
from ..model.history import TABLE as SNAPSHOT_TABLE
from ..model.refs import HEADS
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE
from ..model.treelinks import LINK_DIR, Link
from ..objectid import ObjectId, hash_bytes, hash_path
from ..problems import Problem
from ..storage.encoding import Encoding
from ..storage.index import IndexEntry, PackRecord
from ..storage.pack import PackFormatError, read_entries
from ..storage.store import Store
from ..storage.workers import FILE_WORKERS
from .reindex import LOOSE_ERRORS, loose_sizes

# The name other modules know damage by: a ``Problem`` with an id (or name) and kind.
Damage = Problem


@dataclass
class VerifyReport:
    full: bool
    objects: int = 0
    snapshots: int = 0
    bytes_checked: int = 0
    damage: list[Problem] = field(default_factory=list)
    unindexed_objects: int = 0
    unindexed_packs: int = 0
    temp_files: int = 0
    sample: SampleSlice | None = None   # the slice a rotating sample reread
    sampled_objects: int = 0

    @property
    def ok(self) -> bool:
        return not self.damage


# A rotating sample rereads the objects whose first 8 bytes fall in one slice
# of the digest space; the next run starts where this one ended (a cursor
# in the index's meta table), so PERCENT% a run rereads every object at
# least once in ceil(100 / PERCENT) runs, whatever was added meanwhile.
SAMPLE_CURSOR = b"verify_sample_cursor"
_SPACE = 1 << 64


@dataclass(frozen=True)
class SampleSlice:
    start: int   # in [0, 2**64)
    width: int   # in (0, 2**64]

    @classmethod
    def after(cls, cursor: int, percent: float) -> SampleSlice:
        width = min(_SPACE, -(-_SPACE * Fraction(str(percent)) // 100))
        return cls(cursor % _SPACE, max(1, int(width)))

    @property
    def end(self) -> int:
        return (self.start + self.width) % _SPACE

    def holds(self, oid: ObjectId) -> bool:
        return (int.from_bytes(oid.digest[:8], "big") - self.start) % _SPACE < self.width


def verify(store: Store, full: bool = False,
           on_progress: Callable[[int], None] | None = None,
           history: History | None = None,
           sample_percent: float | None = None, advance_sample: bool = True) -> VerifyReport:
    """Check the store; ``sample_percent`` also rereads the next slice of a
    rotating sample (ignored with ``full``, which rereads everything), and
    moves the rotation on unless ``advance_sample`` is false (a dry run)."""
    sample = None
    if sample_percent is not None and not full:
        sample = SampleSlice.after(_sample_cursor(store), sample_percent)
    report = _verify_objects(store, full, on_progress, sample)
    if history is not None:
        _verify_history(history, report)
    if sample is not None and advance_sample:
        _save_sample_cursor(store, sample.start + sample.width)
    _record_damage(store, report)
    return report


def _record_damage(store: Store, report: VerifyReport) -> None:
    """Keep the damaged objects in the store's damage record, where the next
    write of their content looks (and replaces them). A full check also
    clears recorded objects it read back sound: a crash after a repair made
    its copy durable and indexed, but before it cleared the record."""
    damaged = {d.oid for d in report.damage if d.oid is not None and d.kind in _OBJECT_KINDS}
    store.record_damage(damaged)
    if report.full and not store.read_only:
        store.damage.clear(o for o in store.damage.ids() - damaged if store.has(o))


# Damage whose id names an object (a tree is one too); a pack's is a file's.
_OBJECT_KINDS = ("object", "tree")


def _sample_cursor(store: Store) -> int:
    value = store.index.get(b"meta", SAMPLE_CURSOR)
    return int.from_bytes(value, "big") % _SPACE if value and len(value) == 8 else 0


def _save_sample_cursor(store: Store, cursor: int) -> None:
    """Saved once the slice was checked: an interrupted run rereads it next time."""
    if store.read_only:
        return  # nothing to keep it in; the next run starts from the same place
    store.index.update(b"meta", put=[(SAMPLE_CURSOR, (cursor % _SPACE).to_bytes(8, "big"))])


def _verify_objects(store: Store, full: bool, on_progress,
                    sample: SampleSlice | None = None) -> VerifyReport:
    report = VerifyReport(full, sample=sample)
    by_pack: dict[ObjectId, list[IndexEntry]] = defaultdict(list)
    loose: list[IndexEntry] = []
    for entry in store.entries():
        report.objects += 1
        (by_pack[entry.pack] if entry.pack is not None else loose).append(entry)

    _compare_with_disk(store, report, by_pack, loose)

    chunks = _check_chunk_lists(store, report, loose)
    if full:
        jobs = _full_jobs(store, report, by_pack, loose, chunks)
    elif sample is not None:
        jobs = _sample_jobs(store, report, by_pack, loose, sample)
    else:
        return report
    with ThreadPoolExecutor(FILE_WORKERS, "cas-verify") as pool:
        for checked, damage in pool.map(lambda job: job(), jobs):
            report.bytes_checked += checked
            report.damage.extend(damage)
            if on_progress is not None:
                on_progress(checked)
    _attribute_chunk_damage(store, report, loose)
    unique: dict[tuple[str, str], Problem] = {}
    for d in report.damage:  # a chunk shared by several files is reported once
        unique.setdefault((d.kind, d.path), d)
    report.damage = sorted(unique.values(), key=lambda d: (d.kind, d.path))
    return report


Job = Callable[[], tuple[int, list[Problem]]]


def _full_jobs(store, report, by_pack, loose, chunks) -> list[Job]:
    damaged_already = {d.oid for d in report.damage}
    jobs: list[Job] = []
    # Chunks are checked once, while their files are reassembled (which the
    # whole-file check needs anyway), so packs decode only what is not a chunk.
    for pack, entries in by_pack.items():
        if pack not in damaged_already:
            rest = [e for e in entries if e.oid not in chunks]
            jobs.append(partial(_check_pack, store, pack, rest))
    for entry in loose:
        if entry.oid not in damaged_already:
            jobs.append(partial(_check_loose, store, entry))
    return jobs


def _sample_jobs(store, report, by_pack, loose, sample: SampleSlice) -> list[Job]:
    """The objects of the slice, each reread once: a pack whose own id is in
    the slice is rehashed whole (its objects with it); elsewhere only the
    sampled objects are read. A chunked file's chunks are objects of their
    own, sampled by their ids; its chunk list was checked above."""
    damaged_already = {d.oid for d in report.damage}
    jobs: list[Job] = []
    for pack, entries in by_pack.items():
        if pack in damaged_already:
            continue
        if sample.holds(pack):
            picked = entries
            jobs.append(partial(_check_pack, store, pack, entries))
        else:
            picked = [e for e in entries if sample.holds(e.oid)]
            if picked:
                jobs.append(partial(_check_packed, store, pack, picked))
        report.sampled_objects += len(picked)
    for entry in loose:
        if sample.holds(entry.oid) and entry.oid not in damaged_already \
                and not entry.chunked:
            report.sampled_objects += 1
            jobs.append(partial(_check_loose, store, entry))
    return jobs


def _check_chunk_lists(store: Store, report: VerifyReport, loose: list[IndexEntry]) -> set[ObjectId]:
    """Every chunk list readable, and every chunk it names indexed; returns all chunk ids."""
    all_chunks: set[ObjectId] = set()
    damaged = {d.oid for d in report.damage}
    for entry in loose:
        if not entry.chunked or entry.oid in damaged:
            continue
        try:
            chunks = store.contents.resolve(entry).chunks
        except (CasError, OSError) as e:
            report.damage.append(Problem.damage(entry.oid, "object", f"unreadable chunk list ({e})"))
            continue
        all_chunks.update(c for c, _ in chunks)
        problem = _list_problem(store, chunks)
        if problem:
            report.damage.append(Problem.damage(entry.oid, "object", problem))
    return all_chunks


def _list_problem(store: Store, chunks) -> str | None:
    """Why no read can follow a chunk list, from the index alone (one lookup
    a chunk): a chunk missing, itself chunked, or not of its listed length."""
    missing: list[ObjectId] = []
    wrong: list[str] = []
    for oid, length in chunks:
        stored = store.index.lookup(oid)
        if stored is None:
            missing.append(oid)
        elif not wrong and stored.chunked:
            wrong.append(f"names the chunked object {oid.hex} as a chunk; chunks are stored whole")
        elif not wrong and stored.size != length:
            wrong.append(f"lists {length} bytes for chunk {oid.hex}, which has {stored.size}")
    if missing:
        return f"{len(missing)} of its chunks are missing (first {missing[0].hex})"
    return f"its chunk list {wrong[0]}" if wrong else None


def _attribute_chunk_damage(store: Store, report: VerifyReport, loose: list[IndexEntry]) -> None:
    """A damaged chunk damages every chunked file made with it."""
    bad = {d.oid for d in report.damage if d.kind == "object"}
    if not bad:
        return
    for entry in loose:
        if not entry.chunked or entry.oid in bad:
            continue
        try:
            chunks = store.contents.resolve(entry).chunk_ids
        except (CasError, OSError):
            continue
        hit = [c for c in chunks if c in bad]
        if hit:
            report.damage.append(Problem.damage(entry.oid, "object", f"its chunk {hit[0].hex} is damaged"))
            bad.add(entry.oid)


# (path below the tree, id of what is damaged, its kind, why)
TreeProblem = tuple[bytes, ObjectId, str, str]


def _verify_history(history: History, report: VerifyReport) -> None:
    """Every snapshot's record, trees and files present and sound; name who uses damage.

    The cost follows the distinct trees, not the snapshots: a tree shared by
    a thousand snapshots is checked once (``_TreeCheck``), and a snapshot
    costs one record and one index lookup.
    """
    store = history.store
    bad = {d.oid for d in report.damage if d.kind == "object" and d.oid is not None}
    trees = _TreeCheck(history, bad)
    usages: dict[ObjectId, list[tuple[ObjectId, bytes]]] = defaultdict(list)
    reasons: dict[ObjectId, tuple[str, str]] = {}
    records = history.records() if report.full else _quick_records(history)
    for oid, snap, error in records:
        report.snapshots += 1
        if error is not None or snap is None:
            report.damage.append(Problem.damage(oid, "snapshot", _why(error) if error else "unreadable"))
            continue
        # A record's id is its manifest object's id (History.records).
        if not store.index.contains(oid):
            report.damage.append(Problem.damage(oid, "snapshot", "its manifest object is missing"))
        elif oid in bad:
            # The object is the manifest itself; snapshots/<id>.json still holds its bytes.
            usages[oid].append((oid, b"(its manifest)"))
        if snap.model is not None:
            if snap.model in bad:
                usages[snap.model].append((oid, b"(its model manifest)"))
            elif not store.has(snap.model):
                usages[snap.model].append((oid, b"(its model manifest)"))
                reasons.setdefault(snap.model, ("object", "model manifest is missing"))
        problems = trees.known(snap.tree)
        for path, bad_id, what, why in problems if problems is not None else trees.problems(snap.tree):
            usages[bad_id].append((oid, path))
            reasons.setdefault(bad_id, (what, why))
    report.damage = _with_users(report.damage, usages, reasons) + _ref_damage(history)


def _with_users(found: list[Problem], usages: dict[ObjectId, list[tuple[ObjectId, bytes]]],
                reasons: dict[ObjectId, tuple[str, str]]) -> list[Problem]:
    """The damage found, each naming the snapshots and paths that use it;
    then damage only the history walk found (missing content, bad trees)."""
    damage = []
    for d in found:
        if d.oid in usages:
            damage.append(d.with_users(tuple(usages.pop(d.oid))))
        else:
            damage.append(d)
    for oid, used in usages.items():
        what, why = reasons[oid]
        damage.append(Problem.damage(oid, what, why, tuple(used)))
    return damage


def _quick_records(history: History) -> Iterator[tuple[ObjectId, Snapshot | None, CasError | None]]:
    """Every record in ``snapshots/``, as ``History.records`` gives them, checked
    as the quick check checks objects: the file is there, a regular file of
    the recorded size. Its bytes come from the index's copy when that hashes
    to the id (reading 100,000 small files cost seconds); otherwise from the
    file, hash-checked. ``--full`` rereads every file instead."""
    directory = os.path.join(history.store.path, SNAPSHOTS)
    try:
        # Named by their ids, or in an encrypted store by their names (§18.3).
        listing = sorted((oid, e) for e in os.scandir(directory)
                         if (oid := history.recorded_id(e.name)) is not None)
    except FileNotFoundError:
        return
    index = history.store.index
    for oid, entry in listing:
        data = index.get(SNAPSHOT_TABLE, oid.digest)
        try:
            if data is None or hash_bytes(data) != oid or \
                    not _sound_file(entry, history.record_size(data)):
                yield oid, history.load_record(oid), None  # the file decides, and says why
            else:
                yield oid, Snapshot.from_json(data, oid), None
        except CasError as e:
            yield oid, None, e


def _sound_file(entry: os.DirEntry, size: int) -> bool:
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def _text(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _why(error: Exception) -> str:
    return str(error).removesuffix("; nothing was written for it")


def _ref_damage(history: History) -> list[Problem]:
    """Refs that are not readable refs, or that name a snapshot the store lacks."""
    damage = [Problem.damage(None, "ref", why, name=ref) for ref, why in history.refs.unreadable()]
    refs = [(HEADS + n, o) for n, o in history.refs.branches().items()]
    refs += [("refs/tags/" + n, o) for n, o in history.refs.tags().items()]
    refs += [("refs/models/" + n, o) for n, o in history.refs.models().items()]
    for ref, oid in refs:
        if not history.is_recorded(oid) and not history.store.has(oid):
            damage.append(Problem.damage(None, "ref", f"names snapshot {oid.hex}, which is not in the store",
                                 name=ref))
    return damage


class _TreeCheck:
    """Problems below a tree, each tree checked once however many snapshots share it.

    Post-order over an explicit stack (a crafted chain of thousands of
    nested trees must not end in RecursionError); a tree that would contain
    itself is reported, not walked forever.
    """

    def __init__(self, history: History, bad: set[ObjectId]):
        self.history = history
        self.bad = bad
        self.bad_digests = {o.digest for o in bad}
        # Keyed by digest, not ObjectId: the walk visits millions of links,
        # and building and hashing an ObjectId for each was a third of it.
        self.memo: dict[bytes, list[TreeProblem]] = {}
        # Content size by digest (-1: not indexed), looked up once per file
        # object: a new version of a directory repeats all but its changed
        # entries, and a lookup per entry per tree was a third of verify.
        self.sizes: dict[bytes, int] = {}

    def known(self, tree_id: ObjectId) -> list[TreeProblem] | None:
        return self.memo.get(tree_id.digest)

    def problems(self, root: ObjectId) -> list[TreeProblem]:
        # Each open tree stays on the stack with its links: loading it
        # again when its children are done would read every parent twice.
        memo = self.memo
        stack: list[tuple[bytes, list[Link] | None]] = [(root.digest, None)]
        open_trees: set[bytes] = set()
        while stack:
            tree, links = stack[-1]
            if tree in memo:
                stack.pop()
                continue
            if links is None:
                if (links := self._links(tree)) is None:
                    stack.pop()
                    continue
                stack[-1] = (tree, links)
            below = [d for k, d, _ in links if k == LINK_DIR and d not in memo]
            if tree not in open_trees and below:
                open_trees.add(tree)
                for child in below:
                    if child in open_trees:
                        memo[child] = [(b"", ObjectId(child), "tree", "it contains itself")]
                    else:
                        stack.append((child, None))
                continue
            stack.pop()
            open_trees.discard(tree)
            memo[tree] = self._collect(tree, links)
        self.history.tree_links.flush()
        return memo[root.digest]

    def _links(self, tree: bytes) -> list[Link] | None:
        """What the tree names (kind, id, size), or None once its own
        damage is recorded. From the index's record of the tree when it
        has one: parsing every tree was most of verify's time."""
        tree_id = ObjectId(tree)
        if tree in self.bad_digests:
            self.memo[tree] = [(b"", tree_id, "object", "tree is damaged")]
            return None
        try:
            if not self.history.store.index.contains(tree_id):  # its links may outlive it
                raise ManifestInvalid(f"tree {tree_id.hex}", "it is missing from the store")
            return self.history.tree_links.get(tree_id)
        except (CasError, OSError) as e:
            self.memo[tree] = [(b"", tree_id, "tree", _why(e))]
            return None

    def _collect(self, tree: bytes, links) -> list[TreeProblem]:
        """The problems below a tree; only a tree that has some is parsed,
        for the names its problems are reported under."""
        memo, bad, sizes = self.memo, self.bad_digests, self.sizes
        for kind, digest, size in links:
            if kind == LINK_DIR:
                if memo.get(digest):
                    break
            elif digest in bad or (sizes.get(digest) if digest in sizes else self._size(digest)) != size:
                break
        else:
            return []
        tree_id = ObjectId(tree)
        try:
            return self._named(tree_id, self.history.load_tree(tree_id))
        except (CasError, OSError) as e:
            return [(b"", tree_id, "tree", _why(e))]

    def _named(self, tree_id: ObjectId, tree) -> list[TreeProblem]:
        found: list[TreeProblem] = []
        for entry in tree.entries:
            if entry.kind == DIR:
                for path, oid, what, why in self.memo.get(entry.oid.digest, ()):
                    found.append((entry.name + (b"/" + path if path else b""), oid, what, why))
            elif entry.kind == FILE:
                if entry.oid in self.bad:
                    found.append((entry.name, entry.oid, "object", "content is damaged"))
                    continue
                size = self._size(entry.oid.digest)
                if size < 0:
                    found.append((entry.name, entry.oid, "object", "content is missing"))
                elif size != entry.size:
                    found.append((entry.name, tree_id, "tree",
                                  f"records {entry.size} bytes for '{_text(entry.name)}', whose content "
                                  f"object {entry.oid.short} has {size}"))
        return found

    def _size(self, digest: bytes) -> int:
        size = self.sizes.get(digest)
        if size is None:
            stored = self.history.store.index.lookup(ObjectId(digest))
            size = self.sizes[digest] = -1 if stored is None else stored.size
        return size


def _compare_with_disk(store: Store, report: VerifyReport,
                       by_pack: dict[ObjectId, list[IndexEntry]], loose: list[IndexEntry]) -> None:
    indexed_packs = {p.pack: p for p in store.index.packs()}
    for pack, entries in by_pack.items():
        _compare_pack(store, report, pack, entries, indexed_packs.get(pack))
    for e in loose:
        path = store.layout.loose_path(e.oid, e.encoding)
        try:
            size = os.stat(path).st_size
        except OSError as err:
            report.damage.append(Problem.damage(e.oid, "object", f"its file {_stat_why(err)}"))
            continue
        if size != e.stored_length:
            report.damage.append(Problem.damage(e.oid, "object", f"its file has {size} bytes, "
                                                f"{e.stored_length} recorded"))
    _check_unindexed(store, report, {e.oid for e in loose}, indexed_packs)
    try:
        report.temp_files = len(os.listdir(store.layout.tmp))
    except OSError:
        pass


def _compare_pack(store: Store, report: VerifyReport, pack: ObjectId, entries: list[IndexEntry],
                  record: PackRecord | None) -> None:
    """A pack file is there, of its recorded size, holding every entry's bytes."""
    try:
        size = os.stat(store.layout.pack_path(pack)).st_size
    except OSError as err:
        report.damage.append(Problem.damage(pack, "pack", f"pack file {_stat_why(err)} "
                                            f"({len(entries)} objects lost)"))
        for lost in entries:
            report.damage.append(Problem.damage(lost.oid, "object", f"its pack {pack.short} is missing"))
        return
    if record is not None and record.file_size != size:
        report.damage.append(Problem.damage(pack, "pack", f"has {size} bytes, {record.file_size} recorded"))
    for e in entries:
        if e.offset + e.stored_length > size:
            report.damage.append(Problem.damage(e.oid, "object", f"lies past the end of pack {pack.short}"))


def _stat_why(err: OSError) -> str:
    return "is missing" if isinstance(err, FileNotFoundError) else f"cannot be read ({err.strerror})"


def _check_unindexed(store: Store, report: VerifyReport, indexed_loose, indexed_packs) -> None:
    """Files the index does not list: complete ones are harmless (an
    interrupted write left them; rebuild adopts them), but one that
    ``cas index rebuild`` would reject is damage, and is reported as such."""
    for oid, encoding, path in store.layout.scan_loose():
        if oid in indexed_loose:
            continue
        try:
            loose_sizes(oid, encoding, path, store.layout)
            report.unindexed_objects += 1
        except LOOSE_ERRORS as e:
            # Named by its path: the id may also be indexed in a sound pack.
            report.damage.append(Problem.damage(None, "file", f"not in the index and unreadable ({e}); "
                                        "'cas index rebuild' leaves it out", name=path))
    for pack, path in store.layout.scan_packs():
        if pack in indexed_packs:
            continue
        try:
            read_entries(path, store.sealer)
            report.unindexed_packs += 1
        except (PackFormatError, OSError) as e:
            report.damage.append(Problem.damage(pack, "pack", f"not in the index and unreadable ({e}); "
                                        "'cas index rebuild' leaves it out"))


def _check_pack(store: Store, pack: ObjectId, entries: list[IndexEntry]) -> tuple[int, list[Problem]]:
    try:
        with open(store.layout.pack_path(pack), "rb") as f:
            data = f.read()
    except OSError as e:
        return 0, [Problem.damage(pack, "pack", f"cannot be read ({e.strerror})")]
    damage = []
    if hash_bytes(data) != pack:
        damage.append(Problem.damage(pack, "pack", "file does not hash to its name"))
    view = memoryview(data)
    for entry in entries:
        why = _check_content(store, entry, bytes(view[entry.offset:entry.offset + entry.stored_length]))
        if why:
            damage.append(Problem.damage(entry.oid, "object", f"{why} (in pack {pack.short})"))
    return len(data), damage


def _check_packed(store: Store, pack: ObjectId, entries: list[IndexEntry]) -> tuple[int, list[Problem]]:
    """Some objects of a pack, each read and hashed (the pack as a whole is not)."""
    checked, damage = 0, []
    for e in entries:
        try:
            stored = store.read_stored(e)
        except (CasError, OSError) as err:
            damage.append(Problem.damage(e.oid, "object", f"unreadable ({err})"))
            continue
        checked += len(stored)
        why = _check_content(store, e, stored)
        if why:
            damage.append(Problem.damage(e.oid, "object", f"{why} (in pack {pack.short})"))
    return checked, damage


def _check_content(store: Store, entry: IndexEntry, stored: bytes) -> str | None:
    """Why a packed object's stored bytes are not its content, or None."""
    try:
        content = store.contents.decode(entry, stored)
    except ObjectDamaged as e:
        return str(e).split(": ", 1)[-1].removesuffix(" (run 'cas verify --full')")
    if len(content) != entry.size:
        return f"has {len(content)} bytes, {entry.size} recorded"
    if hash_bytes(content) != entry.oid:
        return "content does not hash to its id"
    return None


def _check_loose(store: Store, entry: IndexEntry) -> tuple[int, list[Problem]]:
    path = store.layout.loose_path(entry.oid, entry.encoding)
    try:
        if entry.encoding is Encoding.RAW:
            if hash_path(path) != entry.oid:
                return entry.stored_length, [Problem.damage(entry.oid, "object", "content does not hash to its id")]
            return entry.stored_length, []
        for _ in store.iter_content(entry.oid, check_chunks=True):
            pass
    except ObjectDamaged as e:
        why = str(e).split(": ", 1)[-1].removesuffix(" (run 'cas verify --full')")
        if e.oid != entry.oid:  # one of its chunks
            chunk = ObjectId.parse(e.oid)
            return entry.stored_length, [Problem.damage(chunk, "object", why),
                                         Problem.damage(entry.oid, "object", f"its chunk {e.oid} is damaged")]
        return entry.stored_length, [Problem.damage(entry.oid, "object", why)]
    except (OSError, CasError) as e:
        return entry.stored_length, [Problem.damage(entry.oid, "object", f"unreadable ({e})")]
    return entry.stored_length, []
