"""Live SQLite databases in plain commands: status, diff and snapshot see a
database the way the watcher records it (a consistent copy, no side files),
also after the index was rebuilt. Real sqlite3 connections, real processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cas.model.history import History
from cas.model.tree import FILE
from cas.storage.store import Store

from .conftest import cas_process


def _cas(tree: Path, *args: str) -> subprocess.CompletedProcess:
    r = cas_process(*args, cwd=tree)
    assert b"Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture
def live(tmp_path):
    """A tree with a WAL database held open by a long-lived writer (its
    commits sit in state.db-wal), a rollback-journal database, and a text
    file beside a text file named like its WAL."""
    tree = tmp_path / "tree"
    tree.mkdir()
    assert cas_process("init", cwd=tree).returncode == 0
    writer = sqlite3.connect(tree / "state.db", isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # commits stay in the WAL, as under load
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    for i in range(200):
        writer.execute("INSERT INTO t (v) VALUES (?)", (f"row {i} " + "x" * 200,))
    plain = sqlite3.connect(tree / "plain.db", isolation_level=None)
    plain.execute("CREATE TABLE k (v TEXT)")
    plain.execute("INSERT INTO k VALUES ('kept')")
    plain.close()
    (tree / "diary").write_text("not a database\n")
    (tree / "diary-wal").write_text("a text file, whatever its name\n")
    assert (tree / "state.db-wal").stat().st_size > 0 and (tree / "state.db-shm").exists()
    yield tree, writer
    writer.close()


def _head_files(tree: Path) -> dict[str, bytes]:
    with Store.open(str(tree / ".cas")) as store:
        history = History(store)
        head = history.branch_head("main")
        return {p.decode(): store.read_object(e.oid) for p, e in history.walk(head.tree)
                if e.kind == FILE}


def _rows(data: bytes, tmp_path: Path) -> int:
    copy = tmp_path / f"copy-{os.urandom(4).hex()}.db"
    copy.write_bytes(data)
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]
    finally:
        conn.close()


def test_status_lists_no_side_file_of_a_live_database_and_no_change_that_is_not_one(live):
    tree, writer = live
    assert _cas(tree, "snapshot", "--sqlite-backup").returncode == 0
    r = _cas(tree, "status")
    assert r.returncode == 0 and b"nothing changed" in r.stdout, r.stdout
    writer.execute("INSERT INTO t (v) VALUES ('one more')")
    (tree / "diary-wal").write_text("edited\n")
    changes = json.loads(_cas(tree, "status", "--json").stdout)["changes"]
    assert sorted((c["change"], c["path"]) for c in changes) == [
        ("modified", "diary-wal"), ("modified", "state.db")]


def test_diff_against_the_working_tree_compares_the_captured_database(live):
    tree, writer = live
    assert _cas(tree, "snapshot", "--sqlite-backup").returncode == 0
    assert _cas(tree, "diff", "HEAD").stdout == b""
    writer.execute("DELETE FROM t WHERE id < 10")
    lines = _cas(tree, "diff", "HEAD").stdout.decode().splitlines()
    assert [line.split()[:2] for line in lines] == [["M", "state.db"]]


def test_an_index_rebuild_makes_no_captured_database_look_changed(live, tmp_path):
    tree, _ = live
    first = json.loads(_cas(tree, "snapshot", "--sqlite-backup", "--json").stdout)
    assert _rows(_head_files(tree)["state.db"], tmp_path) == 200
    assert _cas(tree, "index", "rebuild").returncode == 0
    r = _cas(tree, "status")
    assert b"nothing changed" in r.stdout, r.stdout
    again = json.loads(_cas(tree, "snapshot", "--sqlite-backup", "--json").stdout)
    assert not again["created"] and again["id"] == first["id"]
    forced = json.loads(_cas(tree, "snapshot", "--sqlite-backup", "--allow-empty",
                             "--json").stdout)
    assert forced["stats"]["new_bytes"] == 0  # nothing stored again


def test_snapshot_takes_live_databases_as_the_watcher_does_by_default(live, tmp_path):
    tree, writer = live
    r = _cas(tree, "snapshot")
    assert r.returncode == 0, r.stderr
    files = _head_files(tree)
    assert "state.db-wal" not in files and "state.db-shm" not in files
    assert files["diary-wal"] == b"a text file, whatever its name\n"
    assert _rows(files["state.db"], tmp_path) == 200  # the WAL's commits are in the copy
    r = _cas(tree, "snapshot", "--no-sqlite-backup")
    assert r.returncode == 0, r.stderr
    assert "state.db-wal" in _head_files(tree)  # byte for byte, when asked


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a read-only bind mount")
def test_status_of_a_read_only_store_still_compares_captured_databases(live, tmp_path):
    tree, _ = live
    assert _cas(tree, "snapshot", "--sqlite-backup").returncode == 0
    ro = tmp_path / "ro-store"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(tree / ".cas"), str(ro)]).returncode != 0:
        pytest.skip("cannot bind mount here")
    try:
        assert subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)]).returncode == 0
        r = _cas(tree, "--store", str(ro), "status")
        assert r.returncode == 0 and b"nothing changed" in r.stdout, (r.stdout, r.stderr)
    finally:
        subprocess.run(["umount", "-l", str(ro)])


_LEAVE_WAL = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("INSERT INTO t (v) VALUES (?)", (sys.argv[2],))
os._exit(0)  # no close, no checkpoint: the commit stays in the -wal file
"""


def test_checkout_over_a_database_removes_its_leftover_wal(tmp_path):
    """A -wal file left beside a database that checkout replaces would be
    applied by SQLite to the new file: the rows of another version come
    back (or the file is corrupt). Checkout removes it; an ordinary file
    named like a side file beside a text file stays."""
    tree = tmp_path / "tree"
    tree.mkdir()
    assert cas_process("init", cwd=tree).returncode == 0
    db = tree / "state.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    con.execute("INSERT INTO t (v) VALUES ('first')")
    con.commit()
    con.close()
    (tree / "notes").write_text("n")
    (tree / "notes-wal").write_text("not a log")
    first = json.loads(_cas(tree, "snapshot", "--json").stdout)["id"]
    subprocess.run([os.sys.executable, "-c", _LEAVE_WAL, str(db), "second"], check=True)
    assert (tree / "state.db-wal").stat().st_size > 0
    assert _cas(tree, "snapshot").returncode == 0  # the copy holds both rows
    r = _cas(tree, "checkout", first)
    assert r.returncode == 0, r.stderr
    assert not (tree / "state.db-wal").exists()
    con = sqlite3.connect(db)
    assert [v for (v,) in con.execute("SELECT v FROM t ORDER BY id")] == ["first"]
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    assert (tree / "notes-wal").read_text() == "not a log"
