"""Getting data back: restore, point-in-time restore, checkout, and their safety."""

import json
import os
import stat
import time
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cas.errors import ManifestInvalid
from cas.model.canonical import dumps
from cas.model.history import History
from cas.model.snapshot import Snapshot
from cas.objectid import hash_bytes
from cas.ops.restore import restore
from cas.ops.snapshot import take_snapshot
from cas.storage.store import Store

from .conftest import write

NAMES = st.one_of(
    st.sampled_from([b"a", b"B", b"file.txt", b"with space", b"caf\xc3\xa9", b"\xff\xfe", b"-x", b".hidden"]),
    st.binary(min_size=1, max_size=12).filter(lambda n: b"/" not in n and b"\0" not in n
                                              and n not in (b".", b"..")),
)
FILES = st.tuples(st.just("file"), st.binary(max_size=3000), st.sampled_from([0o644, 0o755, 0o600, 0o444]))
LINKS = st.tuples(st.just("link"), st.binary(min_size=1, max_size=30).filter(lambda t: b"\0" not in t))
TREES = st.recursive(
    st.one_of(FILES, LINKS),
    lambda children: st.dictionaries(NAMES, children, max_size=5).map(lambda d: ("dir", d)),
    max_leaves=25,
)


def build(root: bytes, spec) -> None:
    kind, value = spec[0], spec[1]
    if kind == "dir":
        os.makedirs(root, exist_ok=True)
        for name, child in value.items():
            build(root + b"/" + name, child)
    elif kind == "file":
        with open(root, "wb") as f:
            f.write(value)
        os.chmod(root, spec[2])
    else:
        os.symlink(value, root)


def describe(root: bytes) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        if b".cas" in dirs:
            dirs.remove(b".cas")
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", os.readlink(path), st_.st_mtime_ns)
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode), st_.st_mtime_ns)
            else:
                with open(path, "rb") as f:
                    out[rel] = ("file", f.read(), stat.S_IMODE(st_.st_mode), st_.st_mtime_ns)
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.dictionaries(NAMES, TREES, max_size=6))
def test_any_tree_restores_identically(tmp_path_factory, spec):
    base = tmp_path_factory.mktemp("prop")
    src = os.fsencode(base / "src")
    build(src, ("dir", spec))
    with Store.init(str(base / "store")) as store:
        history = History(store)
        snap = take_snapshot(history, os.fsdecode(src), "main", "prop").snapshot
        out = os.fsencode(base / "out")
        report = restore(history, snap, os.fsdecode(out))
        assert not report.problems
        assert describe(out) == describe(src)


def test_restore_at_each_moment_gives_that_moments_tree(tmp_path, cas):
    root = tmp_path / "tree"
    cas("init", str(root))
    states = []
    for i in range(4):
        write(root / "log.jsonl", b"".join(b'{"n":%d}\n' % j for j in range(i + 1)))
        write(root / f"file{i}.txt", b"%d" % i)
        if i == 2:
            os.unlink(root / "file0.txt")
        sid = cas("snapshot", "-m", f"s{i}", cwd=root).text.strip()
        states.append((sid, describe(os.fsencode(root))))
        time.sleep(0.05)
    for i, (sid, state) in enumerate(states):
        shown = json.loads(cas("show", "--json", sid, cwd=root).out)
        moment = datetime.fromtimestamp((shown["time_ns"] + 1000) / 1e9, timezone.utc).isoformat()
        out = tmp_path / f"at{i}"
        r = cas("restore", "--at", moment, "--to", str(out), cwd=root)
        assert r.code == 0, r.err
        assert describe(os.fsencode(out)) == state
    r = cas("restore", "--at", "2001-01-01T00:00:00Z", "--to", str(tmp_path / "x"), cwd=root)
    assert r.code == 2 and "at or before" in r.err


def test_restore_of_one_path_and_over_existing_files(tmp_path, cas):
    root = tmp_path / "tree"
    cas("init", str(root))
    write(root / "db" / "state.db", b"v1" * 1000)
    write(root / "events" / "e.jsonl", b"{}\n")
    cas("snapshot", cwd=root)
    out = tmp_path / "out"
    write(out / "db" / "state.db", b"stale")
    inode = (out / "db" / "state.db").stat().st_ino
    r = cas("restore", "HEAD", "db/state.db", "--to", str(out), cwd=root)
    assert r.code == 0, r.err
    assert (out / "db" / "state.db").read_bytes() == b"v1" * 1000
    assert (out / "db" / "state.db").stat().st_ino != inode  # replaced by rename, not rewritten
    assert not (out / "events").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".cas-restore-")]


def test_restore_never_follows_a_symlink_in_the_target(tmp_path, cas):
    root = tmp_path / "tree"
    cas("init", str(root))
    write(root / "db" / "state.db", b"data")
    cas("snapshot", cwd=root)
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "db")
    r = cas("restore", "HEAD", "--to", str(out), cwd=root)
    assert r.code == 1 and "symbolic link" in r.err
    assert list(outside.iterdir()) == []


def crafted_snapshot(store: Store, entries: list[dict]) -> Snapshot:
    history = History(store)
    good = store.put_bytes(b"payload")
    for e in entries:
        e.setdefault("kind", "file")
        e.setdefault("mode", "0644")
        e.setdefault("mtime_ns", 0)
        if e["kind"] != "symlink":
            e.setdefault("id", good.hex)
        if e["kind"] == "file":
            e.setdefault("size", 7)
    tree = store.put_bytes(dumps({"type": "tree", "version": 1, "entries": entries}))
    snap = Snapshot(tree, (), time.time_ns(), "crafted", "evil", "h", "u", "/x")
    with store.writer() as w:
        return history.record(snap, w)


@pytest.mark.parametrize("entries", [
    [{"name": ".."}],
    [{"name": "."}],
    [{"name": "../../escape.txt"}],
    [{"name": "/etc/passwd-copy"}],
    [{"name": "a\u0000b"}],
    [{"name": ""}],
    [{"name": "same"}, {"name": "same"}],
    [{"name": "b"}, {"name": "a"}],
    [{"name": "x", "mode": "9999"}],
    [{"name": "x", "kind": "device"}],
])
def test_a_crafted_manifest_cannot_write_outside_the_target(tmp_path, cas, entries):
    store_path = tmp_path / "store"
    with Store.init(str(store_path)) as store:
        snap = crafted_snapshot(store, entries)
    out = tmp_path / "box" / "out"
    before = set((tmp_path).rglob("*"))
    r = cas("--store", str(store_path), "restore", snap.oid.hex, "--to", str(out))
    assert r.code == 1
    assert "is invalid" in r.err and "nothing was written" in r.err and "Traceback" not in r.err
    after = set((tmp_path).rglob("*"))
    audit = store_path / "audit"   # the store's own record of the failed restore
    assert {p for p in after - before if p != audit and audit not in p.parents} <= {out.parent, out}
    assert not out.exists() or list(out.iterdir()) == []


def test_a_nested_crafted_tree_is_rejected_too(tmp_path):
    with Store.init(str(tmp_path / "store")) as store:
        bad = store.put_bytes(dumps({"type": "tree", "version": 1, "entries": [
            {"name": "..", "kind": "file", "mode": "0644", "mtime_ns": 0,
             "id": hash_bytes(b"").hex, "size": 0}]}))
        snap = crafted_snapshot(store, [{"name": "dir", "kind": "dir", "id": bad.hex}])
        with pytest.raises(ManifestInvalid, match="unsafe entry name"):
            restore(History(store), snap, str(tmp_path / "out"))
    assert list((tmp_path / "out").rglob("*")) == [tmp_path / "out" / "dir"]


def test_checkout_refuses_to_lose_unsnapshotted_changes(tmp_path, cas):
    root = tmp_path / "tree"
    cas("init", str(root))
    write(root / "a.txt", b"one")
    write(root / "b.txt", b"bee")
    s1 = cas("snapshot", cwd=root).text.strip()
    write(root / "a.txt", b"two")
    s2 = cas("snapshot", cwd=root).text.strip()
    write(root / "a.txt", b"three (not snapshotted)")
    write(root / "scratch.txt", b"also not snapshotted")
    r = cas("checkout", s1, cwd=root)
    assert r.code == 2 and "a.txt" in r.err and "scratch.txt" in r.err and "--force" in r.err
    assert (root / "a.txt").read_bytes() == b"three (not snapshotted)"
    cas("snapshot", cwd=root)
    r = cas("checkout", s1, cwd=root)
    assert r.code == 0, r.err
    assert (root / "a.txt").read_bytes() == b"one" and not (root / "scratch.txt").exists()
    assert (root / "b.txt").read_bytes() == b"bee"
    assert cas("checkout", s2, "a.txt", cwd=root).code == 0
    assert (root / "a.txt").read_bytes() == b"two"
    write(root / "a.txt", b"lost on purpose")
    assert cas("checkout", "--force", s1, cwd=root).code == 0
    assert (root / "a.txt").read_bytes() == b"one"


def test_checkout_turns_files_into_directories_and_back(tmp_path, cas):
    root = tmp_path / "tree"
    cas("init", str(root))
    write(root / "x", b"file")
    s1 = cas("snapshot", cwd=root).text.strip()
    os.unlink(root / "x")
    write(root / "x" / "inner.txt", b"inner")
    s2 = cas("snapshot", cwd=root).text.strip()
    assert cas("checkout", s1, cwd=root).code == 0
    assert (root / "x").read_bytes() == b"file"
    assert cas("checkout", s2, cwd=root).code == 0
    assert (root / "x" / "inner.txt").read_bytes() == b"inner"


@pytest.mark.plain_only
def test_raw_content_is_written_from_its_mapping_and_checked(tmp_path):
    """Raw chunks and raw loose objects go out through write_content's mapped
    path: a flipped byte or a truncated pack is an error, never a torn file."""
    import os as _os
    from cas.errors import ObjectDamaged
    from cas.storage.store import Store
    from cas.storage.writer import Placement
    from .conftest import flip_byte
    data = _os.urandom(3 << 20) + bytes(5 << 20) + _os.urandom(1 << 20)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    for placement in (Placement(raw=True), Placement(raw=True, whole=True)):
        root = tmp_path / f"s-{placement.whole}"
        with Store.init(str(root)) as store:
            with store.writer(placement=placement) as w:
                oid, _ = w.put_file(str(src))
            out = tmp_path / "out.bin"
            with open(out, "wb") as f:
                assert store.write_content(oid, f.fileno()) == len(data)
            assert out.read_bytes() == data
            pieces = store._raw_pieces(store.entry(oid))
            assert pieces is not None  # the mapped path is the one under test
            first, _ = pieces[0]
            path = store.layout.pack_path(first.pack) if first.pack else \
                store.layout.loose_path(first.oid, first.encoding)
            flip_byte(path, first.offset + 100)
            with open(out, "wb") as f, pytest.raises(ObjectDamaged):
                store.write_content(oid, f.fileno())
            _os.truncate(path, first.offset + 10)
            with open(out, "wb") as f, pytest.raises(ObjectDamaged, match="truncated"):
                store.write_content(oid, f.fileno())


def test_restore_and_checkout_print_what_they_did_as_json(tmp_path, cas):
    root = tmp_path / "tree"
    cas("init", str(root))
    (root / "d").mkdir()
    (root / "d" / "a.txt").write_bytes(b"one")
    (root / "b.txt").write_bytes(b"two!")
    first = cas("snapshot", cwd=root).text.strip()
    (root / "b.txt").write_bytes(b"changed")
    cas("snapshot", cwd=root)
    doc = json.loads(cas("restore", first, "--to", str(tmp_path / "out"), "--json", cwd=root).out)
    assert (doc["snapshot"], doc["files"], doc["dirs"], doc["bytes"], doc["problems"]) == \
        (first, 2, 1, 7, [])
    doc = json.loads(cas("checkout", first, "--json", cwd=root).out)
    assert doc["snapshot"] == first and doc["changed"] == 1 and doc["written"]["files"] == 1
    assert (root / "b.txt").read_bytes() == b"two!"
