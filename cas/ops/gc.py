"""``cas gc``: reclaim what no recorded snapshot reaches (``cas forget``, in
forget.py, drops snapshots from history first).

gc is mark and sweep under the store's exclusive lock (no writer runs
meanwhile). Live: every recorded snapshot and its model manifest, the trees
it reaches, the file contents they name and the chunks of chunked files.
Everything else that is older than the grace period (an hour by default) is
removed: loose object files, packs whose every object is dead, and packs at
least half dead, whose live objects are first copied into new packs. Packs
with less dead weight are kept whole and reported. ``cas purge`` runs it
with no grace period and every pack holding a dead object rewritten
(``repack_all_dead``), so that no dead byte stays.

Order: new packs are durable and indexed first; then index entries go,
then files, so a crash in between leaves only unindexed files (which verify
reports and rebuild adopts), never an index entry pointing at nothing.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from ..dirfd import remove_at
from ..model.history import History
from ..model.treelinks import LINK_DIR
from ..objectid import ObjectId
from ..storage.index import IndexEntry
from ..storage.store import Store
from .models import VIEWS, forget_links
from .packs import rewrite_packs
from .statcache import STAT_TABLE, record_oid

GRACE_SECONDS = 3600


@dataclass
class GcReport:
    live_objects: int = 0
    removed_objects: int = 0
    removed_bytes: int = 0
    removed_packs: int = 0
    kept_dead_objects: int = 0
    kept_dead_bytes: int = 0
    repacked_packs: int = 0
    too_young: int = 0
    removed_views: int = 0
    removed_temp_files: int = 0
    removed_temp_bytes: int = 0
    # Links 'cas model link' made for versions no longer recorded, removed;
    # and "path: why" of each such link left in place.
    removed_links: int = 0
    left_links: list[str] = dataclasses.field(default_factory=list)

    def to_doc(self, dry_run: bool) -> dict:
        """Every figure, as ``cas gc --json`` prints it."""
        return {"dry_run": dry_run, **dataclasses.asdict(self)}


def live_set(history: History) -> set[bytes]:
    """The digests of every object a recorded snapshot reaches.

    Digests, not ObjectIds: at a million objects the set is a third of the
    size, and gc's memory is mostly this set.
    """
    live: set[bytes] = set()
    walked: set[bytes] = set()
    for snap in history.snapshots():
        assert snap.oid is not None   # records read from the store
        live.add(snap.oid.digest)
        if snap.model is not None:
            live.add(snap.model.digest)
        _mark_tree(history, snap.tree, live, walked)
    history.tree_links.flush()
    return live


def _mark_tree(history: History, tree_id: ObjectId, live: set[bytes], walked: set[bytes]) -> None:
    """Add a tree, every tree and file below it, and the chunks of chunked files.

    An explicit stack, not recursion: a crafted chain of thousands of nested
    trees must not end in RecursionError. A shared subtree is walked once;
    ``walked`` (trees only) is kept apart from ``live`` because a file's
    content can have the same bytes, and so the same id, as a tree.
    """
    links, index = history.tree_links, history.store.index
    pending = [tree_id.digest]
    while pending:
        digest = pending.pop()
        if digest in walked:
            continue
        walked.add(digest)
        live.add(digest)
        # What the tree names, from the index when it was recorded there
        # (a parse of the tree otherwise): most trees were seen by earlier runs.
        for kind, child, _ in links.get(ObjectId(digest)):
            if kind == LINK_DIR:
                pending.append(child)
            elif child not in live:
                live.add(child)
                # One index lookup a file; the content layer only for chunked ones.
                stored = index.lookup(ObjectId(child))
                if stored is not None and stored.chunked:
                    live.update(c.digest for c in history.store.contents.resolve(stored).chunk_ids)


@dataclass
class _PackTally:
    objects: int = 0
    bytes: int = 0
    dead: int = 0
    dead_bytes: int = 0


def gc(history: History, dry_run: bool = False, grace_seconds: int = GRACE_SECONDS,
       repack_all_dead: bool = False) -> GcReport:
    """Mark and sweep. ``repack_all_dead`` (purge) rewrites every pack holding
    a dead object, however little of it is dead, so no dead byte stays."""
    store = history.store
    layout = store.layout
    report = GcReport()
    # First, so that the temp packs gc writes itself are not counted.
    _remove_temp_files(layout.tmp, dry_run, report)
    live = live_set(history)
    report.live_objects = len(live)
    cutoff = time.time() - grace_seconds
    tallies, remove_entries, remove_files = _tally(store, live, cutoff, report)
    doomed, rewrite = _classify(layout, tallies, cutoff, report, repack_all_dead)
    repack = _gather(store, live, doomed, rewrite, remove_entries)
    remove_files.extend(layout.pack_path(p) for p in doomed)
    remove_packs = list(doomed)
    report.removed_objects = len(remove_entries) + sum(tallies[p.digest].dead for p in rewrite)
    report.removed_bytes = sum(e.stored_length for e in remove_entries) + \
        sum(tallies[p.digest].dead_bytes for p in rewrite)
    report.removed_packs = len(remove_packs)
    report.repacked_packs = len(rewrite)
    if dry_run:
        return report
    if repack:
        rewrite_packs(store, _survivors(repack.values()))
        for pack, (_entries, dead) in repack.items():
            remove_entries.extend(dead)
            remove_files.append(layout.pack_path(pack))
            remove_packs.append(pack)
    removed = {e.oid for e in remove_entries}
    store.index.remove(removed, remove_packs)
    _prune_stat_cache(store, removed)
    for path in remove_files:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    report.removed_views = _remove_stale_views(history)
    report.removed_links = forget_links(store, lambda hex_id: _is_recorded(history, hex_id),
                                        lambda path, why: report.left_links.append(f"{path}: {why}"))
    return report


def _is_recorded(history: History, hex_id: str) -> bool:
    try:
        return history.is_recorded(ObjectId.parse(hex_id))
    except ValueError:
        return False  # not an id: nothing recorded by it


def _gather(store: Store, live: set[bytes], doomed: set[ObjectId], rewrite: set[ObjectId],
            remove_entries: list[IndexEntry]) -> dict[ObjectId, tuple[list[IndexEntry], list[IndexEntry]]]:
    """The entries of the packs that change: those of packs that go, added to
    ``remove_entries``; for each pack to rewrite, its entries and the dead ones."""
    repack: dict[ObjectId, tuple[list[IndexEntry], list[IndexEntry]]] = {p: ([], []) for p in rewrite}
    if doomed or rewrite:
        for entry in store.entries():
            if entry.pack in doomed:
                remove_entries.append(entry)
            elif entry.pack in repack:
                entries, dead = repack[entry.pack]
                entries.append(entry)
                if entry.oid.digest not in live:
                    dead.append(entry)
    return repack


def _tally(store, live: set[bytes], cutoff: float, report: GcReport):
    """Counts per pack (by pack digest), and the dead loose objects old enough to go.

    Counts only, from the raw index records: memory does not grow with every
    index entry, and no IndexEntry is built for each of a million objects;
    the entries of the few packs that change are read again.
    """
    tallies: dict[bytes, _PackTally] = defaultdict(_PackTally)
    remove_entries: list[IndexEntry] = []
    remove_files: list[str] = []
    for digest, pack, stored_length in store.index.locations():
        alive = digest in live
        if pack is not None:
            t = tallies[pack]
            t.objects += 1
            t.bytes += stored_length
            if not alive:
                t.dead += 1
                t.dead_bytes += stored_length
        elif not alive:
            entry = store.index.lookup(ObjectId(digest))
            path = store.layout.loose_path(entry.oid, entry.encoding)
            if _mtime(path) > cutoff:
                report.too_young += 1
                continue
            remove_entries.append(entry)
            remove_files.append(path)
    return tallies, remove_entries, remove_files


def _classify(layout, tallies: dict[bytes, _PackTally], cutoff: float, report: GcReport,
              repack_all_dead: bool = False) -> tuple[set[ObjectId], set[ObjectId]]:
    """Packs to remove whole, and packs to rewrite without their dead objects."""
    doomed: set[ObjectId] = set()
    rewrite: set[ObjectId] = set()
    for digest, t in tallies.items():
        if not t.dead:
            continue
        pack = ObjectId(digest)
        young = _mtime(layout.pack_path(pack)) > cutoff
        if t.dead == t.objects and not young:
            doomed.add(pack)
        elif t.dead == t.objects:
            report.too_young += t.dead
        elif (repack_all_dead or t.dead_bytes * 2 >= t.bytes) and not young:
            rewrite.add(pack)  # at least half dead: rewrite it (as restic's prune)
        else:
            report.kept_dead_objects += t.dead
            report.kept_dead_bytes += t.dead_bytes
    return doomed, rewrite


def _remove_stale_views(history: History) -> int:
    """Views of model versions no longer recorded (forgotten, or half built
    by an interrupted process): their links may name objects gc just removed.

    Removed through directory fds, without following links and without
    recursion (a crafted deep view must not stop gc with RecursionError).
    """
    root = os.path.join(history.store.path, VIEWS)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return 0  # none, or not a directory of ours
    removed = 0
    try:
        for name in os.listdir(fd):
            stale = ".building-" in name
            if not stale:
                try:
                    # Named by the snapshot's id, in an encrypted store its name (§18.3).
                    stale = not history.is_recorded(history.store.sealer.unname(ObjectId.parse(name)))
                except ValueError:
                    continue  # not ours
            if stale:
                try:
                    remove_at(fd, os.fsencode(name))
                    removed += 1
                except OSError:
                    continue  # left for the next gc
    finally:
        os.close(fd)
    return removed


def _survivors(groups) -> Iterator[IndexEntry]:
    """The live entries of packs being rewritten (entries, dead entries)."""
    for entries, dead in groups:
        dead_ids = {e.oid for e in dead}
        yield from (e for e in entries if e.oid not in dead_ids)


def _remove_temp_files(tmp: str, dry_run: bool, report: GcReport) -> None:
    """What writers killed mid-write (SIGKILL, power loss) left in ``tmp``.

    Every writer holds the store's shared lock while its temp files exist
    and gc holds it exclusively, so no file here has a writer alive. Only
    regular files and links are removed (a link itself, never its target);
    ``tmp`` is opened without following a link.
    """
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # none, or not a directory of ours: verify reports it
    try:
        for name in os.listdir(fd):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    continue
                if not dry_run:
                    os.unlink(name, dir_fd=fd)
            except OSError:
                continue  # left for the next gc
            report.removed_temp_files += 1
            report.removed_temp_bytes += st.st_size if stat.S_ISREG(st.st_mode) else 0
    finally:
        os.close(fd)


def _prune_stat_cache(store, removed: set[ObjectId]) -> None:
    """Drop the stat-cache records naming removed objects (a record that
    does not parse names nothing and is left to the scan that reads it)."""
    stale = [k for k, v in store.index.scan(STAT_TABLE) if record_oid(v) in removed]
    store.index.update(STAT_TABLE, delete=stale)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0
