"""A live SQLite database whose name is not UTF-8 is captured like any other."""

from __future__ import annotations

import os
import sqlite3

from .conftest import cas_process


def test_a_database_with_a_name_that_is_not_utf8_is_snapshotted_and_restored(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    name = os.fsdecode(b"caf\xe9.db")
    db = sqlite3.connect(os.path.join(tree, name))
    db.execute("CREATE TABLE t (v)")
    db.execute("INSERT INTO t VALUES ('kept')")
    db.commit()
    assert cas_process("init", cwd=tree).returncode == 0
    r = cas_process("snapshot", cwd=tree)
    assert r.returncode == 0, r.stderr
    db.close()
    r = cas_process("restore", "HEAD", "--to", str(tmp_path / "out"), cwd=tree)
    assert r.returncode == 0, r.stderr
    back = sqlite3.connect(os.path.join(tmp_path / "out", name))
    assert back.execute("SELECT v FROM t").fetchall() == [("kept",)]
