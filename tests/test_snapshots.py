"""Snapshots, history commands, and the stat cache."""

import json
import os
import time

import pytest

from cas.model.history import History
from cas.storage.store import Store

from .conftest import write


@pytest.fixture
def tree(tmp_path, cas):
    root = tmp_path / "tree"
    write(root / "a.txt", b"alpha\n")
    write(root / "sub" / "b.txt", b"beta\n")
    write(root / "sub" / "deep" / "c.bin", os.urandom(5000))
    (root / "empty").mkdir()
    assert cas("init", str(root)).code == 0
    return root


def snap(cas, root, *args):
    r = cas("snapshot", *args, cwd=root)
    assert r.code == 0, r.err
    return r.text.strip()


def age(path, seconds=10):
    """Make a file look old enough for the stat cache to trust it."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def age_tree(root):
    for dirpath, dirs, files in os.walk(root):
        if ".cas" in dirs:
            dirs.remove(".cas")
        for f in files:
            age(os.path.join(dirpath, f))


def test_a_second_snapshot_of_an_unchanged_tree_records_nothing(tree, cas):
    first = snap(cas, tree, "-m", "one")
    r = cas("snapshot", "-m", "two", cwd=tree)
    assert r.code == 0 and r.text == "" and "nothing changed" in r.err
    forced = snap(cas, tree, "--allow-empty", "-m", "three")
    assert forced != first
    log = json.loads(cas("log", "--json", cwd=tree).out)
    assert [s["message"] for s in log] == ["three", "one"]
    assert log[0]["parents"] == [first]


def test_only_files_whose_stat_changed_are_read_again(tree, cas):
    age_tree(tree)
    first = json.loads(cas("snapshot", "--json", cwd=tree).out)
    assert first["read_files"] == 3
    write(tree / "a.txt", b"alpha two\n")
    age(tree / "a.txt")
    second = json.loads(cas("snapshot", "--json", cwd=tree).out)
    assert second["created"] and second["read_files"] == 1
    assert second["stats"]["new_objects"] == 2  # the file and the root tree


def test_unchanged_directories_keep_their_tree_id(tree, cas):
    snap(cas, tree)
    write(tree / "a.txt", b"changed\n")
    snap(cas, tree)
    with Store.open(str(tree / ".cas")) as s:
        h = History(s)
        new, old = h.resolve("HEAD"), h.resolve("HEAD~1")
        assert new.tree != old.tree
        sub = lambda snapshot: h.entry_at(snapshot.tree, b"sub").oid  # noqa: E731
        assert sub(new) == sub(old)


def test_empty_dirs_symlinks_and_odd_names_round_trip(tree, cas, tmp_path):
    os.symlink("sub/b.txt", tree / "link")
    os.symlink("/nonexistent/target", tree / "dangling")
    name = b"\xff\xfename.txt"
    with open(os.path.join(os.fsencode(tree), name), "wb") as f:
        f.write(b"odd")
    os.chmod(tree / "a.txt", 0o755)
    snap(cas, tree)
    out = tmp_path / "out"
    r = cas("restore", "HEAD", "--to", str(out), cwd=tree)
    assert r.code == 0, r.err
    assert (out / "empty").is_dir() and not any((out / "empty").iterdir())
    assert os.readlink(out / "link") == "sub/b.txt"
    assert os.readlink(out / "dangling") == "/nonexistent/target"
    assert open(os.path.join(os.fsencode(out), name), "rb").read() == b"odd"
    assert (out / "a.txt").stat().st_mode & 0o777 == 0o755
    assert (out / "sub" / "deep" / "c.bin").read_bytes() == (tree / "sub" / "deep" / "c.bin").read_bytes()


def test_casignore_and_the_store_itself_are_left_out(tree, cas):
    write(tree / ".casignore", b"*.tmp\nbuild/\n")
    write(tree / "x.tmp", b"scratch")
    write(tree / "build" / "out.o", b"obj")
    snap(cas, tree)
    names = [line.split("  ")[-1] for line in cas("ls", "-r", "HEAD", cwd=tree).text.splitlines()]
    assert "x.tmp" not in names and "build/" not in names and ".cas/" not in names
    assert ".casignore" in names and "sub/deep/c.bin" in names


def test_status_and_diff_against_the_working_tree(tree, cas):
    snap(cas, tree)
    assert "nothing changed" in cas("status", cwd=tree).text
    write(tree / "a.txt", b"alpha 2\n")
    os.unlink(tree / "sub" / "b.txt")
    write(tree / "new.txt", b"new")
    os.rmdir(tree / "empty")
    status = cas("status", cwd=tree).text.splitlines()
    assert "M  a.txt  (6 -> 8)" in status
    assert "D  sub/b.txt  (5)" in status
    assert "A  new.txt  (3)" in status
    assert any(line.startswith("D  empty/") for line in status)
    snap(cas, tree)
    d = cas("diff", "HEAD~1", "HEAD", cwd=tree).text.splitlines()
    assert "M  a.txt  (6 -> 8)" in d and "A  new.txt  (3)" in d
    only = cas("diff", "HEAD~1", "HEAD", "a.txt", cwd=tree).text.splitlines()
    assert only == ["M  a.txt  (6 -> 8)"]


def test_log_of_a_path_shows_only_the_snapshots_where_it_changed(tree, cas):
    s1 = snap(cas, tree, "-m", "1")
    write(tree / "sub" / "b.txt", b"beta 2\n")
    s2 = snap(cas, tree, "-m", "2")
    write(tree / "a.txt", b"alpha 3\n")
    s3 = snap(cas, tree, "-m", "3")
    ids = lambda *a: [s["id"] for s in json.loads(cas("log", "--json", *a, cwd=tree).out)]  # noqa: E731
    assert ids() == [s3, s2, s1]
    assert ids("sub/b.txt") == [s2, s1]
    assert ids("HEAD", "a.txt") == [s3, s1]
    assert ids(s2[:10]) == [s2, s1]


def test_show_ls_cat_and_tags(tree, cas):
    s1 = snap(cas, tree, "-m", "first")
    write(tree / "a.txt", b"v2\n")
    snap(cas, tree, "-m", "second")
    assert cas("tag", "before", s1[:8], cwd=tree).code == 0
    assert cas("cat", "before:a.txt", cwd=tree).out == b"alpha\n"
    assert cas("cat", "HEAD:a.txt", cwd=tree).out == b"v2\n"
    shown = json.loads(cas("show", "--json", "before", cwd=tree).out)
    assert shown["id"] == s1 and shown["message"] == "first" and shown["stats"]["files"] == 3
    assert "sub/deep/c.bin" in cas("ls", "-r", "before:sub", cwd=tree).text
    r = cas("cat", "HEAD:nope.txt", cwd=tree)
    assert r.code == 2 and "not in snapshot" in r.err
    r = cas("show", "no-such-ref", cwd=tree)
    assert r.code == 2 and "names no snapshot" in r.err
    assert cas("tag", "-d", "before", cwd=tree).code == 0
    r = cas("tag", "-d", "before", cwd=tree)
    assert r.code == 2 and "'before' names no snapshot" in r.err
    r = cas("branch", "-d", "nope", cwd=tree)
    assert r.code == 2 and "'nope' names no snapshot" in r.err


def test_one_store_holds_several_sources_on_their_own_branches(tmp_path, cas):
    store = tmp_path / "ssd" / "store"
    assert cas("--store", str(store), "init").code == 0
    write(tmp_path / "data" / "x.db", b"x" * 1000)
    write(tmp_path / "models" / "m.safetensors", b"m" * 1000 + b"x" * 1000)
    for src in ("data", "models"):
        assert cas("--store", str(store), "snapshot", str(tmp_path / src)).code == 0
    branches = {b["branch"]: b for b in json.loads(cas("--store", str(store), "branch", "--json").out)}
    assert set(branches) == {"data", "models"}
    assert branches["models"]["source"] == str(tmp_path / "models")
    write(tmp_path / "models" / "m2.bin", b"more")
    r = json.loads(cas("--store", str(store), "snapshot", "--json", str(tmp_path / "models")).out)
    assert r["branch"] == "models" and r["created"]


def test_a_file_that_cannot_be_read_is_reported_and_the_rest_snapshotted(tree, cas, tmp_path):
    os.mkfifo(tree / "pipe")
    r = cas("snapshot", cwd=tree)
    assert r.code == 0 and "pipe: is a special file; skipped" in r.err


@pytest.mark.plain_only
def test_snapshot_manifest_copies_are_plain_json_files(tree, cas):
    sid = snap(cas, tree, "-m", "hello")
    doc = json.loads((tree / ".cas" / "snapshots" / f"{sid}.json").read_text())
    assert doc["message"] == "hello" and doc["type"] == "snapshot"
    assert (tree / ".cas" / "refs" / "heads" / "main").read_text().strip() == sid
    assert (tree / ".cas" / "HEAD").read_text() == "ref: refs/heads/main\n"


def test_an_index_rebuild_keeps_history(tree, cas):
    s1 = snap(cas, tree)
    write(tree / "a.txt", b"v2")
    s2 = snap(cas, tree)
    cas("tag", "t1", s1, cwd=tree)
    assert cas("index", "rebuild", cwd=tree).code == 0
    assert [s["id"] for s in json.loads(cas("log", "--json", cwd=tree).out)] == [s2, s1]
    assert cas("cat", "t1:a.txt", cwd=tree).out == b"alpha\n"
    assert cas("verify", "--full", cwd=tree).code == 0


def test_head_follows_the_first_branch_of_a_store_elsewhere(tmp_path, cas):
    store = tmp_path / "store"
    cas("--store", str(store), "init")
    write(tmp_path / "models" / "m.bin", b"weights")
    sid = cas("--store", str(store), "snapshot", str(tmp_path / "models")).text.strip()
    log = json.loads(cas("--store", str(store), "log", "--json").out)
    assert [s["id"] for s in log] == [sid] and log[0]["branch"] == "models"
    out = tmp_path / "new" / "out"
    assert cas("--store", str(store), "restore", "HEAD", "--to", str(out)).code == 0
    assert (out / "m.bin").read_bytes() == b"weights"
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_backup_snapshots_hold_consistent_databases(tree, cas, tmp_path, journal):
    import sqlite3
    import subprocess
    import sys

    from .test_watch import WRITER
    db = tree / "state.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), journal, "3"],
                              stdout=subprocess.PIPE)
    snaps = []
    try:
        while writer.poll() is None:
            if db.exists():
                snaps.append(snap(cas, tree, "--sqlite-backup", "--allow-empty"))
            time.sleep(0.1)
    finally:
        assert writer.wait(timeout=60) == 0
    snaps.append(snap(cas, tree, "--sqlite-backup", "--allow-empty"))
    assert len(snaps) >= 3
    counts = []
    for i, snap_id in enumerate(snaps):
        listing = cas("ls", "--json", f"{snap_id}:", cwd=tree)
        names = [e["name"] for e in json.loads(listing.out)]
        assert "state.db" in names
        assert not any(n.endswith(("-wal", "-shm", "-journal")) for n in names)
        copy = tmp_path / f"copy-{i}.db"
        assert cas("cat", f"{snap_id}:state.db", "-o", str(copy), cwd=tree).code == 0
        conn = sqlite3.connect(copy)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts.append(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
        conn.close()
    # The last snapshot, taken after the writer finished, holds its last commit.
    live = sqlite3.connect(db)
    assert counts[-1] == live.execute("SELECT COUNT(*) FROM t").fetchone()[0] > 0
    live.close()
