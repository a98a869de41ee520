"""The JSON Schemas in manifests/ against the examples, real snapshots and broken manifests."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from cas.errors import ManifestInvalid
from cas.model.canonical import dumps
from cas.model.history import History
from cas.model.snapshot import Snapshot
from cas.model.tree import Tree
from cas.objectid import ObjectId, hash_bytes
from cas.ops.snapshot import take_snapshot
from cas.storage.store import Store

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
EXAMPLES = MANIFESTS / "examples"
NO_ID = ObjectId(bytes(32))
OLD_NS = 1_600_000_000_000_000_000   # 2020: well outside the stat cache's racy window


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((MANIFESTS / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


TREE = _validator("tree")
SNAPSHOT = _validator("snapshot")


def _example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def _errors(validator: Draft202012Validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


# -- (a) the examples ------------------------------------------------------------------


@pytest.mark.parametrize("name, validator", [
    ("tree.json", TREE), ("tree-non-utf8.json", TREE), ("snapshot.json", SNAPSHOT)])
def test_example_validates(name, validator):
    assert _errors(validator, _example(name)) == []


def test_examples_are_the_stored_manifests_pretty_printed():
    """Re-canonicalised, each example is the stored object its parent names by id."""
    snap, root, sub = (_example(n) for n in ("snapshot.json", "tree.json", "tree-non-utf8.json"))
    root_bytes, sub_bytes = dumps(root), dumps(sub)
    assert hash_bytes(root_bytes).hex == snap["tree"]
    latin1 = next(e for e in root["entries"] if e.get("name") == "latin1")
    assert hash_bytes(sub_bytes).hex == latin1["id"]
    assert any("name_b64" in e for e in sub["entries"])
    # The library reads them back as they are.
    Tree.from_json(root_bytes, hash_bytes(root_bytes))
    Tree.from_json(sub_bytes, hash_bytes(sub_bytes))
    snap_bytes = dumps(snap)
    assert Snapshot.from_json(snap_bytes, hash_bytes(snap_bytes)).tree.hex == snap["tree"]


# -- (b) every manifest of a real snapshot ---------------------------------------------


def _make_source(root: Path) -> None:
    b = os.fsencode(root)
    os.makedirs(os.path.join(b, b"empty-dir"))
    os.makedirs(os.path.join(b, b"sub", b"deep", b"deeper"))
    files = {
        b"empty.txt": b"",
        b"run.sh": b"#!/bin/sh\nexit 0\n",
        b"caf\xe9.txt": b"latin-1 name\n",              # not UTF-8: name_b64
        "café.txt".encode(): b"utf-8 name\n",
        b"new\nline": b"a newline in a name\n",
        "emoji-\U0001F600".encode(): b"astral plane\n",
        b'quote"back\\slash': b"escapes\n",
        b"sub/a.txt": b"a\n",
        b"sub/deep/b.txt": b"b\n",
        b"sub/deep/deeper/c.txt": b"c" * 5000,
    }
    for name, data in files.items():
        with open(os.path.join(b, name), "wb") as f:
            f.write(data)
    os.chmod(os.path.join(b, b"run.sh"), 0o755)
    os.chmod(os.path.join(b, b"sub", b"a.txt"), 0o600)
    os.symlink(b"sub/deep/b.txt", os.path.join(b, b"link"))
    os.symlink(b"../caf\xe9.txt", os.path.join(b, b"sub", b"link-latin1"))   # target_b64
    os.symlink(b"does/not/exist", os.path.join(b, b"dangling"))
    for dirpath, dirnames, filenames in sorted(os.walk(b), key=lambda w: -len(w[0])):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), ns=(OLD_NS, OLD_NS), follow_symlinks=False)


@pytest.fixture(scope="module")
def snapshotted(tmp_path_factory):
    """A store with two snapshots (the second a child of the first) of a tree of odd cases."""
    base = tmp_path_factory.mktemp("manifests")
    source = base / "src"
    source.mkdir()
    _make_source(source)
    store = Store.init(str(base / "store"))
    history = History(store)
    first = take_snapshot(history, str(source), "main", "first").snapshot
    (source / "sub" / "a.txt").write_bytes(b"changed\n")
    second = take_snapshot(history, str(source), "main", "second: ünïcode message\n").snapshot
    assert first is not None and second is not None
    yield store, [first, second]
    store.close()


def _reachable_trees(store: Store, tree_id: str) -> dict[str, bytes]:
    """Every tree manifest reachable from a root, read back as stored."""
    found: dict[str, bytes] = {}
    todo = [tree_id]
    while todo:
        oid = todo.pop()
        if oid in found:
            continue
        data = store.read_object(ObjectId.parse(oid))
        found[oid] = data
        todo.extend(e["id"] for e in json.loads(data)["entries"] if e["kind"] == "dir")
    return found


def test_every_manifest_of_a_real_snapshot_validates(snapshotted):
    store, snaps = snapshotted
    entries = []
    for snap in snaps:
        data = store.read_object(snap.oid)
        doc = json.loads(data)
        assert _errors(SNAPSHOT, doc) == []
        assert dumps(doc) == data                      # stored canonical
        assert hash_bytes(data) == snap.oid
        with open(os.path.join(store.path, "snapshots", snap.oid.hex + ".json"), "rb") as f:
            assert f.read() == data                    # the snapshots/ copy is the same bytes
        trees = _reachable_trees(store, doc["tree"])
        # root, empty-dir, sub, sub/deep, sub/deep/deeper
        assert len(trees) == 5
        for oid, tree_bytes in trees.items():
            tree_doc = json.loads(tree_bytes)
            assert _errors(TREE, tree_doc) == [], oid
            assert dumps(tree_doc) == tree_bytes
            assert hash_bytes(tree_bytes).hex == oid
            entries.extend(tree_doc["entries"])

    first, second = (json.loads(store.read_object(s.oid)) for s in snaps)
    assert first["parents"] == [] and second["parents"] == [snaps[0].oid.hex]
    # The odd cases really are in what was validated.
    by_name = {e.get("name", e.get("name_b64")): e for e in entries}
    assert by_name["empty.txt"]["size"] == 0
    assert by_name["run.sh"]["mode"] == "0755"
    assert by_name["a.txt"]["mode"] == "0600"
    assert by_name["empty-dir"]["kind"] == "dir"
    assert by_name["new\nline"]["kind"] == "file"
    assert "emoji-\U0001F600" in by_name and 'quote"back\\slash' in by_name
    assert "Y2Fm6S50eHQ=" in by_name                                  # b"caf\xe9.txt"
    assert by_name["link"] == {"kind": "symlink", "mode": by_name["link"]["mode"],
                               "mtime_ns": OLD_NS, "name": "link", "target": "sub/deep/b.txt"}
    assert "target_b64" in by_name["link-latin1"]
    assert by_name["dangling"]["target"] == "does/not/exist"


# -- (c) broken manifests: rejected by the schema and by the reader --------------------


def _tree_doc() -> dict:
    return copy.deepcopy(_example("tree-non-utf8.json"))


def _file_entry(**fields) -> dict:
    return {"id": "ab" * 32, "kind": "file", "mode": "0644", "mtime_ns": OLD_NS, "size": 1,
            **fields}


def _with_entry(entry: dict) -> dict:
    doc = _tree_doc()
    doc["entries"] = [entry]
    return doc


BROKEN_TREES = {
    "name ..": _with_entry(_file_entry(name="..")),
    "name .": _with_entry(_file_entry(name=".")),
    "name empty": _with_entry(_file_entry(name="")),
    "name with /": _with_entry(_file_entry(name="a/b")),
    "name with NUL": _with_entry(_file_entry(name="a\0b")),
    "name_b64 of ..": _with_entry(_file_entry(name_b64="Li4=")),
    "name_b64 not base64": _with_entry(_file_entry(name_b64="caf\u00e9")),
    "name_b64 unpadded": _with_entry(_file_entry(name_b64="Y2Fm6S50eHQ")),
    "no name": _with_entry(_file_entry()),
    "both name and name_b64": _with_entry(_file_entry(name="a", name_b64="Y2Fm6S50eHQ=")),
    "symlink with id": _with_entry({"kind": "symlink", "mode": "0777", "mtime_ns": 1,
                                    "name": "l", "target": "t", "id": "ab" * 32}),
    "symlink without target": _with_entry({"kind": "symlink", "mode": "0777", "mtime_ns": 1,
                                           "name": "l"}),
    "symlink target with NUL": _with_entry({"kind": "symlink", "mode": "0777", "mtime_ns": 1,
                                            "name": "l", "target": "a\0b"}),
    "bad id: uppercase": _with_entry(_file_entry(name="a", id="AB" * 32)),
    "bad id: 63 digits": _with_entry(_file_entry(name="a", id="a" * 63)),
    "bad id: trailing newline": _with_entry(_file_entry(name="a", id="a" * 64 + "\n")),
    "bad id: not a string": _with_entry(_file_entry(name="a", id=12)),
    "file without id": _with_entry({k: v for k, v in _file_entry(name="a").items() if k != "id"}),
    "dir without id": _with_entry({"kind": "dir", "mode": "0755", "mtime_ns": 1, "name": "d"}),
    "unknown kind": _with_entry(_file_entry(name="a", kind="fifo")),
    "mode as integer": _with_entry(_file_entry(name="a", mode=420)),
    "mode 5 digits": _with_entry(_file_entry(name="a", mode="10644")),
    "no mtime_ns": _with_entry({k: v for k, v in _file_entry(name="a").items() if k != "mtime_ns"}),
    "not a tree": {**_tree_doc(), "type": "snapshot"},
    "version 2": {**_tree_doc(), "version": 2},
    "entries not a list": {**_tree_doc(), "entries": {}},
}

# Stricter shape rules, also enforced by both the schema and Tree.from_json.
SCHEMA_ONLY_TREES = {
    "extra top-level key": {**_tree_doc(), "extra": 1},
    "extra entry key": _with_entry(_file_entry(name="a", extra=1)),
    "file without size": _with_entry({k: v for k, v in _file_entry(name="a").items()
                                      if k != "size"}),
    "dir with size": _with_entry({"kind": "dir", "mode": "0755", "mtime_ns": 1, "name": "d",
                                  "id": "ab" * 32, "size": 0}),
    "file with target": _with_entry(_file_entry(name="a", target="t")),
    "symlink with size": _with_entry({"kind": "symlink", "mode": "0777", "mtime_ns": 1,
                                      "name": "l", "target": "t", "size": 1}),
    "mode 3 digits": _with_entry(_file_entry(name="a", mode="644")),
    "mtime_ns as string": _with_entry(_file_entry(name="a", mtime_ns="1")),
}

@pytest.mark.parametrize("case", sorted(BROKEN_TREES) + sorted(SCHEMA_ONLY_TREES))
def test_schema_rejects_broken_tree(case):
    doc = BROKEN_TREES.get(case) or SCHEMA_ONLY_TREES[case]
    assert _errors(TREE, doc), f"schema accepted: {case}"


@pytest.mark.parametrize("case", sorted(BROKEN_TREES) + sorted(SCHEMA_ONLY_TREES))
def test_reader_rejects_broken_tree(case):
    data = dumps(BROKEN_TREES.get(case) or SCHEMA_ONLY_TREES[case])
    with pytest.raises(ManifestInvalid):
        Tree.from_json(data, hash_bytes(data))


def test_reader_rejects_what_the_schema_cannot_express():
    """Order and uniqueness of names are the reader's job alone."""
    a, b = _file_entry(name="a"), _file_entry(name="b")
    for entries in ([b, a], [a, a]):
        doc = {**_tree_doc(), "entries": entries}
        assert _errors(TREE, doc) == []
        with pytest.raises(ManifestInvalid):
            Tree.from_json(dumps(doc), NO_ID)


def _snap_doc(**changes) -> dict:
    doc = _example("snapshot.json")
    doc.update(changes)
    return doc


def _without(key: str) -> dict:
    doc = _snap_doc()
    del doc[key]
    return doc


BROKEN_SNAPSHOTS = {
    "bad tree id": _snap_doc(tree="x" * 64),
    "bad parent id": _snap_doc(parents=["ab" * 31]),
    "parents not a list": _snap_doc(parents="ab" * 32),
    "no tree": _without("tree"),
    "no message": _without("message"),
    "no source": _without("source"),
    "not a snapshot": _snap_doc(type="tree"),
    "version 2": _snap_doc(version=2),
}

SCHEMA_ONLY_SNAPSHOTS = {
    "extra key": _snap_doc(extra=1),
    "no time": _without("time"),
    "no stats": _without("stats"),
    "message not a string": _snap_doc(message=5),
    "relative source": _snap_doc(source="project"),
    "negative count": _snap_doc(stats={**_snap_doc()["stats"], "files": -1}),
    "unknown stat": _snap_doc(stats={**_snap_doc()["stats"], "other": 1}),
    "time without nanoseconds": _snap_doc(time="2024-05-01T12:00:00Z"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_SNAPSHOTS) + sorted(SCHEMA_ONLY_SNAPSHOTS))
def test_schema_rejects_broken_snapshot(case):
    doc = BROKEN_SNAPSHOTS.get(case) or SCHEMA_ONLY_SNAPSHOTS[case]
    assert _errors(SNAPSHOT, doc), f"schema accepted: {case}"


@pytest.mark.parametrize("case", sorted(BROKEN_SNAPSHOTS))
def test_reader_rejects_broken_snapshot(case):
    with pytest.raises(ManifestInvalid):
        Snapshot.from_json(dumps(BROKEN_SNAPSHOTS[case]), NO_ID)


# -- chunk lists --------------------------------------------------------------------------

def test_every_chunk_list_written_validates_against_its_schema(tmp_path):
    from cas.objectid import ObjectId
    from cas.storage.chunklist import ChunkList
    from cas.storage.encoding import Encoding

    schema = json.loads((MANIFESTS / "chunks.schema.json").read_text())
    validator = Draft202012Validator(schema)
    src = tmp_path / "src"
    src.mkdir()
    (src / "log.jsonl").write_bytes(b"".join(b'{"n":%d,"pad":"%s"}\n' % (i, b"x" * (i % 50))
                                             for i in range(60_000)))
    with Store.init(str(tmp_path / "store")) as store:
        oid = store.put_file(str(src / "log.jsonl"))
        lists = [e for e in store.entries() if e.encoding is Encoding.CHUNKED]
        assert [e.oid for e in lists] == [oid]
        data = store.layout.loose_path(oid, Encoding.CHUNKED)
        doc = json.loads(open(data, "rb").read())
        assert list(validator.iter_errors(doc)) == []
        assert ChunkList.from_json(open(data, "rb").read()).oid == ObjectId.parse(doc["id"])
    example = json.loads((EXAMPLES / "chunks.json").read_text())
    assert list(validator.iter_errors(example)) == []
    ChunkList.from_json(json.dumps(example).encode())  # sizes add up, ids parse
    bad = {**doc, "chunks": [["zz", 1]]}
    assert list(validator.iter_errors(bad))
