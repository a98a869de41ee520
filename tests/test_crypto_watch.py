"""A watcher on an encrypted store: a real ``cas watch`` records its
snapshots in the audit trail, and its watch files name no path (a keyed
hash, not the BLAKE3 anyone can compute) and hold only sealed state. A
SQLite database captured into an encrypted store is copied in memory:
nothing is created in the store's tmp/."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from watchdog.events import FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

from cas.objectid import hash_bytes
from cas.ops.watch import state_paths

from .test_watch import Watch, wait_for

CAS = [sys.executable, "-m", "cas.cli"]
SECRET_DIR = "secret-project-dir"
SECRET_FILE = "confidential-plans.txt"
MARK = b"CONTENT-MARKER-91c2"


def cas(cwd, *args, check=True):
    proc = subprocess.run([*CAS, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "CAS_PASSWORD": "pw"})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def sealed_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("CAS_PASSWORD", "pw")   # the watcher subprocesses' passphrase
    tree = tmp_path / SECRET_DIR
    tree.mkdir()
    (tree / "notes.txt").write_text("first\n")
    cas(tree, "init", "--encrypt")
    return tree


def _files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def test_a_watcher_of_an_encrypted_store_records_and_hides_its_tree(sealed_tree):
    w = Watch(sealed_tree)
    try:
        wait_for(lambda: w.events("snapshot"), what="the first snapshot")
        (sealed_tree / SECRET_FILE).write_bytes(MARK + b"\n")
        wait_for(lambda: len(w.events("snapshot")) >= 2, what="the second snapshot")
        status = json.loads(cas(sealed_tree, "watch", "--status", "--json").stdout)
        assert status["running"] and status["pid"] == w.proc.pid
        assert status["last_snapshot"]["id"] == w.events("snapshot")[-1]["id"]
        # "cas status --watch" reads the same sealed state
        shown = json.loads(cas(sealed_tree, "status", "--watch", "--json").stdout)
        assert shown["running"] and shown["pid"] == w.proc.pid
    finally:
        assert w.stop() == 0, w.stderr
    snapshot_ids = [e["id"] for e in w.events("snapshot")]
    watched = [r for r in json.loads(cas(sealed_tree, "audit", "log", "--json").stdout)
               if r["command"][:2] == ["cas", "watch"]]
    assert [r["snapshots_created"] for r in watched] == [[i] for i in snapshot_ids]
    assert all(r["paths"] == [str(sealed_tree)] and r["refs"] == ["main"] for r in watched)
    assert cas(sealed_tree, "audit", "verify").returncode == 0

    store = sealed_tree / ".cas"
    plain_key = hash_bytes(os.fsencode(str(sealed_tree))).hex[:16]
    watch_dir = store / "watch"
    names = sorted(p.name for p in watch_dir.iterdir())
    assert len(names) == 2 and not any(n.startswith(plain_key) for n in names)
    words = [SECRET_DIR.encode(), SECRET_FILE.encode(), str(sealed_tree).encode(), b"snapshot",
             b"watch", b'"pid"', b"main", plain_key.encode(), MARK,
             *(i.encode() for i in snapshot_ids)]
    for path in [*_files_under(watch_dir), store / "audit" / "log"]:
        data = path.read_bytes()
        for word in words:
            if path.parent.name == "audit" and word in (b"main", b'"pid"'):
                continue   # base64 may hold 4 letters by chance; the audit test checks fields
            assert word not in data, (path, word)


def test_plain_watch_files_are_as_they_were(tree):
    w = Watch(tree)
    try:
        wait_for(lambda: w.events("snapshot"), what="the first snapshot")
    finally:
        assert w.stop() == 0
    lock, state = state_paths(str(tree / ".cas"), str(tree))
    assert Path(lock).name == hash_bytes(os.fsencode(str(tree))).hex[:16] + ".lock"
    assert json.loads(Path(state).read_bytes())["snapshots"] >= 1


class _Created(FileSystemEventHandler):
    def __init__(self):
        self.names: list[str] = []
        self.lock = threading.Lock()

    def on_created(self, event):
        with self.lock:
            self.names.append(os.path.basename(event.src_path))


def _make_db(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("pragma journal_mode=wal")
    db.execute("create table t(x)")
    db.execute("insert into t values (?)", (MARK.decode() * 200,))
    db.commit()
    db.close()


def _copies_seen(tree: Path, *commands: tuple[str, ...]) -> list[str]:
    """The SQLite copies created in the store's tmp/ while the commands ran."""
    seen = _Created()
    observer = InotifyObserver()
    observer.schedule(seen, str(tree / ".cas" / "tmp"), recursive=True)
    observer.start()
    try:
        for args in commands:
            cas(tree, *args)
    finally:
        observer.stop()
        observer.join()
    return [n for n in seen.names if n.startswith("sqlite-")]


@pytest.mark.parametrize("encrypted", [False, True])
def test_sqlite_copies_of_an_encrypted_store_never_touch_its_disk(tmp_path, encrypted):
    tree = tmp_path / "tree"
    tree.mkdir()
    cas(tree, "init", *(["--encrypt"] if encrypted else []))
    _make_db(tree / "memory.db")
    copies = _copies_seen(tree, ("snapshot", "--sqlite-backup"), ("status",))
    if not encrypted:
        assert copies, "a plain store copies into its tmp/ (the check can see a copy)"
        return
    assert copies == []
    out = tmp_path / "out"
    assert "memory.db" not in cas(tree, "status").stdout   # the copy's id is the one stored
    cas(tree, "restore", "HEAD", "memory.db", "--to", str(out))
    got = sqlite3.connect(out / "memory.db").execute("select x from t").fetchone()[0]
    assert got == MARK.decode() * 200
