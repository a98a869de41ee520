"""What the history commands say when something is not as asked: every
message names what was given, says what is there instead, and counts in
words ("1 file", not "1 files"). Real stores, the real CLI."""

import json

from cas.cli.timespec import show_time

from .conftest import write


def snapshot(cas, tree, message: str, *extra: str) -> dict:
    r = cas("snapshot", "-m", message, *extra, cwd=tree)
    assert r.code == 0, r.err
    return json.loads(cas("show", "--json", r.text.strip(), cwd=tree).out)


def test_restore_of_a_name_that_is_no_snapshot_says_so(tree, cas, tmp_path):
    snapshot(cas, tree, "one")
    r = cas("restore", "nosuch", "--to", str(tmp_path / "x"), cwd=tree)
    assert r.code == 2
    assert "'nosuch' names no snapshot, branch or tag" in r.err
    assert "name a snapshot" not in r.err and "ambiguous" not in r.err
    # A path of that name: the message says it is one, so the user sees the misreading.
    (tree / "nosuch").mkdir()
    r = cas("restore", "nosuch", "--to", str(tmp_path / "x"), cwd=tree)
    assert r.code == 2 and "'nosuch' names no snapshot, branch or tag" in r.err
    assert "it is a path" in r.err and len(r.err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_deleted_file_is_named_with_its_directory_and_where_it_last_was(tree, cas, tmp_path):
    write(tree / "notes" / "ideas.md", b"an idea\n")
    first = snapshot(cas, tree, "with ideas")
    (tree / "notes" / "ideas.md").unlink()
    (tree / "notes" / "other.md").write_text("keeps the directory\n")
    second = snapshot(cas, tree, "without")
    wanted = (f"notes/ideas.md is not in snapshot {second['id'][:12]} "
              f"(last in {first['id'][:12]})")
    out = str(tmp_path / "out")
    for args in (("HEAD", "notes/ideas.md"), ("HEAD", "--to", out, "--", "notes/ideas.md"),
                 ("--at", "now", "notes/ideas.md")):
        r = cas("restore", *args, "--to", out, cwd=tree) if "--" not in args \
            else cas("restore", *args, cwd=tree)
        assert r.code == 2, (args, r.err)
        assert wanted in r.err, (args, r.err)
        assert len(r.err.splitlines()) == 1
    # Never recorded anywhere: no hint.
    r = cas("restore", "HEAD", "--to", out, "--", "notes/never.md", cwd=tree)
    assert r.code == 2 and f"notes/never.md is not in snapshot {second['id'][:12]}" in r.err
    assert "last in" not in r.err


def test_cat_of_a_directory_points_to_ls(tree, cas):
    write(tree / "db" / "state.db", b"x")
    snapshot(cas, tree, "one")
    r = cas("cat", "HEAD:db", cwd=tree)
    assert r.code == 2 and "is a directory" in r.err and "cas ls HEAD:db" in r.err
    assert cas("ls", "HEAD:db", cwd=tree).code == 0


def test_counts_of_one_are_singular(tree, cas, tmp_path):
    snap = snapshot(cas, tree, "one file")  # the tree fixture holds notes.txt only
    r = cas("restore", "HEAD", "--to", str(tmp_path / "out"), cwd=tree)
    assert r.code == 0 and "1 file, 0 dirs, 0 symlinks" in r.err
    shown = cas("show", cwd=tree).text
    assert "contents 1 file, 0 dirs, 0 symlinks" in shown
    log = cas("log", cwd=tree).text
    assert " 1 file " in log and "1 files" not in log
    r = cas("restore", "HEAD~3", "--to", str(tmp_path / "o2"), cwd=tree)
    assert r.code == 2 and "which has 1 snapshot (" in r.err and "(s)" not in r.err
    assert snap["stats"]["files"] == 1


def test_log_of_an_empty_store_says_how_to_make_a_snapshot(tree, cas):
    for args in (("log",), ("log", "HEAD"), ("show",), ("cat", "HEAD:notes.txt")):
        r = cas(*args, cwd=tree)
        assert r.code == 2, args
        assert "no snapshots yet" in r.err and "'cas snapshot'" in r.err, (args, r.err)
        assert "'cas log'" not in r.err and "names no snapshot" not in r.err


def test_restore_at_a_time_before_the_first_snapshot_says_when_that_is(tree, cas, tmp_path):
    first = snapshot(cas, tree, "first", "--time", "2025-01-02T12:00:00Z")
    (tree / "notes.txt").write_text("second\n")
    snapshot(cas, tree, "second", "--time", "2025-01-03T12:00:00Z")
    r = cas("restore", "--at", "2025-01-01T00:00:00Z", "--to", str(tmp_path / "x"), cwd=tree)
    assert r.code == 2 and len(r.err.splitlines()) == 1
    assert "at or before" in r.err
    assert f"{first['id'][:12]}, is at {show_time(first['time_ns'])}" in r.err
    r = cas("restore", "--at", "2025-01-01T00:00:00Z", "-b", "nosuch", "--to",
            str(tmp_path / "x"), cwd=tree)
    assert r.code == 2 and "no branch 'nosuch'" in r.err
