"""The one walk over stored trees: iterative, depth first in name order, guarded.

Every command that lists, restores or compares what is below a tree walks
it here (or, for a walk of two trees at once, under the same ``WalkGuard``),
so the three ways a crafted store could stop a walk are handled once:

- depth: an explicit stack, not recursion, so a chain of 10,000 nested
  trees does not end in RecursionError;
- a loop: a tree reached again below itself (its bytes cannot hash to an
  id they contain, but a walk must not rely on every loader checking) is
  an error naming the tree, never an endless walk;
- reuse: a tree may name one subtree many times and that subtree again,
  so 60 small trees can describe 2**60 paths. Paths expanded from a
  subtree already expanded in the same walk are counted, and past a limit
  the walk stops with an error instead of running for years.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from ..errors import CasError, TreeContainsItself, TreeTooManyPaths
from ..objectid import ObjectId
from .tree import DIR, Tree, TreeEntry

TreeLoader = Callable[[ObjectId], Tree]
# Paths a walk may expand from subtrees it has expanded before. Real trees
# repeat a few subtrees (empty directories, copies of a package); ten
# million repeated paths is a crafted tree, or one no restore could finish.
# The limit also bounds how long such a tree can keep a walk busy: a diff
# yields about 350,000 paths a second, so under half a minute.
MAX_REUSED_PATHS = 10_000_000


class WalkGuard:
    """What one walk has seen: the trees on the current path, the trees
    already expanded, and how many paths came from expanding one again."""

    __slots__ = ("expanded", "limit", "on_path", "reused_paths")

    def __init__(self, limit: int | None = None):
        self.on_path: set[ObjectId] = set()
        self.expanded: set[ObjectId] = set()
        self.reused_paths = 0
        self.limit = MAX_REUSED_PATHS if limit is None else limit

    def enter(self, oid: ObjectId, path: bytes) -> bool:
        """Note that the walk goes into tree ``oid`` at ``path``; whether it
        was expanded before in this walk."""
        if oid in self.on_path:
            raise TreeContainsItself(oid.hex, path.decode("utf-8", "backslashreplace"))
        self.on_path.add(oid)
        if oid in self.expanded:
            return True
        self.expanded.add(oid)
        return False

    def leave(self, oid: ObjectId) -> None:
        self.on_path.discard(oid)

    def count(self, paths: int, root: ObjectId | None) -> None:
        """Count paths expanded from a reused subtree; refuse past the limit."""
        self.reused_paths += paths
        if self.reused_paths > self.limit:
            raise TreeTooManyPaths(root.hex if root else "?", self.limit)


# (path relative to the walk's start, '/'-separated; the entry; its depth,
# 0 for the entries walked from). A plain tuple: a named one costs a
# restore or a listing twice the time of the walk itself.
Step = tuple[bytes, TreeEntry, int]


class _Frame(NamedTuple):
    prefix: bytes
    entries: Iterator[TreeEntry]
    oid: ObjectId | None
    reused: bool
    depth: int


class TreeWalk:
    """Iterate over ``Step`` tuples below a tree (or a list of entries), depth
    first, a directory before what is in it.

    ``prune()``, called while a directory's step is being handled, keeps
    the walk out of that directory. ``on_error(path, entry, error)``, if
    given, is called when a subtree cannot be loaded (a missing or damaged
    tree object) and the walk goes on without it; without it the error
    ends the walk. Loops and runaway reuse always end it.
    """

    def __init__(self, load: TreeLoader, root: ObjectId | None = None, prefix: bytes = b"",
                 entries: Iterable[TreeEntry] | None = None, *,
                 guard: WalkGuard | None = None,
                 on_error: Callable[[bytes, TreeEntry, Exception], None] | None = None):
        self._load = load
        self._root = root
        self._prefix = prefix
        self._start = entries
        self.guard = guard or WalkGuard()
        self._on_error = on_error
        self._pruned = False

    def prune(self) -> None:
        self._pruned = True

    def __iter__(self) -> Iterator[Step]:
        # Plain tuples and locals: this loop runs once per entry of a restore.
        guard, load, root = self.guard, self._load, self._root
        if self._start is None:
            assert root is not None
            reused = guard.enter(root, self._prefix)
            start: Iterable[TreeEntry] = load(root).entries
        else:
            reused, start = False, self._start
        stack = [(self._prefix, iter(start), root if self._start is None else None, reused, 0)]
        while stack:
            prefix, entries, oid, reused, depth = stack[-1]
            for entry in entries:
                if reused:
                    guard.count(1, root)
                path = prefix + entry.name
                self._pruned = False
                yield (path, entry, depth)
                if entry.kind == DIR and not self._pruned:
                    child = self._open(entry, path, reused, depth + 1)
                    if child is not None:
                        stack.append(child)
                        break
            else:
                stack.pop()
                if oid is not None:
                    guard.leave(oid)

    def _open(self, entry: TreeEntry, path: bytes, parent_reused: bool,
              depth: int) -> _Frame | None:
        assert entry.oid is not None   # a dir entry always names its tree
        reused = self.guard.enter(entry.oid, path) or parent_reused
        try:
            children = self._load(entry.oid).entries
        except (CasError, OSError) as e:
            self.guard.leave(entry.oid)
            if self._on_error is None:
                raise
            self._on_error(path, entry, e)
            return None
        return _Frame(path + b"/", iter(children), entry.oid, reused, depth)


def walk_tree(load: TreeLoader, root: ObjectId, prefix: bytes = b"") -> Iterator[Step]:
    """Every entry below tree ``root``: the common case of ``TreeWalk``."""
    return iter(TreeWalk(load, root, prefix))
