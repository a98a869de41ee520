"""How a store grew: per day or per snapshot, from the snapshot records alone.

Every number but one baseline per branch comes from the ``stats`` each
snapshot recorded when it was taken (its tree's size, the content it added
and what that took on disk), so a history of 100,000 snapshots is read
without opening a tree per snapshot.

Definitions (the help of ``cas stats --history`` and the README say the same):

- ``logical_bytes``: the size of the files the selected branches held at the
  end of the row: each branch's newest snapshot at or before it, added up.
- ``new_bytes`` / ``stored_bytes``: content new to the store in the row's
  snapshots, as read and as written to disk (compressed, chunked).
- ``store_bytes``: for each branch, the stored size of everything its
  oldest kept snapshot reaches (one tree walk per branch, not per
  snapshot), then ``stored_bytes`` of every later recorded snapshot up to
  the end of the row. What forgotten snapshots in between wrote and later
  ones reuse is not in it, nor pack framing: it is what the kept history
  has cost, not the size of the store directory (``cas stats`` gives that).
- ``dedup_ratio``: bytes of every recorded snapshot up to the row, each
  counted whole, over ``store_bytes``.

``largest_growers`` compares consecutive snapshots of a branch tree by tree,
skipping every subtree whose id did not change, to say which paths added
the most stored bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import BranchNotInHistory, CasError, NothingToChart
from ..model.history import History
from ..model.refs import HEADS
from ..model.snapshot import Snapshot, iso_time
from ..model.tree import DIR, FILE
from ..objectid import ObjectId

BY_DAY, BY_SNAPSHOT = "day", "snapshot"
# Tree entries and chunk-list entries compared, at most, for the growers:
# a few seconds of work, whatever the length of the history.
GROWERS_BUDGET = 300_000


@dataclass(slots=True)
class GrowthRow:
    label: str                 # local day YYYY-MM-DD, or the snapshot's full id
    time_ns: int               # the newest snapshot in the row
    snapshots: int = 0         # recorded snapshots taken in the row
    snapshots_total: int = 0   # recorded snapshots taken up to the row's end
    logical_bytes: int = 0
    new_bytes: int = 0
    stored_bytes: int = 0
    store_bytes: int = 0
    snapshot_bytes: int = 0    # bytes of every recorded snapshot up to the row's end, each whole
    dedup_ratio: float | None = None
    branch: str | None = None  # per snapshot: its branch

    def to_doc(self, by: str) -> dict:
        doc = {"time": iso_time(self.time_ns), "snapshots": self.snapshots,
               "snapshots_total": self.snapshots_total, "logical_bytes": self.logical_bytes,
               "new_bytes": self.new_bytes, "stored_bytes": self.stored_bytes,
               "store_bytes": self.store_bytes, "snapshot_bytes": self.snapshot_bytes,
               "dedup_ratio": self.dedup_ratio}
        if by == BY_DAY:
            doc["day"] = self.label
        else:
            doc["snapshot"], doc["branch"] = self.label, self.branch
        return doc


def selected_snapshots(history: History, branch: str | None) -> list[Snapshot]:
    """The recorded snapshots a growth view covers, oldest first: every
    branch's (models too), or one branch's. An unknown branch and an empty
    selection are errors (exit 2), never an empty chart."""
    snaps = history.listed_snapshots()
    if branch is None:
        if not snaps:
            raise NothingToChart("this store")
        return snaps
    mine = [s for s in snaps if s.branch == branch]
    if not mine:
        if history.refs.get(HEADS + branch) is None:
            raise BranchNotInHistory(branch)
        raise NothingToChart(f"branch '{branch}'")
    return mine


# Every time zone's offset is a whole number of quarter hours, so one local
# day label holds for a whole quarter hour: one localtime call per quarter,
# not per snapshot.
_QUARTER_HOUR = 900


def _local_day(quarter: int) -> str:
    try:
        return time.strftime("%Y-%m-%d", time.localtime(quarter * _QUARTER_HOUR))
    except (ValueError, OverflowError, OSError):
        return "(out of range)"  # a crafted record's time: still counted, in a row of its own


def growth_rows(snaps: Iterable[Snapshot], by: str = BY_DAY,
                baselines: dict[ObjectId, int] | None = None) -> list[GrowthRow]:
    """One pass over snapshot records (oldest first) into rows by day or by
    snapshot. ``baselines`` gives, for a branch's oldest kept snapshot, the
    stored size of everything it reaches: it counts in ``store_bytes`` in
    place of what that snapshot wrote when it is larger (its files were
    stored by 'cas add' or by snapshots since forgotten)."""
    rows: list[GrowthRow] = []
    baselines = baselines or {}
    latest: dict[str, int] = {}         # branch -> bytes of its newest snapshot so far
    logical = store = every_byte = 0
    quarter, label = None, ""
    for total, snap in enumerate(snaps, 1):
        assert snap.oid is not None   # records read from the store
        st = snap.stats
        if by == BY_SNAPSHOT:
            rows.append(GrowthRow(snap.oid.hex, snap.time_ns, branch=snap.branch))
        else:
            if snap.time_ns // (_QUARTER_HOUR * 10**9) != quarter:
                quarter = snap.time_ns // (_QUARTER_HOUR * 10**9)
                label = _local_day(quarter)
            if not rows or rows[-1].label != label:
                rows.append(GrowthRow(label, snap.time_ns))
        row = rows[-1]
        size, stored = st.get("bytes", 0), st.get("stored_bytes", 0)
        if snap.branch not in latest:
            store += max(stored, baselines.get(snap.oid, 0)) - stored
        logical += size - latest.get(snap.branch, 0)
        latest[snap.branch] = size
        store += stored
        every_byte += size
        row.time_ns = snap.time_ns
        row.snapshots += 1
        row.new_bytes += st.get("new_bytes", 0)
        row.stored_bytes += stored
        row.snapshots_total, row.logical_bytes = total, logical
        row.store_bytes, row.snapshot_bytes = store, every_byte
    for row in rows:
        row.dedup_ratio = round(row.snapshot_bytes / row.store_bytes, 4) \
            if row.store_bytes > 0 else None
    return rows


def growth(history: History, branch: str | None = None, by: str = BY_DAY) -> list[GrowthRow]:
    snaps = selected_snapshots(history, branch)
    return growth_rows(snaps, by, baseline_bytes(history, snaps))


def baseline_bytes(history: History, snaps: list[Snapshot]) -> dict[ObjectId, int]:
    """For each branch's oldest kept snapshot, the stored bytes of the
    distinct objects it reaches (its trees, files and chunks; an object
    reached from two branches counts for the first). One walk per branch,
    skipping subtrees already counted: the cost follows the size of the
    trees, not the number of snapshots."""
    seen: set[ObjectId] = set()
    first: dict[str, Snapshot] = {}
    for snap in snaps:
        first.setdefault(snap.branch, snap)
    out = {}
    for snap in first.values():
        assert snap.oid is not None   # records read from the store
        try:
            out[snap.oid] = _reached_bytes(history, snap.tree, seen)
        except CasError:
            pass   # a damaged tree: the recorded stats stand (verify reports it)
    return out


def _reached_bytes(history: History, root: ObjectId, seen: set[ObjectId]) -> int:
    index, total = history.store.index, 0
    stack = [root]
    while stack:
        tree_id = stack.pop()
        if tree_id in seen:
            continue
        seen.add(tree_id)
        entry = index.lookup(tree_id)
        total += entry.stored_length if entry is not None else 0
        for item in history.load_tree(tree_id).entries:
            if item.oid is None:
                continue   # a symlink (files and directories always have an id)
            if item.kind == DIR:
                stack.append(item.oid)
            elif item.kind == FILE and item.oid not in seen:
                total += _file_bytes(history, item.oid, seen)
    return total


def _file_bytes(history: History, oid: ObjectId, seen: set[ObjectId]) -> int:
    """Stored bytes of a file's object and, if chunked, of its chunks not yet seen."""
    seen.add(oid)
    content = history.store.content(oid)
    if content is None:
        return 0   # missing: verify reports it
    total = content.entry.stored_length
    for chunk in content.chunk_ids:
        if chunk not in seen:
            seen.add(chunk)
            piece = history.store.index.lookup(chunk)
            total += piece.stored_length if piece is not None else 0
    return total


# -- which paths grew ----------------------------------------------------------

@dataclass
class Growers:
    files: list[tuple[str, bytes, int, int]]   # branch, path, stored bytes added, changes
    dirs: list[tuple[str, bytes, int]]         # branch, directory (b"" the top), bytes added
    pairs_compared: int                        # consecutive snapshot pairs looked at
    pairs_total: int                           # consecutive snapshot pairs in the history
    since_ns: int | None                       # the oldest snapshot compared from
    unreadable: list[str]                      # snapshots whose trees could not be read


_Change = tuple[bytes, "ObjectId | None", ObjectId]   # path, its previous version, its new one


@dataclass
class _GrowWalk:
    history: History
    budget: int
    added: dict[tuple[str, bytes], list[int]] = field(default_factory=dict)
    # Objects already counted or present before: a file that goes back to an
    # earlier version, or a copy of another file, adds nothing to the store.
    seen: set[ObjectId] = field(default_factory=set)


def largest_growers(history: History, snaps: list[Snapshot], limit: int = 20,
                    budget: int = GROWERS_BUDGET) -> Growers:
    """The paths that added the most stored bytes between consecutive
    recorded snapshots of each branch (``snaps``, oldest first). The first
    snapshot of a branch is the baseline, not growth. The newest pairs are
    compared first, until ``budget`` entries have been looked at; a pair
    whose trees cannot be read (damage, which verify reports) is named and
    passed over."""
    pairs = _consecutive_pairs(snaps)
    walk = _GrowWalk(history, budget)
    compared: list[tuple[Snapshot, list[_Change]]] = []
    unreadable = []
    for old, new in reversed(pairs):
        if walk.budget <= 0:
            break
        walk.budget -= 1   # a pair with identical trees still costs a look
        try:
            changes = _compare_trees(walk, old.tree, new.tree) if old.tree != new.tree else []
        except CasError:
            unreadable.append(new.oid.hex if new.oid is not None else "?")
            changes = []
        compared.append((old, changes))
    # Counted oldest first: a path's bytes are those its new version had
    # that nothing before it in the compared history had (a file back to an
    # earlier version, or a copy of another file, adds nothing).
    for old, changes in reversed(compared):
        for path, before, after in changes:
            counts = walk.added.setdefault((old.branch, path), [0, 0])
            counts[0] += _stored_added(walk, before, after)
            counts[1] += 1
    files = sorted(((b, p, n, c) for (b, p), (n, c) in walk.added.items() if n > 0),
                   key=lambda t: (-t[2], t[0], t[1]))
    return Growers(files[:limit], _by_directory(files)[:limit], len(compared), len(pairs),
                   min((o.time_ns for o, _ in compared), default=None), unreadable)


def _consecutive_pairs(snaps: list[Snapshot]) -> list[tuple[Snapshot, Snapshot]]:
    """(older, newer) for each recorded snapshot and the one before it on its
    branch, ordered by the newer one's time."""
    last: dict[str, Snapshot] = {}
    pairs = []
    for snap in snaps:
        before = last.get(snap.branch)
        if before is not None:
            pairs.append((before, snap))
        last[snap.branch] = snap
    return pairs


def _compare_trees(walk: _GrowWalk, old_root: ObjectId, new_root: ObjectId) -> list[_Change]:
    """The files that differ from one tree to the next, skipping every
    subtree whose id did not change."""
    changes: list[_Change] = []
    # An explicit stack: a crafted chain of nested trees must not recurse.
    stack: list[tuple[ObjectId | None, ObjectId, bytes]] = [(old_root, new_root, b"")]
    while stack and walk.budget > 0:
        old_id, new_id, prefix = stack.pop()
        old_entries = {e.name: e for e in walk.history.load_tree(old_id).entries} \
            if old_id is not None else {}
        for entry in walk.history.load_tree(new_id).entries:
            walk.budget -= 1
            before = old_entries.get(entry.name)
            if before is not None and before.kind == entry.kind and before.oid == entry.oid:
                continue  # unchanged file, or a whole unchanged subtree
            path = prefix + entry.name
            if entry.oid is None:
                continue   # a symlink: no content
            if entry.kind == DIR:
                stack.append((before.oid if before is not None and before.kind == DIR else None,
                              entry.oid, path + b"/"))
            elif entry.kind == FILE:
                changes.append((path, before.oid if before is not None and before.kind == FILE
                                else None, entry.oid))
    return changes


def _stored_added(walk: _GrowWalk, old: ObjectId | None, new: ObjectId) -> int:
    """Stored bytes of ``new``'s pieces that ``old`` (the same path's
    previous version) and everything counted so far did not have."""
    store = walk.history.store
    if old is not None and old not in walk.seen:
        walk.seen.add(old)
        walk.seen.update(_pieces(walk, old))
    if new in walk.seen:
        return 0
    walk.seen.add(new)
    added = 0
    for piece in _pieces(walk, new) or [new]:
        if piece in walk.seen and piece != new:
            continue
        walk.seen.add(piece)
        entry = store.index.lookup(piece)
        added += entry.stored_length if entry is not None else 0
    return added


def _pieces(walk: _GrowWalk, oid: ObjectId) -> list[ObjectId]:
    """The chunks of a chunked object (its list's own bytes are not counted:
    they are small); [] for an object stored whole or missing."""
    content = walk.history.store.content(oid)
    chunks = content.chunk_ids if content is not None else []
    walk.budget -= len(chunks)
    return chunks


def _by_directory(files: list[tuple[str, bytes, int, int]]) -> list[tuple[str, bytes, int]]:
    """Each file's bytes added up into every directory above it."""
    dirs: dict[tuple[str, bytes], int] = {}
    for branch, path, added, _ in files:
        parts = path.split(b"/")[:-1]
        for depth in range(len(parts) + 1):
            key = (branch, b"/".join(parts[:depth]))
            dirs[key] = dirs.get(key, 0) + added
    return sorted(((b, d, n) for (b, d), n in dirs.items()), key=lambda t: (-t[2], t[0], t[1]))
