"""The index of an encrypted store (docs/FORMAT.md §18.12): every table keyed
by names and keyed hashes, every value that holds a path, a name or an id
sealed, yet every caller gets back exactly the keys, values and orders it
would get from a plain store's index."""

from __future__ import annotations

import os
import random
from pathlib import Path

import lmdb
import pytest

from cas.errors import IndexUnavailable
from cas.model.timeline import STAMP, branch_prefix, entry_key
from cas.objectid import ObjectId, hash_bytes
from cas.ops.statcache import STAT_TABLE, cache_prefix
from cas.storage.crypto import Sealer
from cas.storage.encoding import Encoding
from cas.storage.index import DATA_FILE, TABLES, Index, IndexEntry, PackRecord, SealedIndex

MARKER = b"zq-marker-7f3a"
BRANCHES = ["main", "zq-branch-" + "x" * 40, "feature/zq-\u00e9t\u00e9"]


def _oid(n: int) -> ObjectId:
    return hash_bytes(MARKER + b"%d" % n)


def _sealer() -> Sealer:
    return Sealer(os.urandom(32))


@pytest.fixture
def pair(tmp_path):
    """A plain index and an encrypted one, to be fed the same changes."""
    plain = Index.create(str(tmp_path / "plain" / "index"), "s")
    sealed = Index.create(str(tmp_path / "sealed" / "index"), "s", sealer=_sealer())
    yield plain, sealed
    plain.close()
    sealed.close()


def _entries(count: int) -> list[IndexEntry]:
    pack = hash_bytes(b"a pack")
    return [IndexEntry(_oid(n), Encoding.RAW, n, n + 7, pack if n % 2 else None, 100 * n)
            for n in range(count)]


def test_a_plain_store_keeps_the_plain_index(tmp_path):
    # No per-call cost and the same bytes: a plain store's index is the plain class.
    index = Index.create(str(tmp_path / "index"), "s")
    assert type(index) is Index
    index.record([IndexEntry(_oid(1), Encoding.RAW, 1, 1)])
    index.update(STAT_TABLE, put=[(b"main\0zq-path", MARKER)])
    index.close()
    data = (tmp_path / "index" / DATA_FILE).read_bytes()
    assert _oid(1).digest in data and b"main\0zq-path" in data and MARKER in data


def test_objects_round_trip_by_plain_ids(pair):
    plain, sealed = pair
    assert type(sealed) is SealedIndex
    entries = _entries(300)
    packs = [PackRecord(hash_bytes(b"a pack"), 4096, 150)]
    for index in pair:
        index.record(entries, packs)
    for e in entries:
        assert sealed.lookup(e.oid) == e == plain.lookup(e.oid)
        assert sealed.contains(e.oid)
    assert sealed.lookup(_oid(999)) is None and not sealed.contains(_oid(999))
    assert sorted(sealed.entries(), key=lambda e: e.oid) == sorted(entries, key=lambda e: e.oid)
    assert sorted(sealed.locations()) == sorted(plain.locations())
    assert sealed.packs() == plain.packs() and sealed.object_count() == 300
    for prefix in ("", "0", "a1", "f3c", entries[5].oid.hex[:7], entries[5].oid.hex, "0123456789"):
        for limit in (1, 2, 1000):
            assert sealed.match_prefix(prefix, limit) == plain.match_prefix(prefix, limit), prefix
    gone = [e.oid for e in entries[:100]]
    for index in pair:
        index.remove(gone)
    assert sealed.lookup(gone[0]) is None and sealed.object_count() == 200
    assert sorted(sealed.locations()) == sorted(plain.locations())


def _timeline_rows(rng: random.Random) -> list[tuple[bytes, bytes]]:
    rows = [(STAMP, b"a stamp")]
    for n in range(120):
        branch = BRANCHES[n % 3]
        # Few distinct times: many snapshots of a branch share one, so ties
        # must come back in the plain order of their ids.
        time_ns = rng.choice([-5, 0, 10**18, 10**18 + 1, 2**64 + 3])
        rows.append((entry_key(branch, time_ns, _oid(n)), branch.encode()))
    return rows


def _statcache_rows() -> list[tuple[bytes, bytes]]:
    rows = []
    for n, branch in enumerate(BRANCHES * 20):
        path = b"dir/zq-file-%d.txt" % n
        rows.append((cache_prefix(branch) + path, MARKER + _oid(n).digest))
    # Keys the plain index keeps in longkeys: past LMDB's key size, and empty.
    rows.append((cache_prefix("main") + b"d/" * 1500 + b"zq-deep", b"long"))
    rows.append((b"", b"empty key"))
    return rows


def _id_rows(table: bytes) -> list[tuple[bytes, bytes]]:
    return [(_oid(n).digest, table + b" value " + MARKER + b"%d" % n) for n in range(50)]


TABLE_ROWS = {
    b"statcache": _statcache_rows(),
    b"snapshots": _id_rows(b"snapshots"),
    b"treelinks": _id_rows(b"treelinks"),
    b"verified": _id_rows(b"verified"),
    b"meta": [(b"zz-cursor", b"\0" * 8)],
}


def _prefixes(table: bytes) -> list[bytes]:
    if table == b"timeline":
        return [b"", b"st", STAMP] + [branch_prefix(b) for b in BRANCHES] + \
            [entry_key(b, 10**18) for b in BRANCHES] + [entry_key("main", 0)[:12]]
    if table == b"statcache":
        return [b"", b"ma", cache_prefix("main"), cache_prefix("main") + b"dir/zq-file-1",
                cache_prefix(BRANCHES[2])]
    return [b"", _oid(3).digest, _oid(3).digest[:5]]


def _bounds(rows: list[tuple[bytes, bytes]]) -> list[bytes | None]:
    keys = sorted(k for k, _ in rows)
    picked = [keys[i] for i in range(0, len(keys), 7)]
    return [None, b"", b"\xff" * 60] + picked + [k + b"\0" for k in picked] + [k[:20] for k in picked]


def _model_newest(rows: list[tuple[bytes, bytes]], prefix: bytes, limit: int | None,
                  before: bytes | None) -> list[tuple[bytes, bytes]]:
    """scan_newest as documented, from a full scan (a bound outside the
    prefix, or empty, bounds nothing)."""
    bounded = before is not None and before != b"" and before.startswith(prefix)
    out = [(k, v) for k, v in reversed(rows) if not bounded or k < before]  # type: ignore[operator]
    return out if limit is None else out[:limit]


def _same_answers(plain: Index, sealed: Index, table: bytes, rows) -> None:
    if table != b"meta":
        assert sealed.count(table) == len(rows)
    # The plain index's ordered scans read short keys only.
    plain_ordered = all(plain._fits(k) for k, _ in rows)
    for key, value in rows:
        assert sealed.get(table, key) == value == plain.get(table, key)
    assert sealed.get(table, b"no such key") is None
    for prefix in _prefixes(table):
        full = plain.scan(table, prefix)
        assert sealed.scan(table, prefix) == full, (table, prefix)
        for limit in (0, 1, 3, 16, None):
            if limit is not None:
                assert sealed.scan_oldest(table, prefix, limit) == full[:limit], (table, prefix, limit)
            for before in _bounds(rows):
                expected = _model_newest(full, prefix, limit, before)
                assert sealed.scan_newest(table, prefix, limit, before) == expected, \
                    (table, prefix, limit, before)
                if plain_ordered:
                    assert plain.scan_newest(table, prefix, limit, before) == expected


def test_every_table_and_scan_answers_as_the_plain_index(pair):
    plain, sealed = pair
    rng = random.Random(14)
    tables = {**TABLE_ROWS, b"timeline": _timeline_rows(rng)}
    for index in pair:
        index.update_tables({t: (rows, ()) for t, rows in tables.items()})
    for table, rows in tables.items():
        _same_answers(plain, sealed, table, rows)
    # Deletes, overwrites and clears, through every write call.
    for table, rows in tables.items():
        gone, changed = rows[::3], [(k, v + b"!") for k, v in rows[1::3]]
        for index in pair:
            index.update(table, put=changed, delete=[k for k, _ in gone])
        kept = dict(rows)
        kept.update(changed)
        for k, _ in gone:
            kept.pop(k)
        _same_answers(plain, sealed, table, sorted(kept.items()))
        for k, _ in gone:
            assert sealed.get(table, k) is None
    for index in pair:
        index.clear(b"statcache", cache_prefix("main"))
        index.clear(b"timeline")
    assert sealed.scan(b"statcache") == plain.scan(b"statcache") != []
    assert sealed.scan(b"timeline") == [] and sealed.count(b"timeline") == 0


def _secrets() -> list[bytes]:
    found = [MARKER, b"zq-file", b"zq-deep", b"zq-branch", "zq-\u00e9t\u00e9".encode()]
    for n in range(300):
        found += [_oid(n).digest, _oid(n).hex.encode(), _oid(n).digest[:12]]
    # The plain timeline's branch hash tells a branch from a list of guesses.
    found += [branch_prefix(b) for b in BRANCHES]
    return found


def test_the_data_file_holds_no_id_path_branch_or_marker(tmp_path):
    path = tmp_path / "index"
    index = Index.create(str(path), "s", sealer=_sealer())
    index.record(_entries(300))
    index.update_tables({t: (rows, ()) for t, rows in TABLE_ROWS.items() if t != b"meta"})
    index.update(b"timeline", put=_timeline_rows(random.Random(1)))
    # Deleted and overwritten records leave their old pages behind until reused.
    index.remove([_oid(n) for n in range(0, 300, 2)])
    index.update(b"statcache", put=[(k, v + MARKER) for k, v in TABLE_ROWS[b"statcache"][::2]],
                 delete=[k for k, _ in TABLE_ROWS[b"statcache"][1::2]])
    index.clear(b"snapshots")
    _assert_nothing_in(path / DATA_FILE)
    before, after = index.compact()
    assert after <= before
    _assert_nothing_in(path / DATA_FILE)
    assert index.lookup(_oid(1)) is not None and index.get(b"treelinks", _oid(4).digest) is not None
    index.close()


def _assert_nothing_in(path: Path) -> None:
    data = path.read_bytes()
    leaked = [s for s in _secrets() if s in data]
    assert leaked == []


def _raw_tables(path: Path) -> tuple[lmdb.Environment, dict]:
    env = lmdb.open(str(path), max_dbs=len(TABLES) + 4, subdir=True)
    return env, {name: env.open_db(name) for name in TABLES}


@pytest.mark.parametrize("table", [b"statcache", b"timeline", b"snapshots", b"treelinks", b"verified"])
def test_a_tampered_or_moved_value_is_index_damage(tmp_path, table):
    path = tmp_path / "index"
    sealer = _sealer()
    rows = TABLE_ROWS.get(table) or _timeline_rows(random.Random(2))
    rows = [(k, v) for k, v in rows if k]
    index = Index.create(str(path), "s", sealer=sealer)
    index.update(table, put=rows)
    index.close()
    env, dbs = _raw_tables(path)
    with env.begin(write=True, db=dbs[table]) as txn:
        stored = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
        (k0, v0), (k1, _) = stored[0], stored[1]
        txn.put(k0, v0[:-1] + bytes([v0[-1] ^ 1]))   # a flipped bit
        txn.put(k1, v0)                               # a value moved to another key
    env.close()
    index = Index.open(str(path), "s", sealer=sealer)
    for call in (lambda: index.scan(table), lambda: index.scan_newest(table, b""),
                 lambda: index.scan_oldest(table, b"", 1000)):
        with pytest.raises(IndexUnavailable, match="cas index rebuild"):
            call()
    damaged = 0
    for key, _ in rows:
        if index._keys[table].stored(key) in (k0, k1):
            damaged += 1
            with pytest.raises(IndexUnavailable, match="cas index rebuild"):
                index.get(table, key)
    assert damaged == 2
    index.close()


# -- the callers, on an encrypted store ---------------------------------------

OLD_NS = 1_600_000_000 * 10**9   # an mtime the stat cache trusts


@pytest.fixture
def encrypted(tmp_path):
    from cas.storage.config import ENCRYPTION, StoreConfig
    from cas.storage.store import Store
    path = str(tmp_path / "store")
    Store.init(path, StoreConfig(encryption=dict(ENCRYPTION)), password=b"pw").close()
    with Store.open(path, password=b"pw") as store:
        yield store


def _corpus(root: Path) -> dict[str, bytes]:
    files = {f"zq-dir-{d}/zq-file-{n}.txt": MARKER + b" %d %d" % (d, n) for d in range(3) for n in range(20)}
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(OLD_NS, OLD_NS))
    return files


def test_snapshots_stat_cache_and_tree_links_on_an_encrypted_index(encrypted, tmp_path):
    from cas.model.history import History
    from cas.model.treelinks import TreeLinks
    from cas.ops.gc import _prune_stat_cache
    from cas.ops.snapshot import take_snapshot
    from cas.ops.statcache import StatCache
    history = History(encrypted)
    files = _corpus(tmp_path / "src")
    first = take_snapshot(history, str(tmp_path / "src"), "zq-branch-main")
    assert first.scan.read_files == 60
    # The second snapshot finds every file in the (sealed) stat cache.
    again = take_snapshot(history, str(tmp_path / "src"), "zq-branch-main", allow_empty=True)
    assert again.scan.read_files == 0
    snap = first.snapshot
    assert snap is not None and history.load_snapshot(snap.oid).tree == snap.tree
    assert encrypted.index.get(b"snapshots", snap.oid.digest) is not None
    links = TreeLinks(encrypted, history.load_tree).get(snap.tree)
    assert len(links) == 3 and all(kind == 1 for kind, _, _ in links)
    cache = StatCache(encrypted.index, "zq-branch-main", 0)
    assert cache.loaded is not None and len(cache.loaded) == 60
    # gc drops the records of content it removed, by reading the sealed values.
    removed = hash_bytes(files["zq-dir-0/zq-file-0.txt"])
    _prune_stat_cache(encrypted, {removed})
    assert len(StatCache(encrypted.index, "zq-branch-main", 0).loaded or {}) == 59
    encrypted.index.compact()
    data = Path(encrypted.index.path, DATA_FILE).read_bytes()
    secrets = [MARKER, b"zq-", branch_prefix("zq-branch-main"), snap.oid.digest, snap.oid.hex.encode(),
               snap.tree.digest, snap.tree.hex.encode(), str(tmp_path / "src").encode()]
    for content in files.values():
        secrets += [hash_bytes(content).digest, hash_bytes(content).hex.encode()]
    assert [s for s in secrets if s in data] == []
