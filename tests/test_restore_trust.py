"""Restore, checkout and snapshot against hostile targets, trees and stores.

Owners and set-ID bits, conflicts in the target, a store inside the tree,
the live store named by a snapshot, content only ``cas add`` stored, paths
through a snapshot's links, and trees deeper than Python's stack.
"""

import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from cas.dirfd import remove_at
from cas.model.canonical import dumps
from cas.model.history import History
from cas.model.snapshot import Snapshot
from cas.storage.store import Store

from .conftest import write

ROOT = os.geteuid() == 0
NOBODY = 65534
needs_root = pytest.mark.skipif(not ROOT or shutil.which("setpriv") is None,
                                reason="needs root and setpriv")


def as_nobody(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           sys.executable, "-m", "cas.cli", *args],
                          cwd=cwd, capture_output=True, timeout=120, env={**os.environ, "HOME": "/"})


def record_tree(store: Store, entries: list[dict], branch: str = "main", source: str = "/x") -> Snapshot:
    """Record a snapshot of a hand-written root tree (a crafted store)."""
    history = History(store)
    payload = store.put_bytes(b"payload")
    for e in entries:
        e.setdefault("kind", "file")
        e.setdefault("mode", "0644")
        e.setdefault("mtime_ns", 0)
        if e["kind"] == "file":
            e.setdefault("id", payload.hex)
            e.setdefault("size", 7)
    owners = any(k in e for e in entries for k in ("uid", "gid", "user", "group"))
    tree = store.put_bytes(dumps({"type": "tree", "version": 2 if owners else 1, "entries": entries}))
    parent = history.branch_head(branch)
    snap = Snapshot(tree, (parent.oid,) if parent else (), time.time_ns(), "crafted", branch,
                    "h", "u", source)
    with store.writer() as w:
        return history.record(snap, w)


# -- owners and set-ID bits ---------------------------------------------------

@needs_root
def test_a_users_setuid_file_is_restored_as_that_users_not_roots(tmp_path, cas):
    src = tmp_path / "src"
    tool = write(src / "tool", b"#!/bin/sh\n")
    os.chown(tool, NOBODY, NOBODY)
    tool.chmod(0o4755)
    assert cas("--store", str(tmp_path / "s"), "init").code == 0
    assert cas("--store", str(tmp_path / "s"), "snapshot", str(src)).code == 0
    listing = cas("--store", str(tmp_path / "s"), "ls", "--json", "HEAD")
    assert '"uid": 65534' in listing.text, listing.text
    r = cas("--store", str(tmp_path / "s"), "restore", "HEAD", "--to", str(tmp_path / "out"))
    assert r.code == 0, r.err
    st = os.stat(tmp_path / "out" / "tool")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(st.st_mode) == 0o4755  # setuid, but as nobody: what was recorded


@pytest.fixture
def open_tmp():
    """A directory other users can reach (pytest's own are private to root)."""
    import tempfile
    from pathlib import Path
    path = Path(tempfile.mkdtemp(prefix="cas-trust-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_set_id_bits_are_dropped_when_the_owner_is_not_restored(open_tmp, cas):
    """A crafted mode without an owner, and any restore by a user who cannot chown."""
    tmp_path = open_tmp
    store_path = tmp_path / "s"
    with Store.init(str(store_path)) as store:
        record_tree(store, [{"name": "setgid-tool", "mode": "2755"},
                            {"name": "setuid-tool", "mode": "4755"}])
    r = cas("--store", str(store_path), "restore", "HEAD", "--to", str(tmp_path / "root-out"))
    assert r.code == 0, r.err
    for name in ("setgid-tool", "setuid-tool"):
        st = os.stat(tmp_path / "root-out" / name)
        assert stat.S_IMODE(st.st_mode) == 0o755, name
    out = tmp_path / "user-out"
    out.mkdir()
    os.chown(out, NOBODY, NOBODY)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(store_path)], check=True)
    r = as_nobody("--store", str(store_path), "restore", "HEAD", "--to", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(out / "setuid-tool").st_mode) == 0o755


@needs_root
def test_owners_are_restored_by_name_unless_numeric_owner(tmp_path, cas):
    store_path = tmp_path / "s"
    with Store.init(str(store_path)) as store:
        record_tree(store, [{"name": "f", "uid": 12345, "gid": 12345,
                             "user": "nobody", "group": "nogroup"}])
    assert cas("--store", str(store_path), "restore", "HEAD", "--to", str(tmp_path / "by-name")).code == 0
    st = os.stat(tmp_path / "by-name" / "f")
    assert st.st_uid == NOBODY
    r = cas("--store", str(store_path), "restore", "--numeric-owner", "HEAD",
            "--to", str(tmp_path / "by-id"))
    assert r.code == 0, r.err
    assert os.stat(tmp_path / "by-id" / "f").st_uid == 12345


@pytest.mark.parametrize("owner", [{"uid": -1, "gid": 0}, {"uid": 2**32 - 1, "gid": 0},
                                   {"uid": "0", "gid": 0}, {"user": "root"}, {"uid": 0},
                                   {"uid": [0], "gid": 0},
                                   {"uid": 0, "gid": 0, "user": "a\nb"}])
def test_a_crafted_owner_is_refused(tmp_path, cas, owner):
    """Bad ids or names, and owners in a version 1 tree."""
    store_path = tmp_path / "s"
    with Store.init(str(store_path)) as store:
        record_tree(store, [{"name": "f", **owner}])
    r = cas("--store", str(store_path), "restore", "HEAD", "--to", str(tmp_path / "out"))
    assert r.code == 1 and "Traceback" not in r.err
    assert "invalid" in r.err
    assert not (tmp_path / "out" / "f").exists()


# -- conflicts in the target ----------------------------------------------------

def test_a_restore_reports_each_conflict_and_restores_everything_else(tmp_path, cas):
    src = tmp_path / "src"
    for d in ("a", "b", "c", "d"):
        write(src / d / "inside.txt", d.encode())
    write(src / "z.txt", b"z")
    assert cas("--store", str(tmp_path / "s"), "init").code == 0
    assert cas("--store", str(tmp_path / "s"), "snapshot", str(src)).code == 0
    out = tmp_path / "out"
    write(out / "a", b"a file where the snapshot has a directory")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.joinpath("c").symlink_to(elsewhere)
    r = cas("--store", str(tmp_path / "s"), "restore", "HEAD", "--to", str(out))
    assert r.code == 1
    assert "a: exists and is not a directory" in r.err
    assert "c: is a symbolic link; not followed" in r.err
    assert (out / "a").read_bytes().startswith(b"a file")
    assert list(elsewhere.iterdir()) == []
    assert (out / "b" / "inside.txt").read_bytes() == b"b"
    assert (out / "d" / "inside.txt").read_bytes() == b"d"
    assert (out / "z.txt").read_bytes() == b"z"


def test_a_path_through_a_snapshot_link_or_file_is_an_error_and_writes_nothing(tmp_path, cas):
    src = tmp_path / "src"
    write(src / "real" / "x", b"x")
    write(src / "file", b"f")
    (src / "link").symlink_to("real")
    assert cas("--store", str(tmp_path / "s"), "init").code == 0
    assert cas("--store", str(tmp_path / "s"), "snapshot", str(src)).code == 0
    out = tmp_path / "out"
    for path in ("link/x", "file/x", "nosuch/x"):
        r = cas("--store", str(tmp_path / "s"), "restore", "HEAD", path, "--to", str(out))
        assert r.code in (1, 2), path
        assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not out.exists() or list(out.iterdir()) == []


# -- stores inside trees and snapshots naming the store ---------------------------

def test_a_store_inside_the_tree_is_never_recorded(tmp_path, cas):
    src = tmp_path / "src"
    write(src / "data.txt", b"data")
    write(src / "model" / "config.json", b'{"model_type": "llama"}')
    assert cas("--store", str(src / "backups" / "store"), "init").code == 0
    assert cas("--store", str(tmp_path / "s"), "init").code == 0
    r = cas("--store", str(tmp_path / "s"), "snapshot", str(src))
    assert r.code == 0, r.err
    assert "backups/store: is a cas store; not recorded" in r.err
    listing = cas("--store", str(tmp_path / "s"), "ls", "-r", "HEAD").text
    assert "data.txt" in listing and "model/config.json" in listing
    assert "objects" not in listing and "store" not in listing


def test_checkout_and_restore_never_write_into_the_live_store(tmp_path, cas):
    tree = tmp_path / "tree"
    write(tree / "a.txt", b"a")
    assert cas("init", cwd=tree).code == 0
    assert cas("snapshot", cwd=tree).code == 0
    config_before = (tree / ".cas" / "config.json").read_bytes()
    with Store.open(str(tree / ".cas")) as store:
        payload = store.put_bytes(b"payload")
        sub = store.put_bytes(dumps({"type": "tree", "version": 1, "entries": [
            {"name": "HEAD", "kind": "file", "mode": "0644", "mtime_ns": 0, "id": payload.hex, "size": 7},
            {"name": "config.json", "kind": "file", "mode": "0644", "mtime_ns": 0,
             "id": payload.hex, "size": 7}]}))
        record_tree(store, [{"name": ".cas", "kind": "dir", "mode": "0755", "id": sub.hex},
                            {"name": "a.txt"}], source=str(tree))
    r = cas("checkout", "HEAD", cwd=tree)
    assert r.code == 1 and ".cas" in r.err
    assert (tree / ".cas" / "config.json").read_bytes() == config_before
    assert (tree / ".cas" / "HEAD").read_bytes() != b"payload"
    assert (tree / "a.txt").read_bytes() == b"payload"
    assert cas("verify", cwd=tree).code == 0


def test_checkout_refuses_to_replace_content_only_cas_add_stored(tmp_path, cas):
    tree = tmp_path / "tree"
    write(tree / "notes.txt", b"version 1\n")
    assert cas("init", cwd=tree).code == 0
    assert cas("snapshot", cwd=tree).code == 0
    write(tree / "notes.txt", b"version 2, never snapshotted\n")
    assert cas("add", "notes.txt", cwd=tree).code == 0
    r = cas("checkout", "HEAD", cwd=tree)
    assert r.code == 2 and "notes.txt" in r.err
    assert (tree / "notes.txt").read_bytes() == b"version 2, never snapshotted\n"


# -- deep trees -------------------------------------------------------------------

def remove_tree(path) -> None:
    fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        remove_at(fd, os.fsencode(os.path.basename(path)))
    finally:
        os.close(fd)


def make_deep(root, depth: int) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    leaf = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(leaf, b"deep")
    os.close(leaf)
    os.close(fd)


def test_a_tree_deeper_than_pythons_stack_snapshots_restores_and_checks_out(tmp_path, cas):
    tree, out = tmp_path / "tree", tmp_path / "out"
    try:
        check_deep_tree(cas, tree, out)
    finally:
        for path in (tree, out):  # pytest's clean-up recurses and would fail on them
            if path.exists():
                remove_tree(path)


def check_deep_tree(cas, tree, out):
    tree.mkdir()
    make_deep(tree, 1100)
    write(tree / "top.txt", b"top")
    assert cas("init", cwd=tree).code == 0
    r = cas("snapshot", cwd=tree)
    assert r.code == 0, r.err
    r = cas("restore", "HEAD", "--to", str(out), cwd=tree)
    assert r.code == 0, r.err
    assert (out / "top.txt").read_bytes() == b"top"
    fd = os.open(out, os.O_RDONLY)
    for _ in range(1100):
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    leaf = os.open("leaf.txt", os.O_RDONLY, dir_fd=fd)
    assert os.read(leaf, 10) == b"deep"
    os.close(leaf)
    os.close(fd)
    # Deleting the deep tree again: checkout of a snapshot without it.
    with Store.open(str(tree / ".cas")) as store:
        record_tree(store, [{"name": "top.txt"}], source=str(tree))
    r = cas("checkout", "HEAD", cwd=tree)
    assert r.code == 0, r.err
    assert sorted(os.listdir(tree)) == [".cas", "top.txt"]
