"""Paths given inside a tracked tree are relative to the current directory,
as in git; absolute paths inside the tree work, those outside are refused."""

import json

import pytest

from .conftest import cas_process, write


@pytest.fixture
def tree(tmp_path, cas):
    """A tree with two snapshots: 'one' and 'two' (every file changed)."""
    t = tmp_path / "t"
    write(t / "db" / "memory.db", b"memory one\n")
    write(t / "notes" / "todo.md", b"todo one\n")
    write(t / "notes" / "ideas.md", b"ideas\n")
    assert cas("init", cwd=t).code == 0
    assert cas("snapshot", "-m", "one", cwd=t).code == 0
    (t / "db" / "memory.db").write_bytes(b"memory two\n")
    (t / "notes" / "todo.md").write_bytes(b"todo two\n")
    assert cas("snapshot", "-m", "two", cwd=t).code == 0
    return t


def _oneline(cas, *args, cwd, store=()):
    r = cas(*store, "log", "--oneline", *args, cwd=cwd)
    assert r.code == 0, r.err
    return r.text.splitlines()


def test_restore_a_path_given_from_its_directory(tree, cas, tmp_path):
    r = cas("restore", "HEAD~1", "memory.db", "--to", str(tmp_path / "x"), cwd=tree / "db")
    assert r.code == 0, r.err
    assert (tmp_path / "x" / "db" / "memory.db").read_bytes() == b"memory one\n"
    assert not (tmp_path / "x" / "notes").exists()


def test_restore_an_absolute_path_inside_the_tree(tree, cas, tmp_path):
    r = cas("restore", "HEAD~1", str(tree / "notes" / "todo.md"), "--to", str(tmp_path / "x"),
            cwd=tree / "db")
    assert r.code == 0, r.err
    assert (tmp_path / "x" / "notes" / "todo.md").read_bytes() == b"todo one\n"


def test_log_of_a_path_from_its_directory(tree, cas):
    both = _oneline(cas, "--", "todo.md", cwd=tree / "notes")
    assert len(both) == 2
    assert _oneline(cas, "todo.md", cwd=tree / "notes") == both
    # ideas.md changed only in the first snapshot
    assert len(_oneline(cas, "--", "ideas.md", cwd=tree / "notes")) == 1
    assert _oneline(cas, "--", "../db/memory.db", cwd=tree / "notes") == both


def test_log_of_an_absolute_path_inside_the_tree(tree, cas, tmp_path):
    lines = _oneline(cas, "--", str(tree / "notes" / "ideas.md"), cwd=tree / "db")
    assert len(lines) == 1 and "one" in lines[0]


def test_diff_limited_to_paths_given_from_a_subdirectory(tree, cas):
    r = cas("diff", "--json", "HEAD~1", "HEAD", "--", "todo.md", cwd=tree / "notes")
    assert r.code == 0, r.err
    assert [c["path"] for c in json.loads(r.out)] == ["notes/todo.md"]
    r = cas("diff", "--json", "HEAD~1", "HEAD", "--", ".", cwd=tree / "db")
    assert [c["path"] for c in json.loads(r.out)] == ["db/memory.db"]


def test_snapshot_paths_stay_from_the_root(tree, cas):
    """SNAP:PATH is read from the tree's root, as in git; ./ starts from here."""
    notes = tree / "notes"
    assert cas("cat", "HEAD:notes/todo.md", cwd=notes).out == b"todo two\n"
    assert cas("cat", "HEAD~1:./todo.md", cwd=notes).out == b"todo one\n"
    assert "notes/ideas.md" in cas("ls", "HEAD:notes", cwd=notes).text
    assert "notes/ideas.md" in cas("ls", "HEAD:./", cwd=notes).text
    r = cas("ls", "HEAD:../db", cwd=notes)
    assert r.code == 0 and "db/memory.db" in r.text


def test_checkout_a_path_given_from_its_directory(tree, cas):
    r = cas("checkout", "HEAD~1", "todo.md", cwd=tree / "notes")
    assert r.code == 0, r.err
    assert (tree / "notes" / "todo.md").read_bytes() == b"todo one\n"
    assert (tree / "db" / "memory.db").read_bytes() == b"memory two\n"


@pytest.mark.parametrize("args", [
    ("log", "--", "/etc/passwd"),
    ("log", "/etc/passwd"),
    ("diff", "HEAD~1", "--", "/etc"),
    ("restore", "HEAD", "/etc/passwd", "--to", "out"),
    ("checkout", "HEAD", "/etc/passwd"),
    ("log", "--", "../../elsewhere"),
])
def test_a_path_outside_the_tree_is_refused(tree, cas, args):
    r = cas(*args, cwd=tree / "notes")
    assert r.code == 2
    assert "is outside the tracked tree" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tree / "notes" / "out").exists()


def test_outside_path_refused_by_the_real_command(tree):
    p = cas_process("restore", "HEAD", "/etc/hostname", "--to", "out", cwd=tree / "db")
    assert p.returncode == 2
    err = p.stderr.decode()
    assert err.startswith("cas: error: /etc/hostname is outside the tracked tree")
    assert "Traceback" not in err and not (tree / "db" / "out").exists()


def test_outside_the_tree_paths_are_from_its_root(tree, cas, tmp_path):
    """From a directory outside the tree (the store named with --store),
    a relative path is taken from the tree's root, as before."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lines = _oneline(cas, "--", "notes/ideas.md", cwd=elsewhere, store=("--store", str(tree)))
    assert len(lines) == 1
    r = cas("--store", str(tree), "restore", "HEAD~1", "db/memory.db", "--to", "x", cwd=elsewhere)
    assert r.code == 0, r.err
    assert (elsewhere / "x" / "db" / "memory.db").read_bytes() == b"memory one\n"


def test_a_tree_reached_through_a_symbolic_link(tree, cas, tmp_path):
    """The tree recorded through a link, the current directory as the
    system gives it (links resolved): still the same tree."""
    link = tmp_path / "link"
    link.symlink_to(tree)
    assert len(_oneline(cas, "--", "ideas.md", cwd=link / "notes")) == 1
    assert len(_oneline(cas, "--", str(link / "notes" / "ideas.md"), cwd=tree)) == 1
