import json
import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cas.errors import (AmbiguousPrefix, IndexUnavailable, InvalidObjectId, ObjectDamaged,
                        ObjectNotFound, StoreExists, UnsupportedFormat)
from cas.objectid import hash_bytes
from cas.storage.encoding import Encoding
from cas.storage.store import Store, find_store

from .conftest import write


@pytest.fixture
def small_store(tmp_path, small_config):
    s = Store.init(str(tmp_path / "store"), small_config)
    yield s
    s.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200_000),
                      st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=64),
                                st.integers(1, 4000))))
def test_content_round_trips_across_the_loose_threshold(small_store, tmp_path, data):
    oid = small_store.put_bytes(data)
    assert oid == hash_bytes(data)
    assert small_store.read_object(oid) == data
    path = write(tmp_path / "in" / "f", data)
    assert small_store.put_file(str(path)) == oid
    assert b"".join(small_store.iter_content(oid)) == data


@pytest.mark.plain_only
def test_small_objects_share_packs_and_large_ones_are_files(small_store, tmp_path):
    small = [os.urandom(1000) for _ in range(50)]
    big = os.urandom(100_000)
    with small_store.writer() as w:
        for b in small:
            w.put_bytes(b)
        big_id = w.put_bytes(big)
    entries = {e.oid: e for e in small_store.entries()}
    assert all(entries[hash_bytes(b)].pack is not None for b in small)
    assert entries[big_id].pack is None
    assert len(list(small_store.layout.scan_packs())) == 1
    loose_file = small_store.layout.loose_path(big_id, Encoding.RAW)
    assert hash_bytes(open(loose_file, "rb").read()) == big_id


def test_storing_the_same_content_twice_writes_nothing_new(small_store, tmp_path):
    path = write(tmp_path / "a", b"same" * 50_000)
    small_store.put_file(str(path))
    small_store.put_bytes(b"tiny")
    before = sorted(os.listdir(small_store.layout.packs)), small_store.index.object_count()
    with small_store.writer() as w:
        w.put_file(str(path))
        w.put_bytes(b"tiny")
        assert w.new_objects == 0
    assert (sorted(os.listdir(small_store.layout.packs)), small_store.index.object_count()) == before


@pytest.mark.plain_only
def test_compressible_content_is_compressed_and_noise_is_not(small_store):
    text_id = small_store.put_bytes(b"the same line of a log\n" * 20_000)
    noise_id = small_store.put_bytes(os.urandom(200_000))
    assert small_store.entry(text_id).encoding is Encoding.ZSTD
    assert small_store.entry(text_id).stored_length < small_store.entry(text_id).size / 10
    assert small_store.entry(noise_id).encoding is Encoding.RAW


@pytest.mark.plain_only
@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd not installed")
def test_a_compressed_object_file_decompresses_with_the_zstd_tool(small_store):
    data = b"weights " * 50_000
    oid = small_store.put_bytes(data)
    path = small_store.layout.loose_path(oid, Encoding.ZSTD)
    out = subprocess.run(["zstd", "-dc", path], capture_output=True, check=True).stdout
    assert out == data


def test_ids_resolve_from_unique_prefixes(small_store):
    # Find two contents whose ids share a 6-digit prefix.
    seen = {}
    for i in range(1_000_000):
        h = hash_bytes(b"%d" % i).hex[:6]
        if h in seen:
            a, b = seen[h], b"%d" % i
            break
        seen[h] = b"%d" % i
    ida, idb = small_store.put_bytes(a), small_store.put_bytes(b)
    with pytest.raises(AmbiguousPrefix):
        small_store.resolve(ida.hex[:6])
    assert small_store.resolve(ida.hex[:12] if ida.hex[:12] != idb.hex[:12] else ida.hex) == ida
    with pytest.raises(InvalidObjectId):
        small_store.resolve("abc")
    with pytest.raises(ObjectNotFound):
        small_store.resolve("0" * 64)


def test_the_store_is_found_from_a_subdirectory(tmp_path):
    Store.init(str(tmp_path / ".cas")).close()
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert find_store(str(tmp_path / "a" / "b")) == str(tmp_path / ".cas")


def test_init_refuses_an_existing_store(store):
    with pytest.raises(StoreExists):
        Store.init(store.path)


def test_a_store_of_a_newer_format_is_refused(tmp_path):
    path = tmp_path / ".cas"
    Store.init(str(path)).close()
    cfg = json.loads((path / "config.json").read_text())
    cfg["version"] = 99
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedFormat, match="version 99"):
        Store.open(str(path))


def test_a_missing_index_is_reported_and_can_be_rebuilt(small_store, tmp_path):
    from cas.ops.reindex import rebuild_index
    ids = [small_store.put_bytes(os.urandom(n)) for n in (10, 5000, 100_000)]
    path = small_store.path
    small_store.close()
    shutil.rmtree(os.path.join(path, "index"))
    with pytest.raises(IndexUnavailable, match="missing.*cas index rebuild"):
        Store.open(path)
    report = rebuild_index(path)
    assert report.objects == 3
    with Store.open(path) as s:
        for oid in ids:
            assert hash_bytes(s.read_object(oid)) == oid


def test_a_garbage_index_is_reported_as_damaged(small_store):
    path = small_store.path
    small_store.put_bytes(b"x" * 100)
    small_store.close()
    with open(os.path.join(path, "index", "data.mdb"), "r+b") as f:
        f.write(os.urandom(8192))
    with pytest.raises(IndexUnavailable, match="damaged"):
        with Store.open(path) as s:
            list(s.entries())


@pytest.mark.plain_only
def test_large_compressed_objects_are_seekable_frames_that_zstd_reads(small_store, tmp_path):
    rng = __import__("random").Random(5)
    words = [bytes(rng.choice(b"abcdefgh") for _ in range(6)) for _ in range(500)]
    data = b" ".join(rng.choice(words) for _ in range(1_800_000))  # ~12 MiB: several frames
    oid = small_store.put_bytes(data)  # files this large are chunked; bytes go loose whole
    entry = small_store.entry(oid)
    assert entry.encoding is Encoding.ZSTD and entry.pack is None
    stored = small_store.layout.loose_path(oid, Encoding.ZSTD)
    if shutil.which("zstd"):
        out = subprocess.run(["zstd", "-dc", stored], capture_output=True, check=True).stdout
        assert out == data
    with small_store.open_object(oid) as f:
        for offset in (0, 1, 4 << 20, (4 << 20) - 3, len(data) - 10, 7_777_777):
            f.seek(offset)
            assert f.read(5000) == data[offset:offset + 5000]
    assert b"".join(small_store.iter_content(oid)) == data


def test_no_block_task_outlives_a_failed_ordered_map():
    # After an error the caller aborts its writer; a task still running on
    # the shared pool would go on writing into the store after that.
    import threading
    import time

    from cas.storage.workers import ordered_map
    running = threading.Event()
    finished = []

    def work(i):
        if i == 0:
            running.wait(5)
            raise OSError(28, "No space left on device")
        running.set()
        time.sleep(0.3)
        finished.append(i)
        return i

    with pytest.raises(OSError):
        list(ordered_map(work, range(4), ahead=2))
    assert finished == [1]


def _rerecord(store: Store, oid, **changes) -> None:
    """Record an object again as a rebuilt or damaged index might: sizes that disagree."""
    import dataclasses
    store.index.record([dataclasses.replace(store.entry(oid), **changes)])


@pytest.mark.plain_only
def test_read_into_never_reads_a_raw_packed_object_past_its_stored_bytes(small_store):
    first, second = os.urandom(3000), os.urandom(3000)
    with small_store.writer() as w:   # one pack: the second object follows the first
        oid = w.put_bytes(first)
        w.put_bytes(second)
    assert small_store.entry(oid).encoding is Encoding.RAW and small_store.entry(oid).pack
    _rerecord(small_store, oid, size=len(first) + 500)
    buf = bytearray(len(first) + 500)
    with pytest.raises(ObjectDamaged):
        small_store.read_into(oid, 0, buf)


@pytest.mark.plain_only
def test_read_into_past_a_compressed_objects_frames_is_damage(small_store):
    data = b"compressible " * 20_000
    oid = small_store.put_bytes(data)
    assert small_store.entry(oid).encoding is Encoding.ZSTD and small_store.entry(oid).pack is None
    _rerecord(small_store, oid, size=len(data) + 1000)
    with pytest.raises(ObjectDamaged):
        small_store.read_into(oid, len(data) - 10, bytearray(500))
