"""An encrypted store through a user's everyday commands, then a search of
every byte it holds for anything it was given in the clear.

The issue's "done when": round trips on an encrypted store across the
commands, and a grep of every file of the store (index included) for the
corpus's file names, a content marker and the plain BLAKE3 of every file
(hex and raw), finding nothing. Real CLI in subprocesses, real SQLite, a
real MLX model.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from cas.objectid import hash_path
from tests.conftest import REPO, cas_process

sys.path.insert(0, str(REPO / "tools"))
import tiny_model  # noqa: E402

PASSWORD = "a long passphrase for the e2e store"
ENV = {"CAS_PASSWORD": PASSWORD}
MARKER = "zq-MARKER-47d1c9"
NAMES = ["agent-memory-zq81.db", "events-zq82.jsonl", "inventory-zq83.json",
         "conversation-zq84.txt", "settings-zq85.db"]
BRANCH, TAG, MODEL = "private-branch-zq86", "release-tag-zq87", "secret-model-zq88"


def make_corpus(root: Path) -> None:
    (root / "nested-dir-zq89").mkdir(parents=True)
    db = sqlite3.connect(root / NAMES[0])
    db.execute("create table memory (id integer primary key, text text)")
    db.executemany("insert into memory (text) values (?)", [(f"{MARKER} fact {i} " * 20,) for i in range(400)])
    db.commit()
    db.close()
    with open(root / NAMES[1], "w") as f:
        for i in range(3000):
            f.write(json.dumps({"event": i, "note": MARKER}) + "\n")
    (root / NAMES[2]).write_text(json.dumps({"models": [MARKER]}))
    (root / "nested-dir-zq89" / NAMES[3]).write_text((MARKER + " hello\n") * 50)
    db = sqlite3.connect(root / "nested-dir-zq89" / NAMES[4])
    db.execute("create table s (k text, v text)")
    db.execute("insert into s values (?, ?)", ("theme", MARKER))
    db.commit()
    db.close()
    (root / "big-weights-zq90.bin").write_bytes(MARKER.encode() + os.urandom(10 << 20))


def cas(tree: Path, *args: str, code: int = 0) -> str:
    r = cas_process(*args, cwd=tree, env=ENV, timeout=300)
    assert r.returncode == code, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout.decode()


def needles(tree: Path, extra: list[str]) -> dict[str, bytes]:
    found = {}
    for path in tree.rglob("*"):
        if ".cas" in path.parts or not path.is_file():
            continue
        found[f"name {path.name}"] = path.name.encode()
        oid = hash_path(path)
        found[f"id of {path.name}"] = oid.hex.encode()
        found[f"raw id of {path.name}"] = oid.digest
    for word in [MARKER, BRANCH, TAG, MODEL, "nested-dir-zq89", *extra]:
        found[word] = word.encode()
    return found


def grep_store(store: Path, wanted: dict[str, bytes]) -> list[str]:
    hits = []
    for path in sorted(store.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{what} in {path.relative_to(store)}" for what, b in wanted.items() if b in data]
    return hits


@pytest.mark.slow
def test_an_encrypted_store_round_trips_every_command_and_holds_nothing_in_the_clear(tmp_path):
    tree = tmp_path / "data"
    make_corpus(tree)
    model_dir = tmp_path / "model-src-zq91"
    model, cfg = tiny_model.build({**tiny_model.CONFIG, "vocab_size": 2048, "hidden_size": 256,
                                   "intermediate_size": 512}, dtype="bfloat16", seed=3)
    tiny_model.save(model, cfg, str(model_dir))
    wanted = needles(tree, ["model-src-zq91"])
    wanted.update({f"id of model {p.name}": hash_path(p).hex.encode() for p in model_dir.iterdir()})

    cas(tree, "init", "--encrypt")
    cas(tree, "snapshot", "-m", f"first {MARKER}")
    cas(tree, "tag", TAG)
    cas(tree, "branch", BRANCH)
    with open(tree / NAMES[1], "a") as f:
        f.write(json.dumps({"event": "late", "note": MARKER}) + "\n")
    (tree / "nested-dir-zq89" / NAMES[3]).unlink()
    cas(tree, "snapshot", "-m", "second")
    assert len(cas(tree, "log").splitlines()) == 2
    assert cas(tree, "cat", f"HEAD:{NAMES[2]}").strip() == (tree / NAMES[2]).read_text()
    assert NAMES[1] in cas(tree, "diff", "HEAD~1", "HEAD")
    ls = cas(tree, "ls", "-r", "--b3sum", "HEAD~1")
    assert hash_path(tree / NAMES[0]).hex in ls
    cas(tree, "restore", TAG, "--to", str(tmp_path / "out"))
    assert (tmp_path / "out" / "nested-dir-zq89" / NAMES[3]).read_text().startswith(MARKER)
    assert hash_path(tmp_path / "out" / "big-weights-zq90.bin") == hash_path(tree / "big-weights-zq90.bin")
    cas(tree, "model", "import", str(model_dir), "--name", MODEL)
    cas(tree, "model", "verify", MODEL)
    cas(tree, "model", "export", MODEL, str(tmp_path / "exported"))
    for p in model_dir.iterdir():
        assert hash_path(tmp_path / "exported" / p.name) == hash_path(p)
    cas(tree, "verify", "--full")
    cas(tree, "gc")
    cas(tree, "maintain")
    cas(tree, "index", "rebuild")
    cas(tree, "verify")
    cas(tree, "stats")
    cas(tree, "audit", "verify")
    assert f"snapshot -m first {MARKER}" in cas(tree, "audit", "log")   # unsealed for the key holder
    store = tree / ".cas"
    assert not list((store / "tmp").iterdir())
    hits = grep_store(store, wanted)
    assert not hits, hits[:20]
