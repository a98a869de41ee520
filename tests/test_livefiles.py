"""Small live files (SQLite databases, logs) cost what changed, not the whole file.

Real sqlite3 databases, real files, real stores, the real ``cas`` in a
subprocess: a 335 KB database with one row updated, a 670 KB JSONL with a
line appended, restored bit for bit, verified; older stores (JSON chunk
lists, configs without the setting) still read and keep their format.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from pathlib import Path

import blake3
import pytest
import zstandard
from hypothesis import given, settings, strategies as st

from cas.errors import ObjectDamaged
from cas.objectid import ObjectId, hash_bytes
from cas.storage.chunklist import MAGIC, ChunkList, ChunkListError
from cas.storage.config import FORMAT_VERSION, StoreConfig
from cas.storage.store import Store

from .conftest import cas_process, chunk_list_path, write

PAGE = 4096
WORDS = "memory tool answer user search note summary today source retry latency".split()


def text(rng: random.Random, words: int) -> str:
    # Words and random numbers: compresses about as well as real rows and logs.
    return " ".join(f"{rng.choice(WORDS)}{rng.randrange(10**6)}" for _ in range(words))


def make_db(path: Path, rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO items VALUES (?, ?)",
                         [(i, text(rng, 40)) for i in range(rows)])
    conn.close()


def log_lines(rng: random.Random, count: int, start: int = 0) -> bytes:
    return b"".join((json.dumps({"seq": start + i, "text": text(rng, 30)}) + "\n").encode()
                    for i in range(count))


def snapshot(tree: Path) -> dict:
    # Byte copies: these tests compare what is stored with the file's bytes
    # (a copy through the backup API differs in its header's counters).
    done = cas_process("snapshot", "--no-sqlite-backup", "--json", cwd=tree)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["stats"]


def cas_ok(tree: Path, *args: str) -> bytes:
    done = cas_process(*args, cwd=tree)
    assert done.returncode == 0, done.stderr
    return done.stdout


def whole_stored(data: bytes) -> int:
    return len(zstandard.ZstdCompressor(level=3).compress(data))


@pytest.fixture
def tree(tmp_path) -> Path:
    t = tmp_path / "tree"
    t.mkdir()
    cas_ok(t, "init")
    return t


def test_one_row_of_a_335_kb_database_stores_a_few_pages(tree, tmp_path):
    db = tree / "memory.db"
    make_db(db, 640)
    assert 320_000 <= db.stat().st_size <= 350_000
    snapshot(tree)
    first = db.read_bytes()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE items SET body = ? WHERE id = 500", (text(random.Random(9), 40),))
    conn.close()
    stats = snapshot(tree)
    # Stored whole, the new version would cost its compressed size again.
    assert whole_stored(db.read_bytes()) > 100_000
    # The changed pages (the row's leaf and the header), the chunk list
    # (81 ids) and the new root tree.
    assert stats["stored_bytes"] <= 4 * PAGE + 3_000 + 1_000, stats
    assert stats["new_bytes"] <= 3 * PAGE + 1_000, stats
    out = tmp_path / "out"
    cas_ok(tree, "restore", "HEAD", "--to", str(out))
    assert (out / "memory.db").read_bytes() == db.read_bytes()
    cas_ok(tree, "cat", "HEAD~1:memory.db", "-o", str(tmp_path / "old.db"))
    assert (tmp_path / "old.db").read_bytes() == first
    cas_ok(tree, "verify", "--full")


def test_a_line_appended_to_a_670_kb_log_stores_a_few_kib(tree, tmp_path):
    rng = random.Random(2)
    log = tree / "today.jsonl"
    data = b""
    while len(data) < 670_000:
        data += log_lines(rng, 1, len(data))
    assert len(data) < 680_000
    log.write_bytes(data)
    snapshot(tree)
    assert whole_stored(data) > 200_000
    costs = []
    for i in range(8):
        with open(log, "ab") as f:
            f.write(log_lines(rng, 1, 2 * 10**6 + i))
        costs.append(snapshot(tree)["stored_bytes"])
    # The chunk the line extends (16 KiB on average, 64 KiB at most) compressed,
    # the chunk list and the root tree.
    assert max(costs) <= 40_000, costs
    assert sum(costs) / len(costs) <= 12_000, costs
    out = tmp_path / "out"
    cas_ok(tree, "restore", "HEAD", "--to", str(out))
    assert (out / "today.jsonl").read_bytes() == log.read_bytes()
    cas_ok(tree, "verify", "--full")


def test_the_watcher_capture_of_a_wal_database_is_cut_at_pages(tree, tmp_path):
    """``--sqlite-backup`` (what the watcher uses) stores a copy made by the
    backup API: that copy is cut too, while a writer keeps its WAL open."""
    db = tree / "memory.db"
    make_db(db, 640)
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        cas_ok(tree, "snapshot", "--sqlite-backup")
        writer.execute("UPDATE items SET body = 'changed' WHERE id = 10")
        done = cas_process("snapshot", "--sqlite-backup", "--json", cwd=tree)
        assert done.returncode == 0, done.stderr
        stats = json.loads(done.stdout)["stats"]
        assert stats["stored_bytes"] <= 4 * PAGE + 4_000, stats
        expected = tmp_path / "expected.db"
        with sqlite3.connect(expected) as copy:
            writer.backup(copy)
        copy.close()
    finally:
        writer.close()
    got = tmp_path / "got.db"
    cas_ok(tree, "cat", "HEAD:memory.db", "-o", str(got))
    with sqlite3.connect(got) as conn:
        assert conn.execute("SELECT body FROM items WHERE id = 10").fetchone() == ("changed",)
    conn.close()


def test_only_databases_and_logs_are_cut_below_the_general_threshold(tmp_path):
    rng = random.Random(3)
    body = log_lines(rng, 1000)[:200_000]
    with Store.init(str(tmp_path / "s")) as store:
        for name, cut in (("a.jsonl", True), ("b.LOG", True), ("c.ndjson", True),
                          ("d.txt", False), ("e.py", False), ("small.jsonl", False)):
            # Distinct content each: the same bytes would be the same object.
            data = name.encode() + (body[:40_000] if name.startswith("small") else body)
            oid = store.put_file(str(write(tmp_path / name, data)))
            assert (store.chunk_list(oid) is not None) == cut, name
            assert b"".join(store.iter_content(oid)) == data
        make_db(tmp_path / "x.sqlite", 600)
        oid = store.put_file(str(tmp_path / "x.sqlite"))
        chunks = store.chunk_list(oid).chunks
        assert {n for _, n in chunks} == {PAGE}


def test_a_database_of_one_page_is_stored_whole(tmp_path):
    """A live file that cuts into a single chunk is that chunk: no list."""
    db = tmp_path / "one.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA page_size=65536")
        conn.execute("PRAGMA user_version=7")  # writes the header page alone
    conn.close()
    data = db.read_bytes()
    assert len(data) == 65536
    with Store.init(str(tmp_path / "s")) as store:
        oid = store.put_file(str(db))
        assert oid.hex == blake3.blake3(data).hexdigest()
        assert store.chunk_list(oid) is None
        assert b"".join(store.iter_content(oid)) == data


@pytest.mark.plain_only
def test_new_stores_write_binary_chunk_lists_a_third_the_size(tmp_path):
    make_db(tmp_path / "m.db", 640)
    with Store.init(str(tmp_path / "s")) as store:
        assert store.config.version == FORMAT_VERSION == 2
        oid = store.put_file(str(tmp_path / "m.db"))
        listed = store.chunk_list(oid)
    raw = chunk_list_path(tmp_path / "s", oid.hex).read_bytes()
    assert raw.startswith(MAGIC)
    assert len(raw) <= 32 * len(listed.chunks) + 64
    assert len(raw) * 2 < len(listed.to_json())


@pytest.mark.plain_only
def test_a_version_1_store_keeps_json_chunk_lists_and_still_reads(tmp_path):
    """A store made by an older cas: version 1, no live_chunk_min_size in its
    config. It is read as before, and written so that older cas can still read it."""
    src = tmp_path / "m.db"
    make_db(src, 640)
    path = tmp_path / "old"
    Store.init(str(path), StoreConfig(version=1)).close()
    config = json.loads((path / "config.json").read_text())
    del config["live_chunk_min_size"]
    os.chmod(path / "config.json", 0o600)
    (path / "config.json").write_text(json.dumps(config))
    with Store.open(str(path)) as store:
        assert store.config.version == 1
        assert store.config.live_chunk_min_size == 64 << 10
        oid = store.put_file(str(src))
        assert store.chunk_list(oid) is not None
    raw = chunk_list_path(path, oid.hex).read_bytes()
    assert raw.startswith(b"{") and json.loads(raw)["version"] == 1
    assert json.loads((path / "config.json").read_text())["version"] == 1
    done = cas_process("--store", str(path), "cat", oid.hex, "-o", str(tmp_path / "out"),
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_bytes() == src.read_bytes()
    assert cas_process("--store", str(path), "verify", "--full", cwd=tmp_path).returncode == 0


def test_a_damaged_binary_chunk_list_is_one_line_exit_1(tree, tmp_path):
    make_db(tree / "m.db", 640)
    snapshot(tree)
    oid = hash_bytes((tree / "m.db").read_bytes())
    path = chunk_list_path(tree / ".cas", oid.hex)
    os.chmod(path, 0o600)
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0x01]))  # a length run no longer adds up
    for args in (("cat", "HEAD:m.db", "-o", str(tmp_path / "x")), ("verify",)):
        done = cas_process(*args, cwd=tree)
        err = done.stderr.decode()
        assert done.returncode == 1, (args, err)
        assert "Traceback" not in err and "internal error" not in err
        assert err.strip(), args


lengths = st.lists(st.one_of(st.just(PAGE), st.integers(1, 4 << 20)), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(lengths=lengths, seed=st.integers(0, 2**32 - 1))
def test_binary_chunk_lists_round_trip_and_every_truncation_is_refused(lengths, seed):
    rng = random.Random(seed)
    chunks = tuple((ObjectId(rng.randbytes(32)), n) for n in lengths)
    listed = ChunkList(ObjectId(rng.randbytes(32)), sum(lengths), chunks)
    raw = listed.encode(2)
    assert ChunkList.from_json(raw) == listed
    assert ChunkList.from_json(listed.encode(1)) == listed
    for cut in sorted({0, 8, 50, len(raw) - 1, rng.randrange(len(raw))}):
        with pytest.raises(ChunkListError):
            ChunkList.from_json(raw[:cut])
    with pytest.raises(ChunkListError):
        ChunkList.from_json(raw + b"\x01\x01")


def test_binary_chunk_list_refuses_what_json_ones_refuse():
    oid, other = hash_bytes(b"file"), hash_bytes(b"chunk")
    with pytest.raises(ChunkListError, match="names its own file"):
        ChunkList.from_json(ChunkList(oid, 7, ((other, 3), (oid, 4))).encode(2))
    with pytest.raises(ChunkListError, match="add up"):
        ChunkList.from_json(ChunkList(oid, 8, ((other, 3), (other, 4))).encode(2))
    huge = ChunkList(oid, 3, ((other, 3),)).encode(2)
    count_at = len(MAGIC) + 4 + 32 + 8
    forged = huge[:count_at] + (2**32 - 1).to_bytes(4, "little") + huge[count_at + 4:]
    with pytest.raises(ChunkListError, match="do not fit"):
        ChunkList.from_json(forged)
    with pytest.raises(ChunkListError, match="version"):
        ChunkList.from_json(huge[:8] + (3).to_bytes(4, "little") + huge[12:])



@pytest.mark.plain_only
@settings(max_examples=40, deadline=None)
@given(offset=st.integers(0, 10**6), mask=st.integers(1, 255))
def test_a_damaged_byte_anywhere_in_a_binary_chunk_list_is_damage_or_harmless(
        tmp_path_factory, offset, mask):
    """Every byte of a version 2 list is checked or checked through: a read
    gives the file's content or ObjectDamaged, never another exception."""
    base = tmp_path_factory.mktemp("flip")
    make_db(base / "m.db", 200)
    data = (base / "m.db").read_bytes()
    with Store.init(str(base / "s")) as store:
        oid = store.put_file(str(base / "m.db"))
    path = chunk_list_path(base / "s", oid.hex)
    raw = bytearray(path.read_bytes())
    raw[offset % len(raw)] ^= mask
    os.chmod(path, 0o600)
    path.write_bytes(bytes(raw))
    with Store.open(str(base / "s")) as store:
        try:
            got = b"".join(store.iter_content(oid))
        except ObjectDamaged:
            return
    assert got == data
