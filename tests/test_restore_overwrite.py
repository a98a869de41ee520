"""restore into the tracked tree keeps unsaved work; --overwrite always|if-changed|never."""

from __future__ import annotations

import json
import os

import pytest

from cas.errors import NoSnapshotAt
from cas.model.history import History
from cas.storage.store import Store

from .conftest import cas_process, write


@pytest.fixture
def tracked(tmp_path, cas):
    """A tree with two snapshots: a.txt 'one' then 'two', b.txt in both."""
    root = tmp_path / "tree"
    root.mkdir()
    assert cas("init", cwd=root).code == 0
    write(root / "sub" / "a.txt", b"one\n")
    write(root / "b.txt", b"bee\n")
    first = cas("snapshot", cwd=root).text.strip()
    write(root / "sub" / "a.txt", b"two\n")
    second = cas("snapshot", cwd=root).text.strip()
    return root, first, second


def test_restore_into_the_tree_refuses_to_overwrite_unsaved_work(tracked):
    root, first, _ = tracked
    write(root / "sub" / "a.txt", b"unsaved\n")
    os.unlink(root / "b.txt")
    r = cas_process("restore", first, "--to", ".", cwd=root)
    assert r.returncode == 2, r.stderr
    assert b"sub/a.txt" in r.stderr and b"--force" in r.stderr and b"Traceback" not in r.stderr
    # Nothing written: not the file at risk, nor the one that was missing.
    assert (root / "sub" / "a.txt").read_bytes() == b"unsaved\n"
    assert not (root / "b.txt").exists()
    # Likewise into a directory inside the tree, named from inside it.
    r = cas_process("restore", first, "--to", str(root / "sub" / ".."), cwd=root / "sub")
    assert r.returncode == 2 and b"a.txt" in r.stderr
    assert (root / "sub" / "a.txt").read_bytes() == b"unsaved\n"


def test_restore_into_the_tree_replaces_content_a_snapshot_has(tracked, cas):
    root, first, _ = tracked
    r = cas("restore", first, "--to", str(root), cwd=root)
    assert r.code == 0, r.err
    assert (root / "sub" / "a.txt").read_bytes() == b"one\n"


def test_force_overwrites_unsaved_work(tracked, cas):
    root, first, _ = tracked
    write(root / "sub" / "a.txt", b"unsaved\n")
    r = cas("restore", first, "--to", ".", "--force", cwd=root)
    assert r.code == 0, r.err
    assert (root / "sub" / "a.txt").read_bytes() == b"one\n"


def test_overwrite_never_keeps_existing_files_and_reports_them(tracked, cas):
    root, first, _ = tracked
    write(root / "sub" / "a.txt", b"unsaved\n")
    os.unlink(root / "b.txt")
    r = cas("restore", first, "--to", ".", "--overwrite", "never", "--json", cwd=root)
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert (doc["files"], doc["skipped"]) == (1, 1)
    assert doc["skipped_paths"] == [str(root / "sub" / "a.txt")]
    assert (root / "sub" / "a.txt").read_bytes() == b"unsaved\n"
    assert (root / "b.txt").read_bytes() == b"bee\n"


def test_outside_a_tree_always_is_the_default(tracked, tmp_path, cas):
    root, first, second = tracked
    out = tmp_path / "out"
    assert cas("restore", second, "--to", str(out), cwd=root).code == 0
    write(out / "sub" / "a.txt", b"local edit\n")
    r = cas("restore", first, "--to", str(out), "--json", cwd=root)
    assert r.code == 0, r.err
    assert json.loads(r.out)["skipped"] == 0
    assert (out / "sub" / "a.txt").read_bytes() == b"one\n"


def test_overwrite_if_changed_skips_files_as_recorded(tracked, tmp_path, cas):
    root, first, _ = tracked
    out = tmp_path / "out"
    assert cas("restore", first, "--to", str(out), cwd=root).code == 0
    a, b = out / "sub" / "a.txt", out / "b.txt"
    st_a, st_b = a.stat(), b.stat()
    # a.txt: other bytes, same size, mtime and mode: taken as unchanged (as restic does).
    a.write_bytes(b"ONE\n")
    os.utime(a, ns=(st_a.st_mtime_ns, st_a.st_mtime_ns))
    # b.txt: same bytes, another mtime: kept, and its mtime set as recorded.
    os.utime(b, ns=(1, 1))
    write(out / "extra.txt", b"not in the snapshot\n")
    r = cas("restore", first, "--to", str(out), "--overwrite", "if-changed", "--json", cwd=root)
    doc = json.loads(r.out)
    assert r.code == 0 and (doc["files"], doc["skipped"]) == (0, 2), doc
    assert a.read_bytes() == b"ONE\n" and b.stat().st_mtime_ns == st_b.st_mtime_ns
    # Another size: replaced.
    a.write_bytes(b"changed, longer\n")
    doc = json.loads(cas("restore", first, "--to", str(out), "--overwrite", "if-changed",
                         "--json", cwd=root).out)
    assert (doc["files"], doc["skipped"]) == (1, 1)
    assert a.read_bytes() == b"one\n" and (out / "extra.txt").exists()


def test_overwrite_never_keeps_a_symlink_in_the_way(tmp_path, cas):
    root = tmp_path / "tree"
    root.mkdir()
    assert cas("init", cwd=root).code == 0
    os.symlink("target-one", root / "link")
    snap = cas("snapshot", cwd=root).text.strip()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink("elsewhere", out / "link")
    doc = json.loads(cas("restore", snap, "--to", str(out), "--overwrite", "never", "--json",
                         cwd=root).out)
    assert (doc["symlinks"], doc["skipped"]) == (0, 1) and os.readlink(out / "link") == "elsewhere"
    doc = json.loads(cas("restore", snap, "--to", str(out), "--overwrite", "if-changed", "--json",
                         cwd=root).out)
    assert doc["symlinks"] == 1 and os.readlink(out / "link") == "target-one"


def test_the_time_a_restore_is_at_is_a_library_call(tracked):
    root, first, second = tracked
    with Store.open(str(root / ".cas")) as store:
        history = History(store)
        head = history.branch_head("main")
        assert history.at("main", head.time_ns).oid.hex == second
        with pytest.raises(NoSnapshotAt, match=first[:12]):
            history.at("main", 1)
