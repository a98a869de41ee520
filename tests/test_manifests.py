"""The JSON Schemas in manifests/ against the examples, real snapshots, real model
imports and broken manifests."""

from __future__ import annotations

import copy
import json
import grp
import os
import pwd
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from cas.errors import ManifestInvalid
from cas.model.canonical import dumps
from cas.model.history import History
from cas.model.model_manifest import ModelManifest
from cas.model.snapshot import Snapshot
from cas.model.tree import Tree
from cas.objectid import ObjectId, hash_bytes
from cas.ops.models import import_model, model_versions
from cas.ops.snapshot import take_snapshot
from cas.storage.store import Store

from .conftest import REPO

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
MODEL = _validator("model")


def _example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def _errors(validator: Draft202012Validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


# -- (a) the examples ------------------------------------------------------------------


@pytest.mark.parametrize("name, validator", [
    ("tree.json", TREE), ("tree-non-utf8.json", TREE), ("snapshot.json", SNAPSHOT),
    ("model.json", MODEL), ("model-snapshot.json", SNAPSHOT)])
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


def test_model_example_is_the_stored_manifest_its_snapshot_names():
    model, snap = _example("model.json"), _example("model-snapshot.json")
    data = dumps(model)
    assert hash_bytes(data).hex == snap["model"]
    assert snap["branch"] == "models/" + model["name"]
    manifest = ModelManifest.from_json(data, hash_bytes(data))
    # Reading it back and writing it again gives the same bytes: the summary is
    # what cas derives from the rest, and config floats stay strings.
    assert manifest.to_json() == data
    assert model["config"]["rms_norm_eps"] == "1e-05"
    snap_bytes = dumps(snap)
    assert Snapshot.from_json(snap_bytes, hash_bytes(snap_bytes)).model.hex == snap["model"]


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


@pytest.mark.plain_only
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
                               "mtime_ns": OLD_NS, "name": "link", "target": "sub/deep/b.txt",
                               "uid": os.getuid(), "gid": os.getgid(),
                               **({"user": pwd.getpwuid(os.getuid()).pw_name}),
                               **({"group": grp.getgrgid(os.getgid()).gr_name})}
    assert "target_b64" in by_name["link-latin1"]
    assert by_name["dangling"]["target"] == "does/not/exist"


# -- every manifest of real model imports ------------------------------------------------


@pytest.fixture(scope="module")
def imported_models(tmp_path_factory):
    """A store holding two versions of one model (bfloat16, then 4-bit) and a
    second model imported cut at tensors from a Hugging Face cache layout."""
    pytest.importorskip("mlx.core")
    sys.path.insert(0, str(REPO / "tools"))
    import tiny_model

    base = tmp_path_factory.mktemp("models")
    plain, quantized = base / "tiny", base / "tiny-4bit"
    tiny_model.save(*tiny_model.build(), str(plain))
    tiny_model.save(*tiny_model.build(bits=4), str(quantized))
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = base / "hub" / "models--mlx-community--tiny-4bit"
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    for f in sorted(quantized.iterdir()):
        blob = repo / "blobs" / f"blob-{f.name}"
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    store = Store.init(str(base / "store"))
    history = History(store)
    import_model(history, str(plain), "tiny")
    import_model(history, str(quantized), "tiny", message="4-bit")
    import_model(history, str(repo), chunked=True)
    yield store, model_versions(history, "tiny") + model_versions(history, "tiny-4bit")
    store.close()


def test_every_manifest_of_a_model_import_validates(imported_models):
    store, versions = imported_models
    assert [v.label for v in versions] == ["tiny@2", "tiny@1", "tiny-4bit@1"]
    docs = {}
    for v in versions:
        snap_bytes = store.read_object(v.snapshot.oid)
        snap = json.loads(snap_bytes)
        assert _errors(SNAPSHOT, snap) == [], v.label
        assert snap["branch"] == "models/" + v.name
        data = store.read_object(v.snapshot.model)
        doc = json.loads(data)
        assert _errors(MODEL, doc) == [], v.label
        assert dumps(doc) == data                      # stored canonical
        assert hash_bytes(data).hex == snap["model"]
        assert ModelManifest.from_json(data, v.snapshot.model).to_json() == data
        docs[v.label] = doc
    assert json.loads(store.read_object(versions[0].snapshot.oid))["parents"] == \
        [versions[1].snapshot.oid.hex]
    # The cases the schema tells apart really were validated.
    assert docs["tiny@1"]["summary"]["quantization"] is None
    assert docs["tiny@2"]["summary"]["quantization"] == {"bits": 4, "group_size": 64}
    assert {t["dtype"] for t in docs["tiny@2"]["tensors"]} >= {"U32", "BF16"}
    assert docs["tiny@1"]["source"]["kind"] == "directory"
    assert docs["tiny-4bit@1"]["source"]["kind"] == "hf-cache"
    assert docs["tiny-4bit@1"]["source"]["repo"] == "mlx-community/tiny-4bit"
    assert isinstance(docs["tiny@1"]["config"]["rms_norm_eps"], str)


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
    "version 3": {**_tree_doc(), "version": 3},
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
    "bad model id": _snap_doc(model="ab" * 31),
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

@pytest.mark.plain_only
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
    from cas.storage.config import StoreConfig
    # The schema describes JSON chunk lists: format 1 stores write them.
    with Store.init(str(tmp_path / "store"), StoreConfig(version=1)) as store:
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


# -- model manifests ----------------------------------------------------------------------


def _model_doc(*edits) -> dict:
    """The example model manifest with ``edits`` applied: (path of keys, value or
    ``None`` to delete)."""
    doc = _example("model.json")
    for keys, value in edits:
        *parents, last = keys
        target = doc
        for k in parents:
            target = target[k]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return doc


WEIGHTS = 1    # files: config.json, model.safetensors, tokenizer_config.json
FIRST = _example("model.json")["tensors"][0]

BROKEN_MODELS = {
    "not a model": _model_doc((["type"], "snapshot")),
    "version 2": _model_doc((["version"], 2)),
    "no files": _model_doc((["files"], None)),
    "bad file id": _model_doc((["files", 0, "id"], "AB" * 32)),
    "negative size": _model_doc((["files", 0, "size"], -1)),
    "absolute path": _model_doc((["files", 0, "path"], "/etc/passwd")),
    "path with ..": _model_doc((["files", 0, "path"], "a/../config.json")),
    "path with empty component": _model_doc((["files", 0, "path"], "a//config.json")),
    "unknown dtype": _model_doc((["tensors", 0, "dtype"], "F12")),
    "shape of strings": _model_doc((["tensors", 0, "shape"], ["512", "128"])),
    "one offset": _model_doc((["tensors", 0, "offsets"], FIRST["offsets"][:1])),
    "config a list": _model_doc((["config"], [])),
    "name not a string": _model_doc((["name"], 7)),
}

SCHEMA_ONLY_MODELS = {
    "extra key": _model_doc((["extra"], 1)),
    "no summary": _model_doc((["summary"], None)),
    "float in config": _model_doc((["config", "rms_norm_eps"], 1e-05)),
    "tensor without blake3": _model_doc((["tensors", 0, "blake3"], None)),
    "short blake3": _model_doc((["tensors", 0, "blake3"], "ab" * 16)),
    "unknown source kind": _model_doc((["source", "kind"], "git")),
    "revision on a directory": _model_doc((["source", "revision"], "main")),
    "unknown framework": _model_doc((["summary", "framework"], "ONNX")),
    "name with /": _model_doc((["name"], "org/model")),
}

# Agreement between fields: only the reader can check these.
READER_ONLY_MODELS = {
    "tensor in an unlisted file": _model_doc((["tensors", 0, "file"], "other.safetensors")),
    "tensor past the end of its file": _model_doc((["files", WEIGHTS, "size"], 100)),
    "shape disagrees with bytes": _model_doc((["tensors", 0, "shape"],
                                              [FIRST["shape"][0] + 1, *FIRST["shape"][1:]])),
    "offsets reversed": _model_doc((["tensors", 0, "offsets"], FIRST["offsets"][::-1])),
}


def test_model_cases_edit_what_they_mean_to():
    doc = _example("model.json")
    assert doc["files"][WEIGHTS]["path"] == FIRST["file"] == "model.safetensors"
    assert FIRST["offsets"][0] < FIRST["offsets"][1] and len(FIRST["shape"]) >= 1


@pytest.mark.parametrize("case", sorted(BROKEN_MODELS) + sorted(SCHEMA_ONLY_MODELS))
def test_schema_rejects_broken_model(case):
    doc = BROKEN_MODELS.get(case) or SCHEMA_ONLY_MODELS[case]
    assert _errors(MODEL, doc), f"schema accepted: {case}"


@pytest.mark.parametrize("case", sorted(BROKEN_MODELS) + sorted(READER_ONLY_MODELS))
def test_reader_rejects_broken_model(case):
    doc = BROKEN_MODELS.get(case) or READER_ONLY_MODELS[case]
    with pytest.raises(ManifestInvalid):
        ModelManifest.from_json(dumps(doc), NO_ID)


@pytest.mark.parametrize("case", sorted(READER_ONLY_MODELS))
def test_schema_cannot_express_what_only_the_reader_checks(case):
    assert _errors(MODEL, READER_ONLY_MODELS[case]) == []
