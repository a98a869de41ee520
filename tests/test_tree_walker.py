"""The one tree walker: the order and paths of a plain recursive walk, no
recursion, and a clear error for a tree inside itself or reused to
runaway numbers of paths, in the walker and in the commands built on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.errors import TreeContainsItself, TreeTooManyPaths
from cas.model import treewalk
from cas.model.history import History
from cas.model.tree import DIR, FILE, SYMLINK, Tree, TreeEntry
from cas.model.treediff import diff_trees
from cas.model.treewalk import TreeWalk, WalkGuard
from cas.objectid import ObjectId, hash_bytes
from cas.storage.encoding import Encoding
from cas.storage.store import Store

from .conftest import cas_process, write
from .test_history_trust import craft, put_tree, record_snapshot

# -- trees in memory ----------------------------------------------------------------------


class Trees(dict):
    """Trees by id, built bottom-up the way a snapshot stores them."""

    def put(self, entries: list[TreeEntry]) -> ObjectId:
        tree = Tree.build(entries)
        oid = hash_bytes(tree.to_json())
        self[oid] = tree
        return oid

    def load(self, oid: ObjectId) -> Tree:
        return self[oid]


def _file(name: bytes, content: bytes = b"x") -> TreeEntry:
    return TreeEntry(name, FILE, 0o644, 0, len(content), hash_bytes(content))


def _dir(name: bytes, oid: ObjectId) -> TreeEntry:
    return TreeEntry(name, DIR, 0o755, 0, 0, oid)


_names = st.sampled_from([b"a", b"b", b"c", b"d.txt", b"e"])
_shapes = st.recursive(
    st.sampled_from(["file", "link"]),
    lambda children: st.dictionaries(_names, children, max_size=4),
    max_leaves=30)


def _build(trees: Trees, shape: dict) -> ObjectId:
    entries = []
    for name, sub in shape.items():
        if isinstance(sub, dict):
            entries.append(_dir(name, _build(trees, sub)))
        elif sub == "link":
            entries.append(TreeEntry(name, SYMLINK, 0o777, 0, 3, None, b"../x"))
        else:
            entries.append(_file(name, name))
    return trees.put(entries)


def _recursive(trees: Trees, oid: ObjectId, prefix: bytes, depth: int) -> list:
    out = []
    for entry in trees[oid].entries:
        out.append((prefix + entry.name, entry, depth))
        if entry.kind == DIR:
            out += _recursive(trees, entry.oid, prefix + entry.name + b"/", depth + 1)
    return out


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_names, _shapes, max_size=5))
def test_the_walker_yields_what_a_recursive_walk_does(shape):
    trees = Trees()
    root = _build(trees, shape)
    assert [tuple(s) for s in TreeWalk(trees.load, root)] == _recursive(trees, root, b"", 0)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_names, _shapes, max_size=5), st.dictionaries(_names, _shapes, max_size=5))
def test_a_diff_lists_every_path_that_differs_and_no_other(old_shape, new_shape):
    trees = Trees()
    old, new = _build(trees, old_shape), _build(trees, new_shape)
    files = {}
    for side, root in (("old", old), ("new", new)):
        files[side] = {p: (e.kind, e.oid, e.target) for p, e, _ in _recursive(trees, root, b"", 0)
                       if e.kind != DIR}
    changed = {c.path for c in diff_trees(trees.load, old, trees.load, new) if not c.path.endswith(b"/")}
    differ = {p for p in files["old"].keys() | files["new"].keys()
              if files["old"].get(p) != files["new"].get(p)}
    assert changed == differ


def test_pruning_keeps_the_walk_out_of_a_directory():
    trees = Trees()
    inner = trees.put([_file(b"deep")])
    root = trees.put([_dir(b"a", inner), _dir(b"b", inner), _file(b"c")])
    walk = TreeWalk(trees.load, root)
    seen = []
    for path, _, _ in walk:
        seen.append(path)
        if path == b"a":
            walk.prune()
    assert seen == [b"a", b"b", b"b/deep", b"c"]


def _looping(trees: Trees) -> ObjectId:
    """A tree that names itself: its bytes could never hash to the id they
    hold, so the loader here is one that does not check."""
    fake = hash_bytes(b"a tree that contains itself")
    trees[fake] = Tree.build([_file(b"f"), _dir(b"loop", fake)])
    return fake


def test_a_tree_inside_itself_is_an_error_naming_it_not_an_endless_walk():
    trees = Trees()
    loop = _looping(trees)
    with pytest.raises(TreeContainsItself, match=loop.hex) as caught:
        list(TreeWalk(trees.load, loop))
    assert "loop" in str(caught.value)
    root = trees.put([_dir(b"x", trees.put([_file(b"y")]))])
    looped = trees.put([_dir(b"x", loop)])
    for a, b in ((root, looped), (looped, root), (looped, None), (None, looped)):
        with pytest.raises(TreeContainsItself):
            list(diff_trees(trees.load, a, trees.load, b))


def test_the_same_subtree_at_many_paths_is_no_loop():
    trees = Trees()
    leaf = trees.put([_file(b"f")])
    root = trees.put([_dir(b"a", leaf), _dir(b"b", leaf), _dir(b"c", trees.put([_dir(b"d", leaf)]))])
    assert [s[0] for s in TreeWalk(trees.load, root)] == \
        [b"a", b"a/f", b"b", b"b/f", b"c", b"c/d", b"c/d/f"]
    other = trees.put([_dir(b"a", leaf), _dir(b"b", trees.put([_file(b"g")]))])
    assert [(c.kind, c.path) for c in diff_trees(trees.load, root, trees.load, other)] == \
        [("deleted", b"b/f"), ("added", b"b/g"), ("deleted", b"c/d/f")]


def _doubling(trees: Trees, levels: int) -> ObjectId:
    """A tree of ``levels`` small trees that describes 2**levels files."""
    child = trees.put([_file(b"f")])
    for _ in range(levels):
        child = trees.put([_dir(b"0", child), _dir(b"1", child)])
    return child


def test_a_subtree_reused_to_runaway_numbers_of_paths_stops_the_walk():
    trees = Trees()
    root = _doubling(trees, 60)   # 2**60 paths: a walk would never end
    with pytest.raises(TreeTooManyPaths, match="10,000 paths"):
        list(TreeWalk(trees.load, root, guard=WalkGuard(limit=10_000)))
    small = _doubling(trees, 8)   # 2**8 files, well under the limit
    assert sum(1 for _, e, _ in TreeWalk(trees.load, small, guard=WalkGuard(limit=10_000))
               if e.kind == FILE) == 256
    assert WalkGuard().limit == 10_000_000   # by default: no real tree comes near it


def test_a_diff_of_two_runaway_trees_stops(monkeypatch):
    # diff_trees makes its own guards: the default limit is lowered so the
    # test stops in a moment (at 10 million paths it takes half a minute).
    monkeypatch.setattr(treewalk, "MAX_REUSED_PATHS", 5_000)
    trees = Trees()
    root = _doubling(trees, 60)
    with pytest.raises(TreeTooManyPaths):
        for _ in diff_trees(trees.load, None, trees.load, root):
            pass


def test_ten_thousand_levels_walk_without_recursion():
    trees = Trees()
    child = trees.put([_file(b"leaf")])
    for _ in range(10_000):
        child = trees.put([_dir(b"d", child)])
    steps = list(TreeWalk(trees.load, child))
    assert steps[-1][0] == b"d/" * 10_000 + b"leaf" and steps[-1][2] == 10_000
    changes = list(diff_trees(trees.load, None, trees.load, child))
    assert [c.path for c in changes] == [b"d/" * 10_000 + b"leaf"]


# -- the commands -------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path, cas):
    root = tmp_path / "tree"
    write(root / "a.txt", b"alpha\n")
    assert cas("init", str(root)).code == 0
    assert cas("snapshot", cwd=root).code == 0
    return root


def _plant_looping_tree(store_path) -> ObjectId:
    """A loose tree object whose bytes name its own id, recorded as HEAD's tree. The
    store never takes it (its bytes cannot hash to the id they hold): the walk
    guard is the second line, tested on a loader that does not check, above."""
    fake = hash_bytes(b"a tree that contains itself")
    doc = Tree.build([_file(b"f", b"alpha\n"), _dir(b"loop", fake)]).to_json()
    with Store.open(str(store_path)) as store:
        path = store.layout.loose_path(fake, Encoding.RAW)
    write(Path(path), doc)
    craft(store_path, lambda h, w: record_snapshot(h, w, fake))
    return fake


@pytest.mark.parametrize("args", [("ls", "-r", "HEAD"), ("restore", "HEAD", "--to", "OUT"),
                                  ("diff", "HEAD~1", "HEAD"), ("diff", "HEAD", "HEAD~1"),
                                  ("diff", "HEAD")])
def test_a_tree_inside_itself_is_a_one_line_error_for_every_command(tree, args):
    _plant_looping_tree(tree / ".cas")
    args = tuple(str(tree.parent / "out") if a == "OUT" else a for a in args)
    r = cas_process(*args, cwd=tree, timeout=60)
    err = r.stderr.decode()
    assert r.returncode in (1, 2), err
    assert "Traceback" not in err and "RecursionError" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_crafted_runaway_tree_stops_ls_and_restore(tree, cas, monkeypatch):

    monkeypatch.setattr(treewalk, "MAX_REUSED_PATHS", 5_000)

    def build(history: History, writer):
        child = put_tree(writer, [_file(b"f")])
        for _ in range(60):
            child = put_tree(writer, [_dir(b"0", child), _dir(b"1", child)])
        return record_snapshot(history, writer, child)

    craft(tree / ".cas", build)
    for args in (["ls", "-r", "HEAD"], ["restore", "HEAD", "--to", str(tree.parent / "out")],
                 ["diff", "HEAD~1", "HEAD"]):
        r = cas(*args, cwd=tree)
        assert r.code == 1, (args, r.err)
        assert "5,000 paths" in r.err, r.err


def test_a_chain_of_ten_thousand_trees_lists_and_diffs(tree, cas):
    def build(history: History, writer):
        child = put_tree(writer, [_file(b"leaf", b"alpha\n")])
        for _ in range(10_000):
            child = put_tree(writer, [_dir(b"d", child)])
        return record_snapshot(history, writer, child)

    craft(tree / ".cas", build)
    assert sys.getrecursionlimit() < 10_000
    rows = json.loads(cas("ls", "-r", "--json", "HEAD", cwd=tree).out)
    assert rows[-1]["path"] == "d/" * 10_000 + "leaf"
    diff = cas("diff", "--json", "HEAD~1", "HEAD", cwd=tree)
    assert diff.code == 0, diff.err
    assert "d/" * 10_000 + "leaf" in [c["path"] for c in json.loads(diff.out)]


def test_after_a_checkout_the_working_tree_is_compared_with_what_it_shows(tree, cas):
    from cas.ops.diff import compare, working_base
    write(tree / "a.txt", b"alpha two\n")
    assert cas("snapshot", cwd=tree).code == 0
    assert cas("checkout", "HEAD~1", cwd=tree).code == 0
    with Store.open(str(tree / ".cas")) as store:
        history = History(store)
        base = working_base(history)
        assert base.oid == history.resolve("HEAD~1").oid
        assert compare(history, base).changes == []
        assert [c.path for c in compare(history, history.resolve("HEAD")).changes] == [b"a.txt"]
