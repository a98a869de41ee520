"""What each tree names, kept in the index: gc and verify trust it only
when it checks, and still report what is missing by path."""

import json

from cas.model.history import History
from cas.model.treelinks import TABLE
from cas.objectid import ObjectId
from cas.ops.gc import live_set
from cas.storage.store import Store

from .conftest import write


def two_snapshots(tmp_path, cas):
    root = tmp_path / "tree"
    cas("init", str(root))
    write(root / "d" / "a.txt", b"a1")
    write(root / "d" / "b.txt", b"b")
    write(root / "top.txt", b"t")
    s1 = cas("snapshot", cwd=root).text.strip()
    write(root / "d" / "a.txt", b"a2")
    s2 = cas("snapshot", cwd=root).text.strip()
    return root, s1, s2


def test_a_snapshot_records_its_trees_links_and_gc_reads_no_tree(tmp_path, cas):
    root, s1, s2 = two_snapshots(tmp_path, cas)
    with Store.open(str(root / ".cas")) as store:
        history = History(store)
        parsed = []
        load = history.load_tree
        history.tree_links._load_tree = lambda oid: parsed.append(oid) or load(oid)
        live = live_set(history)
    assert parsed == []  # every tree was recorded with its links by its snapshot
    for path in ("d/a.txt", "d/b.txt", "top.txt"):
        oid = json.loads(cas("ls", "--json", f"HEAD:{path}", cwd=root).out)[0]["id"]
        assert bytes.fromhex(oid) in live
    old = json.loads(cas("ls", "--json", f"{s1}:d/a.txt", cwd=root).out)[0]["id"]
    assert bytes.fromhex(old) in live


def test_damaged_links_are_recomputed_never_trusted(tmp_path, cas):
    """A record that does not check (bit rot, a crafted index) costs a
    parse of the tree; it never hides a live object from gc."""
    root, s1, s2 = two_snapshots(tmp_path, cas)
    with Store.open(str(root / ".cas")) as store:
        history = History(store)
        keys = [k for k, _ in store.index.scan(TABLE)]
        assert keys
        # Every record now claims its tree names nothing.
        store.index.update(TABLE, put=[(k, b"\0" * 16) for k in keys])
        before = store.index.scan(TABLE)
        live = live_set(history)
        after = dict(store.index.scan(TABLE))
    a2 = json.loads(cas("ls", "--json", "HEAD:d/a.txt", cwd=root).out)[0]["id"]
    assert bytes.fromhex(a2) in live
    assert all(after[k] != v for k, v in before)  # rewritten from the trees
    assert cas("gc", "--grace", "0", cwd=root).code == 0
    assert cas("verify", "--full", cwd=root).code == 0
    out = tmp_path / "out"
    assert cas("restore", s1, "--to", str(out), cwd=root).code == 0
    assert (out / "d" / "a.txt").read_bytes() == b"a1"


def test_verify_names_by_path_what_a_tree_with_known_links_lost(tmp_path, cas):
    root, s1, s2 = two_snapshots(tmp_path, cas)
    b = json.loads(cas("ls", "--json", "HEAD:d/b.txt", cwd=root).out)[0]["id"]
    with Store.open(str(root / ".cas")) as store:
        store.index.remove([ObjectId.parse(b)])  # content gone from the index
    r = json.loads(cas("verify", "--json", cwd=root).out)
    assert not r["ok"]
    hurt = [x for x in r["damage"] if x["id"] == b]
    assert hurt and {u["path"] for u in hurt[0]["used_by"]} == {"d/b.txt"}
    # A tree whose links are known but whose object is gone is still missing.
    tree_id = ObjectId.parse(json.loads(cas("show", "--json", "HEAD", cwd=root).out)["tree"])
    with Store.open(str(root / ".cas")) as store:
        assert store.index.get(TABLE, tree_id.digest) is not None
        store.index.remove([tree_id])
    r = json.loads(cas("verify", "--json", cwd=root).out)
    assert any(x["id"] == tree_id.hex for x in r["damage"]), r["damage"]
