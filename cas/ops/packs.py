"""Pack consolidation: many small packs rewritten into few full ones.

Every snapshot the watcher takes seals a pack of what it stored, often a
few kilobytes (131 of 180 packs were under 4 KB after 86 snapshots). Each
pack costs a file, a directory entry, an open descriptor while it is read
and a fsync when it was written; restic's ``prune`` repacks small packs for
the same reasons. Packs under ``SMALL_PACK`` bytes are read and their
objects written into new packs of up to the store's ``pack_target_size``.

Under the store's exclusive lock, in the order gc uses: the new packs are
fsynced, renamed and indexed (their records replace the objects' old
locations in one transaction) before any old pack record or file goes. A
crash leaves either the old packs in use, or the new ones in use and the
old ones as indexed packs that no object names, which the next run removes
(``orphans``). Dead objects move with the live ones: deciding what is dead
is gc's job, and gc runs first in ``cas maintain``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..durable import fsync_dirs
from ..objectid import ObjectId
from ..storage.index import IndexEntry, PackRecord
from ..storage.pack import PackWriter
from ..storage.store import Store
from ..storage.writer import seal_pack

# Measured (docs/PERFORMANCE.md, "Pack consolidation"): the watcher's packs
# are a few KB to a few hundred KB; 1 MiB takes all of those and leaves
# packs that a large snapshot filled alone.
SMALL_PACK = 1 << 20


@dataclass
class ConsolidateReport:
    packs_before: int = 0
    small_packs: int = 0
    rewritten_packs: int = 0
    new_packs: int = 0
    moved_objects: int = 0
    moved_bytes: int = 0
    orphan_packs: int = 0


def _inner_bytes(store: Store, entry: IndexEntry) -> bytes:
    """An entry's stored bytes as they are before sealing: a sealed entry is
    bound to its pack and offset, so a rewrite opens it and seals it anew."""
    stored = store.read_stored(entry)
    if not entry.encoding.sealed:
        return stored
    return store.contents.open_entry(entry, stored)


def consolidate(store: Store, small: int = SMALL_PACK, dry_run: bool = False) -> ConsolidateReport:
    """Rewrite the packs under ``small`` bytes into few larger ones.

    Call with the store opened exclusively (no writer may add to a pack
    being rewritten, or read an old location after it is gone).
    """
    records = store.index.packs()
    report = ConsolidateReport(packs_before=len(records))
    chosen = {r.pack for r in records if r.file_size < small}
    report.small_packs = len(chosen)
    used: set[ObjectId] = set()
    moving: dict[ObjectId, list[IndexEntry]] = {p: [] for p in chosen}
    for entry in store.entries():
        if entry.pack is not None:
            used.add(entry.pack)
            if entry.pack in moving:
                moving[entry.pack].append(entry)
    orphans = [r.pack for r in records if r.pack not in used]
    report.orphan_packs = len(orphans)
    # One small pack alone would be rewritten into itself: nothing gained.
    groups = [(p, es) for p, es in moving.items() if es] if len(chosen - set(orphans)) > 1 else []
    report.rewritten_packs = len(groups)
    report.moved_objects = sum(len(es) for _, es in groups)
    report.moved_bytes = sum(e.stored_length for _, es in groups for e in es)
    if dry_run:
        report.new_packs = _packs_needed(report.moved_bytes, store.config.pack_target_size)
        return report
    report.new_packs = rewrite_packs(store, (e for _, es in groups for e in es))
    drop_packs(store, [p for p, _ in groups] + orphans)
    return report


def _packs_needed(total: int, target: int) -> int:
    return -(-total // target) if total else 0


def rewrite_packs(store: Store, entries: Iterable[IndexEntry]) -> int:
    """Copy these packed objects into new packs, durable and indexed on return.

    The new packs are fsynced, renamed and indexed (their index records
    replace the old locations in one transaction) before the caller drops
    any old pack: a live object is never without a durable copy. Returns
    the number of packs written.
    """
    layout = store.layout
    writer: PackWriter | None = None
    new_entries: list[IndexEntry] = []
    records: list[PackRecord] = []
    dirs: set[str] = set()

    def seal() -> None:
        nonlocal writer
        if writer is None:
            return
        sealed, record, directory = seal_pack(layout, writer)
        writer = None
        new_entries.extend(sealed)
        records.append(record)
        dirs.add(directory)

    try:
        for e in entries:
            if writer is None:
                writer = PackWriter(layout.tmp, layout.modes.object, store.sealer)
            writer.add(e.oid, e.encoding.inner, _inner_bytes(store, e), e.size)
            if writer.size >= store.config.pack_target_size:
                seal()
        seal()
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise
    fsync_dirs(dirs)
    store.index.record(new_entries, records)
    return len(records)


def drop_packs(store: Store, packs: list[ObjectId]) -> None:
    """Forget packs no index entry names any more: their records, then their files."""
    if not packs:
        return
    store.index.remove((), packs)
    for pack in packs:
        try:
            os.unlink(store.layout.pack_path(pack))
        except FileNotFoundError:
            pass
