"""Regenerate manifests/examples/ from a real snapshot and a real model import.

    .venv/bin/python manifests/make_examples.py [NAME.json ...]

Builds a throwaway store and source directory under a temp directory, takes
one snapshot with the library, and writes the manifests it stored: the root
tree (examples/tree.json), the subtree holding a name that is not UTF-8
(examples/tree-non-utf8.json) and the snapshot (examples/snapshot.json).
Then it builds the tiny MLX model of tools/tiny_model.py (needs mlx),
imports it as model ``tiny-lm`` and writes its model manifest
(examples/model.json) and the snapshot recording that model version
(examples/model-snapshot.json).

With names, only those examples are written: the snapshots record the time,
host and temp directory they were made in, so regenerating one changes its
bytes even when nothing else did.

The store keeps every manifest as canonical JSON (one line, sorted keys, no
spaces); the example files are the same documents pretty-printed for reading.
``json.loads`` then ``cas.model.canonical.dumps`` gives back the stored bytes,
and their BLAKE3-256 is the id the parent manifest names (the tests check it).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from cas.model.history import History  # noqa: E402
from cas.ops.models import import_model  # noqa: E402
from cas.ops.snapshot import take_snapshot  # noqa: E402
from cas.storage.store import Store  # noqa: E402

# 2024-05-01T12:00:00Z: fixed times keep the example readable, and files
# older than the racy window go into the stat cache as in real use.
MTIME_NS = 1_714_564_800_000_000_000
SNAPSHOT_EXAMPLES = ("snapshot.json", "tree.json", "tree-non-utf8.json")
MODEL_EXAMPLES = ("model.json", "model-snapshot.json")


def build_source(root: bytes) -> None:
    os.makedirs(root)
    with open(os.path.join(root, b"hello.txt"), "wb") as f:
        f.write(b"hello, world\n")
    run = os.path.join(root, b"run.sh")
    with open(run, "wb") as f:
        f.write(b"#!/bin/sh\necho hello\n")
    os.chmod(run, 0o755)
    os.makedirs(os.path.join(root, b"empty"))
    os.symlink(b"hello.txt", os.path.join(root, b"link"))
    latin = os.path.join(root, b"latin1")
    os.makedirs(latin)
    with open(os.path.join(latin, "café.txt".encode()), "wb") as f:   # UTF-8 name
        f.write(b"utf-8\n")
    with open(os.path.join(latin, b"caf\xe9.txt"), "wb") as f:        # Latin-1 name
        f.write(b"latin-1\n")
    os.symlink(b"caf\xe9.txt", os.path.join(latin, b"link-b64"))       # Latin-1 target
    # Times last, deepest first, so creating children does not bump them.
    for dirpath, dirnames, filenames in sorted(os.walk(root), key=lambda w: -len(w[0])):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
    os.utime(root, ns=(MTIME_NS, MTIME_NS))


def pretty(data: bytes) -> str:
    return json.dumps(json.loads(data), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build_model(root: str) -> None:
    """The tiny MLX model of tools/tiny_model.py: config.json, model.safetensors
    (bfloat16, 19 tensors) and tokenizer_config.json."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
    import tiny_model

    model, config = tiny_model.build()
    tiny_model.save(model, config, root)
    for name in os.listdir(root):
        os.utime(os.path.join(root, name), ns=(MTIME_NS, MTIME_NS))
    os.utime(root, ns=(MTIME_NS, MTIME_NS))


def snapshot_examples(tmp: str) -> dict[str, bytes]:
    source = os.path.join(tmp, "project")
    build_source(os.fsencode(source))
    with Store.init(os.path.join(source, ".cas")) as store:
        history = History(store)
        snap = take_snapshot(history, source, "main", "example").snapshot
        root_bytes = store.read_object(snap.tree)
        latin = history.load_tree(snap.tree).get(b"latin1")
        files = {
            "snapshot.json": store.read_object(snap.oid),
            "tree.json": root_bytes,
            "tree-non-utf8.json": store.read_object(latin.oid),
        }
        with open(os.path.join(store.path, "snapshots", snap.oid.hex + ".json"), "rb") as f:
            assert f.read() == files["snapshot.json"]
    print(f"snapshot {snap.oid.hex}\ntree     {snap.tree.hex}")
    return files


def model_examples(tmp: str) -> dict[str, bytes]:
    source = os.path.join(tmp, "tiny-lm")
    build_model(source)
    with Store.init(os.path.join(tmp, "store")) as store:
        history = History(store)
        snap = import_model(history, source, "tiny-lm", message="example").version.snapshot
        files = {
            "model.json": store.read_object(snap.model),
            "model-snapshot.json": store.read_object(snap.oid),
        }
        with open(os.path.join(store.path, "snapshots", snap.oid.hex + ".json"), "rb") as f:
            assert f.read() == files["model-snapshot.json"]
    print(f"model snapshot {snap.oid.hex}\nmodel manifest {snap.model.hex}")
    return files


def main(argv: list[str]) -> None:
    wanted = argv or list(SNAPSHOT_EXAMPLES + MODEL_EXAMPLES)
    unknown = [n for n in wanted if n not in SNAPSHOT_EXAMPLES + MODEL_EXAMPLES]
    if unknown:
        sys.exit(f"no such example: {', '.join(unknown)}")
    out = os.path.join(HERE, "examples")
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="cas-example-")
    try:
        files: dict[str, bytes] = {}
        if any(n in SNAPSHOT_EXAMPLES for n in wanted):
            files.update(snapshot_examples(tmp))
        if any(n in MODEL_EXAMPLES for n in wanted):
            files.update(model_examples(tmp))
        for name in wanted:
            with open(os.path.join(out, name), "w", encoding="utf-8") as f:
                f.write(pretty(files[name]))
            print(f"{name}: {len(files[name])} canonical bytes")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main(sys.argv[1:])
