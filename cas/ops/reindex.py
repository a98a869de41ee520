"""``cas index rebuild``: recreate the LMDB index from objects and packs.

The new index is built beside the old one and swapped in by rename, under
the store's exclusive lock, so a crash mid-rebuild leaves the old index
(or none) and the rebuild can simply run again.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from ..durable import fsync_dir
from ..objectid import ObjectId
from ..storage.encoding import Encoding
from ..storage.chunklist import ChunkList, ChunkListError
from ..storage.seekable import SeekTableError, content_size, read_seek_table
from ..storage.index import Index, IndexEntry, PackRecord
from ..storage.pack import PackFormatError, read_entries
from ..storage.store import Store
from ..model.history import History

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
        index = Index.create(new_path, store.config.store_id)
        try:
            seen: set[ObjectId] = set()
            batch: list[IndexEntry] = []

            def add(entry: IndexEntry) -> None:
                if entry.oid in seen:
                    return
                seen.add(entry.oid)
                batch.append(entry)
                if len(batch) >= BATCH:
                    index.record(batch)
                    batch.clear()

            for pack, path in layout.scan_packs():
                try:
                    entries = read_entries(path)
                    size = os.path.getsize(path)
                except (PackFormatError, OSError) as e:
                    report.bad_files.append((path, str(e)))
                    continue
                index.record([], [PackRecord(pack, size, len(entries))])
                report.packs += 1
                for e in entries:
                    add(IndexEntry(e.oid, e.encoding, e.size, e.stored_length, pack, e.offset))
            for oid, encoding, path in layout.scan_loose():
                try:
                    stored = os.path.getsize(path)
                    if encoding is Encoding.RAW:
                        size = stored
                    elif encoding is Encoding.CHUNKED:
                        size = _chunked_size(path, oid)
                    else:
                        size = _zstd_size(path)
                except (OSError, SeekTableError, ChunkListError) as e:
                    report.bad_files.append((path, str(e)))
                    continue
                report.loose += 1
                add(IndexEntry(oid, encoding, size, stored))
            index.record(batch)
            report.objects = len(seen)
        finally:
            index.close()
        old_path = layout.index + ".old"
        shutil.rmtree(old_path, ignore_errors=True)
        if os.path.exists(layout.index):
            os.rename(layout.index, old_path)
        os.rename(new_path, layout.index)
        fsync_dir(layout.root)
        shutil.rmtree(old_path, ignore_errors=True)
        store.reopen_index()
        # Snapshots and refs come back from their plain files; the stat
        # cache starts empty (it is only ever a shortcut).
        History(store).reload_index()
        # Under the exclusive lock no writer is running: every temp file is debris.
        for name in os.listdir(layout.tmp):
            os.unlink(os.path.join(layout.tmp, name))
            report.temp_files_removed += 1
    return report


def _zstd_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return content_size(read_seek_table(fd))
    finally:
        os.close(fd)


def _chunked_size(path: str, oid) -> int:
    with open(path, "rb") as f:
        chunks = ChunkList.from_json(f.read())
    if chunks.oid != oid:
        raise ChunkListError("chunk list names another file")
    return chunks.size
