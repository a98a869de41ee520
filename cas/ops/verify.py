"""``cas verify``: is every indexed object present, whole and correct?

The quick check compares the index with what is on disk (files exist,
sizes match). ``full`` also reads every byte back and checks that each
object hashes to its id and each pack to its name, on all cores.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ..errors import CasError, ObjectDamaged
from ..objectid import ObjectId, hash_bytes, hash_path
from ..storage.encoding import Encoding, ZstdError, decode
from ..storage.index import IndexEntry
from ..storage.store import Store
from ..model.history import History
from ..model.tree import DIR, FILE


@dataclass(frozen=True, slots=True)
class Damage:
    oid: ObjectId
    what: str           # "object", "pack", "snapshot" or "tree"
    why: str
    # (snapshot id, path) pairs that use the damaged object, when known
    used_by: tuple[tuple[ObjectId, bytes], ...] = ()


@dataclass
class VerifyReport:
    full: bool
    objects: int = 0
    snapshots: int = 0
    bytes_checked: int = 0
    damage: list[Damage] = field(default_factory=list)
    unindexed_objects: int = 0
    unindexed_packs: int = 0
    temp_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.damage


def verify(store: Store, full: bool = False,
           on_progress: Callable[[int], None] | None = None,
           history: History | None = None) -> VerifyReport:
    report = _verify_objects(store, full, on_progress)
    if history is not None:
        _verify_history(history, report)
    return report


def _verify_objects(store: Store, full: bool, on_progress) -> VerifyReport:
    report = VerifyReport(full)
    by_pack: dict[ObjectId, list[IndexEntry]] = defaultdict(list)
    loose: list[IndexEntry] = []
    for entry in store.entries():
        report.objects += 1
        (by_pack[entry.pack] if entry.pack is not None else loose).append(entry)

    _compare_with_disk(store, report, by_pack, loose)

    chunks = _check_chunk_lists(store, report, loose)
    if not full:
        return report
    damaged_already = {d.oid for d in report.damage}
    jobs: list[Callable[[], tuple[int, list[Damage]]]] = []
    # Chunks are checked once, while their files are reassembled (which the
    # whole-file check needs anyway), so packs decode only what is not a chunk.
    for pack, entries in by_pack.items():
        if pack not in damaged_already:
            rest = [e for e in entries if e.oid not in chunks]
            jobs.append(lambda p=pack, es=rest: _check_pack(store, p, es))
    for entry in loose:
        if entry.oid not in damaged_already:
            jobs.append(lambda e=entry: _check_loose(store, e))
    with ThreadPoolExecutor(min(2, os.cpu_count() or 1), "cas-verify") as pool:
        for checked, damage in pool.map(lambda job: job(), jobs):
            report.bytes_checked += checked
            report.damage.extend(damage)
            if on_progress is not None:
                on_progress(checked)
    _attribute_chunk_damage(store, report, loose)
    unique: dict[tuple[str, ObjectId], Damage] = {}
    for d in report.damage:  # a chunk shared by several files is reported once
        unique.setdefault((d.what, d.oid), d)
    report.damage = sorted(unique.values(), key=lambda d: (d.what, d.oid))
    return report


def _check_chunk_lists(store: Store, report: VerifyReport, loose: list[IndexEntry]) -> set[ObjectId]:
    """Every chunk list readable, and every chunk it names indexed; returns all chunk ids."""
    all_chunks: set[ObjectId] = set()
    for entry in loose:
        if entry.encoding is not Encoding.CHUNKED or any(d.oid == entry.oid for d in report.damage):
            continue
        try:
            chunks = store.chunk_list(entry.oid)
        except (CasError, OSError) as e:
            report.damage.append(Damage(entry.oid, "object", f"unreadable chunk list ({e})"))
            continue
        all_chunks.update(c for c, _ in chunks.chunks)
        missing = [c for c, _ in chunks.chunks if not store.has(c)]
        if missing:
            report.damage.append(Damage(entry.oid, "object",
                                        f"{len(missing)} of its chunks are missing (first {missing[0].hex})"))
    return all_chunks


def _attribute_chunk_damage(store: Store, report: VerifyReport, loose: list[IndexEntry]) -> None:
    """A damaged chunk damages every chunked file made with it."""
    bad = {d.oid for d in report.damage if d.what == "object"}
    if not bad:
        return
    for entry in loose:
        if entry.encoding is not Encoding.CHUNKED or entry.oid in bad:
            continue
        try:
            chunks = store.chunk_list(entry.oid)
        except (CasError, OSError):
            continue
        hit = [c for c, _ in chunks.chunks if c in bad]
        if hit:
            report.damage.append(Damage(entry.oid, "object", f"its chunk {hit[0].hex} is damaged"))
            bad.add(entry.oid)


def _verify_history(history: History, report: VerifyReport) -> None:
    """Every snapshot's trees and files present and sound; name who uses damage."""
    store = history.store
    bad = {d.oid for d in report.damage if d.what == "object"}
    memo: dict[ObjectId, list[tuple[bytes, ObjectId, str]]] = {}

    def problems_in(tree_id: ObjectId) -> list[tuple[bytes, ObjectId, str]]:
        """(path, id, why) for every missing or damaged object below a tree."""
        if tree_id in memo:
            return memo[tree_id]
        memo[tree_id] = found = []
        if tree_id in bad:
            found.append((b"", tree_id, "tree is damaged"))
            return found
        try:
            tree = history.load_tree(tree_id)
        except CasError as e:
            found.append((b"", tree_id, str(e)))
            return found
        for entry in tree.entries:
            if entry.kind == DIR:
                for path, oid, why in problems_in(entry.oid):
                    found.append((entry.name + (b"/" + path if path else b""), oid, why))
            elif entry.kind == FILE:
                if entry.oid in bad:
                    found.append((entry.name, entry.oid, "content is damaged"))
                elif not store.has(entry.oid):
                    found.append((entry.name, entry.oid, "content is missing"))
        return found

    usages: dict[ObjectId, list[tuple[ObjectId, bytes]]] = defaultdict(list)
    reasons: dict[ObjectId, str] = {}
    for snap in history.snapshots():
        report.snapshots += 1
        if not store.has(snap.oid):
            report.damage.append(Damage(snap.oid, "snapshot", "its manifest object is missing"))
        elif snap.oid in bad:
            # The object is the manifest itself; snapshots/<id>.json still holds its bytes.
            usages[snap.oid].append((snap.oid, b"(its manifest)"))
        if snap.model is not None:
            if snap.model in bad:
                usages[snap.model].append((snap.oid, b"(its model manifest)"))
            elif not store.has(snap.model):
                usages[snap.model].append((snap.oid, b"(its model manifest)"))
                reasons.setdefault(snap.model, "model manifest is missing")
        for path, oid, why in problems_in(snap.tree):
            usages[oid].append((snap.oid, path))
            reasons.setdefault(oid, why)
    damage = []
    for d in report.damage:
        if d.oid in usages:
            damage.append(Damage(d.oid, d.what, d.why, tuple(usages.pop(d.oid))))
        else:
            damage.append(d)
    for oid, used in usages.items():
        damage.append(Damage(oid, "object", reasons[oid], tuple(used)))
    report.damage = damage


def _compare_with_disk(store, report, by_pack, loose) -> None:
    layout = store.layout
    indexed_packs = {p.pack: p for p in store.index.packs()}
    for pack, entries in by_pack.items():
        path = layout.pack_path(pack)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            report.damage.append(Damage(pack, "pack", f"pack file is missing ({len(entries)} objects lost)"))
            for e in entries:
                report.damage.append(Damage(e.oid, "object", f"its pack {pack.short} is missing"))
            continue
        record = indexed_packs.get(pack)
        if record is not None and record.file_size != size:
            report.damage.append(Damage(pack, "pack", f"has {size} bytes, {record.file_size} recorded"))
        for e in entries:
            if e.offset + e.stored_length > size:
                report.damage.append(Damage(e.oid, "object", f"lies past the end of pack {pack.short}"))
    for e in loose:
        path = layout.loose_path(e.oid, e.encoding)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            report.damage.append(Damage(e.oid, "object", "its file is missing"))
            continue
        if size != e.stored_length:
            report.damage.append(Damage(e.oid, "object", f"its file has {size} bytes, {e.stored_length} recorded"))
    indexed_loose = {e.oid for e in loose}
    report.unindexed_objects = sum(1 for oid, _, _ in layout.scan_loose() if oid not in indexed_loose)
    report.unindexed_packs = sum(1 for pack, _ in layout.scan_packs() if pack not in indexed_packs)
    try:
        report.temp_files = len(os.listdir(layout.tmp))
    except FileNotFoundError:
        pass


def _check_pack(store: Store, pack: ObjectId, entries: list[IndexEntry]) -> tuple[int, list[Damage]]:
    with open(store.layout.pack_path(pack), "rb") as f:
        data = f.read()
    damage = []
    if hash_bytes(data) != pack:
        damage.append(Damage(pack, "pack", "file does not hash to its name"))
    view = memoryview(data)
    for e in entries:
        why = _check_content(e, bytes(view[e.offset:e.offset + e.stored_length]))
        if why:
            damage.append(Damage(e.oid, "object", f"{why} (in pack {pack.short})"))
    return len(data), damage


def _check_content(entry: IndexEntry, stored: bytes) -> str | None:
    try:
        content = decode(entry.encoding, stored, entry.size)
    except ZstdError as e:
        return f"cannot be decompressed ({e})"
    if len(content) != entry.size:
        return f"has {len(content)} bytes, {entry.size} recorded"
    if hash_bytes(content) != entry.oid:
        return "content does not hash to its id"
    return None


def _check_loose(store: Store, entry: IndexEntry) -> tuple[int, list[Damage]]:
    path = store.layout.loose_path(entry.oid, entry.encoding)
    try:
        if entry.encoding is Encoding.RAW:
            if hash_path(path) != entry.oid:
                return entry.stored_length, [Damage(entry.oid, "object", "content does not hash to its id")]
            return entry.stored_length, []
        for _ in store.iter_content(entry.oid, check_chunks=True):
            pass
    except ObjectDamaged as e:
        why = str(e).split(": ", 1)[-1].removesuffix(" (run 'cas verify --full')")
        if e.oid != entry.oid:  # one of its chunks
            chunk = ObjectId.parse(e.oid)
            return entry.stored_length, [Damage(chunk, "object", why),
                                         Damage(entry.oid, "object", f"its chunk {e.oid} is damaged")]
        return entry.stored_length, [Damage(entry.oid, "object", why)]
    except (OSError, CasError) as e:
        return entry.stored_length, [Damage(entry.oid, "object", f"unreadable ({e})")]
    return entry.stored_length, []
