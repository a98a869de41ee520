"""``cas snapshot PATH...`` inside a tracked tree records the tree's branch
with only the named paths taken from disk (git's ``commit -- PATH``); a
directory outside every tree keeps a branch of its own."""

import json

import pytest

from .conftest import write


@pytest.fixture
def tree(tmp_path, cas):
    t = tmp_path / "t"
    write(t / "db" / "memory.db", b"memory one\n")
    write(t / "notes" / "todo.md", b"todo one\n")
    write(t / "notes" / "ideas.md", b"ideas one\n")
    assert cas("init", cwd=t).code == 0
    assert cas("snapshot", "-m", "one", cwd=t).code == 0
    return t


def _show(cas, spec, cwd):
    r = cas("cat", spec, cwd=cwd)
    return r.out if r.code == 0 else None


def _head(cas, cwd):
    return json.loads(cas("show", "--json", cwd=cwd).out)


def _listed(cas, cwd):
    r = cas("ls", "-r", "--json", "HEAD", cwd=cwd)
    return {e["path"]: e for e in json.loads(r.out)}


def test_only_the_named_path_is_taken_from_disk(tree, cas):
    (tree / "db" / "memory.db").write_bytes(b"memory two\n")
    (tree / "notes" / "todo.md").write_bytes(b"todo two\n")
    write(tree / "notes" / "new.md", b"new, not named\n")
    write(tree / "fresh" / "dir.md", b"a new directory, not named\n")
    r = cas("snapshot", "-m", "todo only", "notes/todo.md", cwd=tree)
    assert r.code == 0, r.err
    head = _head(cas, tree)
    assert head["branch"] == "main" and head["message"] == "todo only"
    assert _show(cas, "HEAD:notes/todo.md", tree) == b"todo two\n"
    # Changed on disk, but not named: as in the branch head.
    assert _show(cas, "HEAD:db/memory.db", tree) == b"memory one\n"
    assert set(_listed(cas, tree)) == {"db", "db/memory.db", "notes", "notes/ideas.md",
                                       "notes/todo.md"}
    # The summary says what was recorded, and only the named file was read.
    assert "from disk: notes/todo.md; the rest as in" in r.err
    assert "1 read" in r.err
    assert head["stats"]["files"] == 3
    assert head["stats"]["bytes"] == len(b"memory one\n" b"todo two\n" b"ideas one\n")
    # What was not taken still shows as changed.
    status = cas("status", cwd=tree).text
    assert "db/memory.db" in status and "notes/new.md" in status


def test_paths_from_a_subdirectory_and_new_directories(tree, cas):
    notes = tree / "notes"
    write(notes / "deep" / "er" / "file.md", b"deep\n")
    (notes / "ideas.md").write_bytes(b"ideas two\n")
    (tree / "db" / "memory.db").write_bytes(b"memory two\n")
    r = cas("snapshot", "deep/er/file.md", "../db", cwd=notes)
    assert r.code == 0, r.err
    assert _show(cas, "HEAD:notes/deep/er/file.md", tree) == b"deep\n"
    assert _show(cas, "HEAD:db/memory.db", tree) == b"memory two\n"
    assert _show(cas, "HEAD:notes/ideas.md", tree) == b"ideas one\n"
    assert cas("verify", cwd=tree).code == 0
    # Counts agree with what the snapshot holds.
    listed = _listed(cas, tree)
    stats = _head(cas, tree)["stats"]
    assert stats["files"] == sum(e["kind"] == "file" for e in listed.values()) == 4
    assert stats["dirs"] == sum(e["kind"] == "dir" for e in listed.values()) == 4


def test_a_named_directory_is_taken_whole(tree, cas):
    (tree / "notes" / "ideas.md").unlink()
    write(tree / "notes" / "other.md", b"other\n")
    (tree / "db" / "memory.db").write_bytes(b"memory two\n")
    assert cas("snapshot", "notes", cwd=tree).code == 0
    assert {p for p in _listed(cas, tree) if p.startswith("notes/")} == \
        {"notes/todo.md", "notes/other.md"}
    assert _show(cas, "HEAD:db/memory.db", tree) == b"memory one\n"


def test_a_deleted_path_is_recorded_as_deleted(tree, cas):
    (tree / "notes" / "ideas.md").unlink()
    (tree / "notes" / "todo.md").write_bytes(b"todo two\n")
    r = cas("snapshot", "ideas.md", cwd=tree / "notes")
    assert r.code == 0, r.err
    assert "notes/ideas.md deleted" in r.err
    assert "notes/ideas.md" not in _listed(cas, tree)
    assert _show(cas, "HEAD:notes/todo.md", tree) == b"todo one\n"
    (tree / "notes" / "todo.md").unlink()
    doc = json.loads(cas("snapshot", "--json", "todo.md", cwd=tree / "notes").out)
    assert doc["paths"] == ["notes/todo.md"] and doc["deleted"] == ["notes/todo.md"]
    assert doc["stats"]["files"] == 1


def test_a_path_in_neither_disk_nor_head_is_refused(tree, cas):
    before = _head(cas, tree)["id"]
    r = cas("snapshot", "notes/nosuch.md", cwd=tree)
    assert r.code == 2
    assert r.err.strip() == ("cas: error: notes/nosuch.md: not on disk and not in the last "
                             "snapshot of main; nothing to record")
    assert _head(cas, tree)["id"] == before


def test_nothing_changed_in_the_named_paths(tree, cas):
    (tree / "db" / "memory.db").write_bytes(b"memory two\n")
    r = cas("snapshot", "notes", cwd=tree)
    assert r.code == 0
    assert "nothing changed in notes on main" in r.err
    assert len(cas("log", "--oneline", cwd=tree).text.splitlines()) == 1


def test_a_path_outside_the_tree_keeps_a_branch_of_its_own(tree, cas, tmp_path):
    """A source outside every tracked tree: its own branch, named after it,
    as before; a second directory of the same name gets the next free name."""
    write(tmp_path / "a" / "models" / "m.bin", b"weights a\n")
    write(tmp_path / "b" / "models" / "m.bin", b"weights b\n")
    store = ("--store", str(tree))
    r = cas(*store, "snapshot", str(tmp_path / "a" / "models"), cwd=tmp_path)
    assert r.code == 0, r.err
    r = cas(*store, "snapshot", "b/models", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "is recorded on branch models-2" in r.err
    branches = {s["branch"]: s["source"] for s in
                json.loads(cas(*store, "log", "--all", "--json", cwd=tmp_path).out)}
    assert branches["models"] == str(tmp_path / "a" / "models")
    assert branches["models-2"] == str(tmp_path / "b" / "models")
    assert _head(cas, tree)["branch"] == "main"


def test_the_tree_itself_named_is_a_whole_snapshot(tree, cas):
    (tree / "db" / "memory.db").write_bytes(b"memory two\n")
    r = cas("snapshot", "..", cwd=tree / "notes")
    assert r.code == 0, r.err
    assert "from disk" not in r.err
    assert _show(cas, "HEAD:db/memory.db", tree) == b"memory two\n"
    assert _head(cas, tree)["branch"] == "main"


def test_paths_in_two_places_or_a_missing_directory_are_refused(tree, cas, tmp_path):
    write(tmp_path / "outside" / "x", b"x\n")
    r = cas("snapshot", "notes", str(tmp_path / "outside"), cwd=tree)
    assert r.code == 2 and "one tracked tree" in r.err
    r = cas("--store", str(tree), "snapshot", "nosuch", cwd=tmp_path)
    assert r.code == 2 and "nosuch: no such directory" in r.err
