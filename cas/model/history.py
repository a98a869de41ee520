"""The history of a store: its snapshots, their trees, and the refs naming them.

A snapshot is recorded in three places, in this order, so that a crash at
any point leaves a consistent store:

1. its manifest (and every tree and file it reaches) as objects, flushed
   and indexed;
2. a copy of the manifest as ``snapshots/<id>.json``: the durable list of
   snapshots that history commands, gc and an index rebuild start from;
3. the branch ref, moved to it, by compare-and-swap under ``refs/lock``:
   if another writer moved the branch since this snapshot began, the
   snapshot is re-parented onto the new head (same tree, new parent) and
   the swap tried again, so neither snapshot drops out of history.

A record is trusted only when its bytes hash to its name, and every walk
over history is iterative and stops at a loop: crafted or damaged files
are reported, never followed forever.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

from ..durable import atomic_output
from ..errors import (
    AmbiguousRef,
    BranchNotInHistory,
    CasError,
    HistoryTooShort,
    ManifestInvalid,
    NoSnapshotAt,
    NoSnapshotsYet,
    ObjectNotFound,
    PathNotInSnapshot,
    RefMovedMeanwhile,
    RefNotFound,
)
from ..objectid import HEX_LENGTH, ObjectId, hash_bytes, is_hex
from ..storage.audit import AuditLog
from ..storage.crypto import sealed_size
from ..storage.store import Store
from ..storage.writer import ObjectWriter
from .log import LogEntry, LogQuery, walk_log
from .refs import HEADS, TAGS, Refs, looks_like_id, open_sealed, read_small_file
from .snapshot import Snapshot
from .timeline import Timeline, TimelineEntry, entry_key
from .tree import DIR, Tree, TreeEntry
from .treediff import whole_tree_or
from .treelinks import TreeLinks
from .treewalk import TreeWalk

__all__ = ["History", "LogEntry", "TimelineEntry", "local_time"]

SNAPSHOTS = "snapshots"
RECORD_SUFFIX = ".json"
TABLE = b"snapshots"
_ANCESTRY = re.compile(r"^(.*?)((?:~\d*)*)$")
# No history is a billion snapshots deep; more digits than this in ~N is
# "beyond the start", not a number to convert (Python refuses 4,300 digits).
_MAX_STEP_DIGITS = 12
# A snapshot record is a few hundred bytes; a long message fits many times
# over. More is damage (a link to /dev/zero), not something to read whole.
MAX_RECORD_BYTES = 16 << 20
# Each retry means another writer recorded a snapshot on the branch in the
# meantime; this many in a row is a runaway loop, not contention.
_RECORD_ATTEMPTS = 1000
# Bounded by entries, not trees: a few trees of 100,000 files must not pin
# hundreds of MB (a tree entry costs about 300 bytes in memory).
_TREE_CACHE_ENTRIES = 1 << 18
# How far back through forgotten (not yet collected) snapshots a listing
# looks for the snapshot a branch was forked from.
_FORGOTTEN_STEPS = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class History:
    def __init__(self, store: Store):
        self.store = store
        self.refs = Refs(store)
        self._trees: OrderedDict[ObjectId, Tree] = OrderedDict()
        self._cached_entries = 0
        self._dir = os.path.join(store.path, SNAPSHOTS)
        self._timeline = Timeline(store, self._dir, self._timeline_entry)
        self.tree_links = TreeLinks(store, self.load_tree)
        # What this history recorded and dropped, for the audit trail.
        self.snapshots_created: list[ObjectId] = []
        self.snapshots_removed: list[ObjectId] = []

    # -- reading -------------------------------------------------------------

    def load_tree(self, oid: ObjectId) -> Tree:
        tree = self._trees.get(oid)
        if tree is None:
            try:
                data = self.store.read_object(oid)
            except ObjectNotFound:
                raise ManifestInvalid(f"tree {oid.hex}", "it is missing from the store") from None
            tree = Tree.from_json(data, oid)
            self._trees[oid] = tree
            self._cached_entries += len(tree.entries)
            while self._cached_entries > _TREE_CACHE_ENTRIES and len(self._trees) > 1:
                _, old = self._trees.popitem(last=False)
                self._cached_entries -= len(old.entries)
        else:
            self._trees.move_to_end(oid)
        return tree

    def load_snapshot(self, oid: ObjectId) -> Snapshot:
        # The index mirror is a cache: bytes that do not hash to the id
        # (an edited record copied in by an old rebuild) are passed over.
        data = self.store.index.get(TABLE, oid.digest)
        if data is None or hash_bytes(data) != oid:
            try:
                data = self.store.read_object(oid)
            except ObjectNotFound:
                data = self._read_record(oid)
        return Snapshot.from_json(data, oid)

    def record_file(self, oid: ObjectId) -> str:
        """The file name of a snapshot's record in ``snapshots/``: its id, in
        an encrypted store its name (docs/FORMAT.md §18.7)."""
        return self.store.sealer.name(oid).hex + RECORD_SUFFIX

    def recorded_id(self, file_name: str) -> ObjectId | None:
        """The snapshot a file name in ``snapshots/`` is the record of; None
        for a name no record has."""
        if len(file_name) != HEX_LENGTH + len(RECORD_SUFFIX) or not file_name.endswith(RECORD_SUFFIX) \
                or not is_hex(file_name[:HEX_LENGTH]):
            return None
        return self.store.sealer.unname(ObjectId.parse(file_name[:HEX_LENGTH]))

    def record_size(self, data: bytes) -> int:
        """The size of the record file holding the record ``data``."""
        return sealed_size(len(data)) if self.store.sealer.encrypted else len(data)

    def _record_path(self, oid: ObjectId) -> str:
        return os.path.join(self._dir, self.record_file(oid))

    def _read_record(self, oid: ObjectId) -> bytes:
        """``snapshots/<id>.json``, refused unless its bytes hash to ``<id>``."""
        relpath = f"{SNAPSHOTS}/{self.record_file(oid)}"
        sealed = self.store.sealer.encrypted
        raw = read_small_file(self._record_path(oid), sealed_size(MAX_RECORD_BYTES) if sealed
                              else MAX_RECORD_BYTES)
        if raw is None:
            raise ObjectNotFound(oid.hex)
        data = open_sealed(self.store, relpath, raw)
        if data is None:
            raise ManifestInvalid(f"snapshot record {relpath}", "it does not open under this store's "
                                  "keys (damaged, or moved from another file)")
        if hash_bytes(data) != oid:
            raise ManifestInvalid(f"snapshot record {relpath}",
                                  "its bytes do not hash to its name (edited or damaged)")
        return data

    def load_record(self, oid: ObjectId) -> Snapshot:
        return Snapshot.from_json(self._read_record(oid), oid)

    def snapshots(self) -> list[Snapshot]:
        """Every recorded (not forgotten) snapshot, oldest first.

        Read from the ``snapshots/`` files, the durable list that gc marks
        from: a damaged file is an error here, never a snapshot skipped.
        """
        snaps = [self.load_record(oid) for oid in self._recorded_ids()]
        return sorted(snaps, key=lambda s: (s.time_ns, s.oid))

    def listed_snapshots(self, branch: str | None = None) -> list[Snapshot]:
        """Every recorded snapshot (of ``branch``, if given), oldest first,
        as the timeline lists them, each from the index's copy of its
        record when that still hashes to its id.

        For views of history (stats, reports): several times faster than
        ``snapshots()``, which reads every file and is what gc and verify
        must use.
        """
        entries = self._timeline.everything() if branch is None else self.timeline(branch)[::-1]
        entries.sort(key=lambda e: (e.time_ns, e.oid.digest))
        return [self.load_snapshot(e.oid) for e in entries]

    def records(self) -> Iterator[tuple[ObjectId, Snapshot | None, CasError | None]]:
        """Every recorded snapshot's id with its manifest, or the error reading it.

        For checks that report each damaged record and go on (verify,
        index rebuild), where ``snapshots()`` stops at the first.
        """
        for oid in sorted(self._recorded_ids()):
            try:
                yield oid, self.load_record(oid), None
            except CasError as e:
                yield oid, None, e

    def _recorded_ids(self) -> list[ObjectId]:
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return []
        return [oid for oid in map(self.recorded_id, names) if oid is not None]

    def is_recorded(self, oid: ObjectId) -> bool:
        return os.path.exists(self._record_path(oid))

    # -- the timeline: recorded snapshots by branch and time -------------------

    def _timeline_entry(self, oid: ObjectId) -> TimelineEntry:
        snap = self.load_snapshot(oid)
        return TimelineEntry(oid, snap.time_ns, snap.branch)

    def timeline(self, branch: str) -> list[TimelineEntry]:
        """Every recorded snapshot of ``branch``, newest first."""
        return self._timeline.newest(branch)

    def branches_in_history(self) -> list[str]:
        """Every branch that has a recorded snapshot (its ref may be gone)."""
        return sorted({e.branch for e in self._timeline.everything()})

    def every_entry(self) -> list[TimelineEntry]:
        """Every recorded snapshot of every branch, newest first."""
        return sorted(self._timeline.everything(), key=lambda e: (e.time_ns, e.oid.digest), reverse=True)

    def lineage(self, start: Snapshot, whole_branch: bool = False,
                page: int = 64) -> Iterator[TimelineEntry]:
        """``start`` and the recorded snapshots before it, newest first;
        with ``whole_branch``, every recorded snapshot of its branch.

        History is the set of recorded snapshots of the branch, not a chain
        of parents: a forgotten snapshot in the middle hides nothing older.
        A branch forked from another continues into the snapshots of that
        branch before the fork.
        """
        for branch, before in self._stretches(start, whole_branch):
            size = page
            while True:
                entries = self._timeline.newest(branch, size, before)
                yield from entries
                if len(entries) < size:
                    break
                last, size = entries[-1], 1024  # later pages: fewer, larger reads
                before = entry_key(last.branch, last.time_ns, last.oid)

    def _stretches(self, start: Snapshot, whole_branch: bool) -> Iterator[tuple[str, bytes | None]]:
        """(branch, key bound) of each stretch of history from ``start`` back:
        its branch, then the branch it was forked from, before the fork."""
        snap, seen = start, {start.stored_id}
        while True:
            before = None if whole_branch else entry_key(snap.branch, snap.time_ns, snap.oid) + b"\0"
            yield snap.branch, before
            oldest = self._timeline.oldest(snap.branch)
            below = oldest is not None and (before is None or
                                            entry_key(oldest.branch, oldest.time_ns, oldest.oid) < before)
            fork = self._recorded_ancestor(
                self.load_snapshot(oldest.oid) if below and oldest is not None else snap, seen)
            if fork is None or fork.branch == snap.branch:
                return
            snap, whole_branch = fork, False

    def _recorded_ancestor(self, snap: Snapshot, seen: set[ObjectId]) -> Snapshot | None:
        """The nearest recorded ancestor of ``snap``, through forgotten
        snapshots whose manifests are still stored (until gc): a fork whose
        first snapshots were thinned away still leads back to its base."""
        oid = snap.parent
        for _ in range(_FORGOTTEN_STEPS):
            if oid is None or oid in seen:
                return None
            seen.add(oid)
            try:
                ancestor = self.load_snapshot(oid)
            except CasError:
                return None  # collected by gc: the recorded history ends here
            if self.is_recorded(oid):
                return ancestor
            oid = ancestor.parent
        return None

    def at_time(self, branch: str, time_ns: int) -> Snapshot | None:
        """The newest snapshot in ``branch``'s history at or before ``time_ns``
        (a forked branch's history goes on into its base)."""
        head = self.branch_head(branch)
        stretches = self._stretches(head, head.branch == branch) if head else [(branch, None)]
        for name, before in stretches:
            bound = entry_key(name, time_ns + 1)
            found = self._timeline.newest(name, 1, bound if before is None else min(bound, before))
            if found:
                return self.load_snapshot(found[0].oid)
        return None

    def at(self, branch: str | None, time_ns: int,
           show_time: Callable[[int], str] | None = None) -> Snapshot:
        """The newest snapshot of ``branch`` (default HEAD's) at or before
        ``time_ns``, as ``restore --at`` picks it.

        A time before the branch's history begins raises ``NoSnapshotAt``,
        saying when its first snapshot is (times shown by ``show_time``,
        by default in local time).
        """
        show_time = show_time or local_time
        branch = branch or self.refs.head_branch()
        snap = self.at_time(branch, time_ns)
        if snap is not None:
            return snap
        head = self.branch_head(branch)
        # As at_time reads it: a deleted branch's recorded snapshots still count.
        entries = self.lineage(head, whole_branch=head.branch == branch) if head else \
            self.timeline(branch)
        oldest = deque(entries, maxlen=1)
        if not oldest:
            raise NoSnapshotsYet(branch) if branch == self.refs.head_branch() else \
                BranchNotInHistory(branch)
        first = oldest[0]
        raise NoSnapshotAt(branch, show_time(time_ns), first.oid.short, show_time(first.time_ns))

    def log(self, start: str = "HEAD", *, all_branches: bool = False, limit: int | None = None,
            since: int | None = None, until: int | None = None, paths: Sequence[bytes] = (),
            changes: bool = False, decorate: bool = True) -> list[LogEntry]:
        """What ``cas log`` lists, newest first: every recorded snapshot of
        ``start``'s branch from ``start`` back (every branch with
        ``all_branches``), at most ``limit``, within ``since``..``until``.

        With ``paths`` (tree-relative, '/'-separated bytes), only snapshots
        where one of them changed, a deletion included. With ``changes``,
        each entry carries its changes (restricted to ``paths``); decorations
        (branch and tag names) unless ``decorate`` is false.
        """
        if all_branches:
            entries: Iterator[TimelineEntry] = iter(self.every_entry())
        else:
            snap = self._log_start(start)
            # A branch names all of its history; a new fork's head is still
            # a snapshot of its base, listed from there back.
            whole = self.branch_named(start) == snap.branch
            entries = self.lineage(snap, whole_branch=whole)
        query = LogQuery(limit, since, until, tuple(whole_tree_or(paths) or ()), changes,
                         all_branches, decorate)
        return walk_log(self, entries, query)

    def _log_start(self, spec: str) -> Snapshot:
        try:
            return self.resolve(spec)
        except RefNotFound:
            branch = self.refs.head_branch()
            if spec.strip().split("~")[0] in ("", "HEAD") and self.branch_head(branch) is None:
                raise NoSnapshotsYet(branch) from None
            raise

    def branch_head(self, branch: str) -> Snapshot | None:
        oid = self.refs.get(HEADS + branch)
        return self.load_snapshot(oid) if oid else None

    def ancestors(self, start: Snapshot) -> Iterator[Snapshot]:
        """``start`` and its first-parent ancestors, newest first.

        The walk ends at a root, or at a parent that was forgotten: that is
        the end of the recorded history, not damage.
        """
        snap: Snapshot | None = start
        seen: set[ObjectId] = set()
        while snap is not None:
            oid = snap.stored_id
            if oid in seen:
                raise ManifestInvalid(f"snapshot {oid.hex}", "its chain of parents loops back to it")
            seen.add(oid)
            yield snap
            parent = snap.parent
            snap = self.load_snapshot(parent) if parent and self.is_recorded(parent) else None

    def resolve(self, spec: str) -> Snapshot:
        """HEAD, a branch, a tag, an id or unique prefix, each optionally with ~N."""
        match = _ANCESTRY.match(spec.strip())
        if match is None:   # a line break in the name: '.' does not cross it
            raise RefNotFound(spec)
        base, tildes = match.groups()
        counts = tildes.split("~")[1:] if tildes else []
        snap = self._resolve_base(base or "HEAD", spec)
        if any(len(t) > _MAX_STEP_DIGITS for t in counts):
            raise HistoryTooShort(spec, sum(1 for _ in self.lineage(snap)))
        steps = sum(int(t) if t else 1 for t in counts)
        if steps == 0:
            return snap
        # The Nth older recorded snapshot, counting from ``snap`` itself
        # (which a ref may name without it being listed: then it is ~0 only).
        older = (e for e in self.lineage(snap) if e.oid != snap.oid)
        depth = 0
        for depth, entry in enumerate(older, start=1):
            if depth == steps:
                return self.load_snapshot(entry.oid)
        raise HistoryTooShort(spec, depth + 1)

    def branch_named(self, spec: str) -> str | None:
        """The branch ``spec`` names as a whole (HEAD or a branch name, no ~N)."""
        spec = spec.strip()
        if spec == "HEAD":
            return self.refs.head_branch()
        for ref in (spec, HEADS + spec):
            if ref.startswith(HEADS) and self.refs.get(ref) is not None:
                return ref[len(HEADS):]
        return None

    def _resolve_base(self, base: str, spec: str) -> Snapshot:
        if base == "HEAD":
            snap = self.branch_head(self.refs.head_branch())
            if snap is None:
                raise RefNotFound(f"HEAD (branch {self.refs.head_branch()} has no snapshots yet)")
            return snap
        by_id = self._by_id_prefix(base)
        if by_id is not None and len(base) == HEX_LENGTH:
            return self.load_snapshot(by_id)  # a whole id is never shadowed by a ref
        for ref in (base, HEADS + base, TAGS + base):
            if ref.startswith("refs/"):
                oid = self.refs.get(ref)
                if oid is not None:
                    if by_id is not None and by_id != oid and ref != base:
                        raise AmbiguousRef(base, ref, by_id.hex)
                    return self.load_snapshot(oid)
        if by_id is not None:
            return self.load_snapshot(by_id)
        raise RefNotFound(spec)

    def _by_id_prefix(self, text: str) -> ObjectId | None:
        """The one recorded snapshot whose id starts with ``text``, if any."""
        if not looks_like_id(text):
            return None
        text = text.lower()
        matches = [o for o in self._recorded_ids() if o.hex.startswith(text)]
        return matches[0] if len(matches) == 1 else None

    def entry_at(self, tree_id: ObjectId, path: bytes, snapshot: str = "") -> TreeEntry | None:
        """The entry at ``path`` (relative, '/'-separated) in a tree; None for the root."""
        parts = [p for p in path.split(b"/") if p and p != b"."]
        entry = None
        current = tree_id
        for i, part in enumerate(parts):
            entry = self.load_tree(current).get(part)
            if entry is None or (i < len(parts) - 1 and (entry.kind != DIR or entry.oid is None)):
                raise PathNotInSnapshot(os.fsdecode(path), snapshot)
            current = entry.oid or current
        return entry

    def walk(self, tree_id: ObjectId, prefix: bytes = b"") -> Iterator[tuple[bytes, TreeEntry]]:
        """Every entry below a tree, depth first, with its relative path
        (``TreeWalk``: no recursion, and a loop or runaway reuse of subtrees
        in a crafted tree is an error)."""
        for path, entry, _ in TreeWalk(self.load_tree, tree_id, prefix):
            yield path, entry

    # -- writing -------------------------------------------------------------

    def record(self, snapshot: Snapshot, writer: ObjectWriter, ref: str | None = None) -> Snapshot:
        """Store a snapshot, list it, and move its ref (by default its branch) to it.

        The ref moves only if it still names the snapshot's first parent
        (compare-and-swap under the refs lock). If another writer moved it
        meanwhile, the snapshot is re-parented onto the new head and stored
        again; only the snapshot that lands is recorded.
        """
        ref = ref or HEADS + snapshot.branch
        if snapshot.audit_head is None:
            head = AuditLog(self.store.path).head()
            if head is not None:
                snapshot = dataclasses.replace(snapshot, audit_head=(*head, self.store.config.store_id))
        for _ in range(_RECORD_ATTEMPTS):
            data = snapshot.to_json()
            oid = writer.put_bytes(data)
            writer.flush()
            with self.refs.locked():
                current = self.refs.get(ref)
                if current == snapshot.parent:
                    before = self._timeline.stamp()
                    self._write_record(oid, data)
                    self._timeline.change(before, add=[TimelineEntry(oid, snapshot.time_ns,
                                                                     snapshot.branch)],
                                          also={TABLE: ([(oid.digest, data)], ())})
                    self.refs.write_locked(ref, oid)
                    self.snapshots_created.append(oid)
                    return Snapshot.from_json(data, oid)
            snapshot = self._reparented(snapshot, current, ref)
        raise RefMovedMeanwhile(ref, f"moved {_RECORD_ATTEMPTS} times while this snapshot was recorded")

    def add_records(self, snapshots: Sequence[tuple[Snapshot, bytes]]) -> None:
        """Record stored snapshots with their exact manifest bytes (copied
        from another store; their objects are durable and indexed): every
        file, then one index transaction for the mirror and the timeline,
        under the refs lock. Refs are the caller's to move."""
        if not snapshots:
            return
        with self.refs.locked():
            before = self._timeline.stamp()
            for snap, data in snapshots:
                self._write_record(snap.stored_id, data)
            self._timeline.change(
                before, add=[TimelineEntry(s.stored_id, s.time_ns, s.branch) for s, _ in snapshots],
                also={TABLE: ([(s.stored_id.digest, d) for s, d in snapshots], ())})
        self.snapshots_created.extend(s.stored_id for s, _ in snapshots)

    def _write_record(self, oid: ObjectId, data: bytes) -> None:
        """``snapshots/<id>.json`` (named and sealed in an encrypted store), durably."""
        sealed = self.store.sealer.seal_file(f"{SNAPSHOTS}/{self.record_file(oid)}", data)
        with atomic_output(self._record_path(oid), self.store.layout.tmp,
                           self.store.layout.modes.file) as f:
            f.write(sealed)

    def _reparented(self, snapshot: Snapshot, head_id: ObjectId | None, ref: str) -> Snapshot:
        """``snapshot`` with ``head_id`` (the ref's new value) as its first parent."""
        if head_id is None:  # the ref was deleted meanwhile: start it again
            return dataclasses.replace(snapshot, parents=(), oid=None)
        head = self.load_snapshot(head_id)
        if ref.startswith(HEADS) and head.source != snapshot.source:
            # Two directories raced for one new branch name: putting one's
            # snapshot on top of the other's would mix their histories.
            raise RefMovedMeanwhile(ref, f"was taken by {head.source} meanwhile")
        number = snapshot.model_version
        if number is not None and head.model_version is not None:
            number = head.model_version + 1  # a model version is its parent's number plus one
        return dataclasses.replace(snapshot, parents=(head_id,) + snapshot.parents[1:],
                                   model_version=number, oid=None)

    def forget(self, oid: ObjectId) -> None:
        self.forget_many([oid])

    def forget_many(self, items: list[ObjectId | TimelineEntry]) -> None:
        """Drop records: one directory fsync and one index transaction for all.

        Entries (from ``timeline``) carry what the timeline needs; for a bare
        id the record is read first, and one that cannot be read leaves the
        timeline to resynchronise.
        """
        entries, in_step = [], True
        for item in items:
            if isinstance(item, TimelineEntry):
                entries.append(item)
                continue
            try:
                entries.append(self._timeline_entry(item))
            except CasError:
                in_step = False
                entries.append(TimelineEntry(item, 0, ""))
        with self.refs.locked():
            before = self._timeline.stamp() if in_step else None
            self._unlink_records(entries)
            self._timeline.change(before, remove=[e for e in entries if e.branch],
                                  also={TABLE: ((), [e.oid.digest for e in entries])})
        self.snapshots_removed.extend(e.oid for e in entries)

    def _unlink_records(self, entries: list[TimelineEntry]) -> None:
        """Unlink records by name within ``snapshots/`` (one descriptor, no
        path joins: a policy can forget 100,000 at once), then fsync it."""
        try:
            fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            for e in entries:
                try:
                    os.unlink(self.record_file(e.oid), dir_fd=fd)
                except FileNotFoundError:
                    pass
            os.fsync(fd)
        finally:
            os.close(fd)

    def reload_index(self) -> list[tuple[str, str]]:
        """Repopulate the snapshots and refs tables from the files.

        Returns (path, why) for each record left out of the cache because it
        is unreadable, invalid or does not hash to its name; verify and gc
        report it from the file.
        """
        self.store.index.clear(TABLE)
        items, bad = [], []
        for oid in self._recorded_ids():
            try:
                data = self._read_record(oid)
                Snapshot.from_json(data, oid)
            except CasError as e:
                bad.append((self._record_path(oid), str(e)))
                continue
            items.append((oid.digest, data))
        self.store.index.update(TABLE, put=items)
        self._timeline.clear()
        self._timeline.resync()
        return bad


def local_time(ns: int) -> str:
    """Local time for people, as every command shows it; a crafted time
    beyond years 1-9999 is shown as a number."""
    try:
        return (_EPOCH + timedelta(microseconds=ns // 1000)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return f"{'+' if ns > 0 else ''}{ns} ns"
