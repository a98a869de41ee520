"""The stat cache object: its record format, what it trusts, what it writes."""

from __future__ import annotations

import os
import time

import pytest

from cas.model.history import History
from cas.objectid import hash_bytes
from cas.ops.snapshot import take_snapshot
from cas.ops.statcache import (
    RACY_NS,
    STAT_TABLE,
    StatCache,
    cache_prefix,
    cached_oid,
    record_oid,
    stat_record,
)
from cas.storage.store import Store

OLD_NS = 1_600_000_000 * 10**9   # an mtime long before any scan


@pytest.fixture
def store(tmp_path):
    with Store.init(str(tmp_path / "store")) as s:
        yield s


def _old_file(path, data: bytes) -> os.stat_result:
    path.write_bytes(data)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    return os.stat(path)


def _save(store: Store, cache: StatCache, candidates=None) -> None:
    updates, deletes = cache.changes(candidates)
    store.index.update(STAT_TABLE, put=updates.items(), delete=deletes)


@pytest.mark.parametrize("preload", [True, False])
def test_round_trip_through_the_index(store, tmp_path, preload):
    st = _old_file(tmp_path / "a.txt", b"alpha")
    oid = hash_bytes(b"alpha")
    cache = StatCache(store.index, "main", time.time_ns())
    assert cache.lookup(b"d/a.txt", st) is None
    cache.record(b"d/a.txt", st, oid)
    _save(store, cache)
    assert store.index.get(STAT_TABLE, cache_prefix("main") + b"d/a.txt") == stat_record(st, oid)
    again = StatCache(store.index, "main", time.time_ns(), preload=preload)
    assert again.lookup(b"d/a.txt", st) == oid
    # Another branch has records of its own, even for a name that extends this one's.
    assert StatCache(store.index, "main2", time.time_ns(), preload=preload).lookup(b"d/a.txt", st) is None
    assert StatCache(store.index, "mai", time.time_ns(), preload=preload).lookup(b"n\0d/a.txt", st) is None


def test_a_record_from_another_stat_is_not_trusted(tmp_path):
    st_a = _old_file(tmp_path / "a", b"same")
    st_b = _old_file(tmp_path / "b", b"same")   # same size and times, another inode
    record = stat_record(st_a, hash_bytes(b"same"))
    assert cached_oid(record, st_a) == hash_bytes(b"same")
    assert cached_oid(record, st_b) is None
    # The same file changed in place: its size, its mtime, or only its ctime.
    grown = _old_file(tmp_path / "a", b"same plus")
    assert cached_oid(record, grown) is None
    record = stat_record(grown, hash_bytes(b"same plus"))
    os.utime(tmp_path / "a", ns=(OLD_NS, OLD_NS + 1))
    assert cached_oid(record, os.stat(tmp_path / "a")) is None
    os.utime(tmp_path / "a", ns=(OLD_NS, OLD_NS))
    record = stat_record(os.stat(tmp_path / "a"), hash_bytes(b"same plus"))
    time.sleep(0.02)
    os.chmod(tmp_path / "a", 0o600)
    assert cached_oid(record, os.stat(tmp_path / "a")) is None


def test_a_recent_file_is_not_recorded(store, tmp_path):
    path = tmp_path / "fresh"
    path.write_bytes(b"new")
    st = os.stat(path)
    cache = StatCache(store.index, "main", st.st_mtime_ns + RACY_NS // 2)
    cache.record(b"fresh", st, hash_bytes(b"new"))
    assert cache.changes() == ({}, [])
    later = StatCache(store.index, "main", st.st_mtime_ns + RACY_NS + 1)
    later.record(b"fresh", st, hash_bytes(b"new"))
    assert list(later.changes()[0]) == [b"main\0fresh"]


@pytest.mark.parametrize("record", [b"", b"\0" * 7, b"x" * 71, b"y" * 73])
def test_a_record_of_the_wrong_length_is_ignored(store, tmp_path, record):
    st = _old_file(tmp_path / "a", b"alpha")
    store.index.update(STAT_TABLE, put=[(b"main\0a", record)])
    for preload in (True, False):
        assert StatCache(store.index, "main", time.time_ns(), preload=preload).lookup(b"a", st) is None
    assert cached_oid(stat_record(st, hash_bytes(b"alpha"))[:-1], st) is None
    assert record_oid(record) is None
    assert record_oid(stat_record(st, hash_bytes(b"alpha"))) == hash_bytes(b"alpha")


def test_a_snapshot_over_a_truncated_record_reads_the_file(store, tmp_path):
    """A damaged cache costs a read, never the snapshot."""
    src = tmp_path / "src"
    src.mkdir()
    _old_file(src / "a.txt", b"alpha")
    _old_file(src / "b.txt", b"beta")
    history = History(store)
    first = take_snapshot(history, str(src), "main", allow_empty=True)
    assert first.scan.read_files == 2
    key = b"main\0a.txt"
    record = store.index.get(STAT_TABLE, key)
    assert record is not None
    store.index.update(STAT_TABLE, put=[(key, record[:20])])
    second = take_snapshot(history, str(src), "main", allow_empty=True)
    assert second.scan.read_files == 1     # a.txt read again, b.txt known by its stat
    assert second.snapshot is not None and second.snapshot.tree == first.snapshot.tree
    assert store.index.get(STAT_TABLE, key) == record   # rewritten whole


def test_changes_delete_what_was_not_looked_up(store, tmp_path):
    st = _old_file(tmp_path / "a", b"alpha")
    oid = hash_bytes(b"alpha")
    store.index.update(STAT_TABLE, put=[(b"main\0" + n, stat_record(st, oid))
                                        for n in (b"kept", b"gone", b"other")])
    full = StatCache(store.index, "main", time.time_ns())
    full.lookup(b"kept", st)
    assert full.changes() == ({}, [b"main\0gone", b"main\0other"])
    # Without preloading only the named candidates can be known to be gone.
    targeted = StatCache(store.index, "main", time.time_ns(), preload=False)
    targeted.lookup(b"kept", st)
    assert targeted.changes({b"kept", b"gone"}) == ({}, [b"main\0gone"])
