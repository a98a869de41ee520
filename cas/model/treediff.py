"""Differences between two trees: added, deleted, modified, type-changed paths.

In the model layer, beside the trees it reads: history listings (``cas log
--stat``) need it as much as the diff commands do.

Subtrees with equal ids are skipped without being read (Merkle), so the
cost of a diff follows the size of the change, not of the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..objectid import ObjectId
from .tree import DIR, Tree, TreeEntry
from .treewalk import TreeWalk, WalkGuard

ADDED = "added"
DELETED = "deleted"
MODIFIED = "modified"
TYPE_CHANGED = "type-changed"
SYMBOL = {ADDED: "A", DELETED: "D", MODIFIED: "M", TYPE_CHANGED: "T"}

TreeLoader = Callable[[ObjectId], Tree]


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    path: bytes
    old: TreeEntry | None
    new: TreeEntry | None


def _same(a: TreeEntry, b: TreeEntry) -> bool:
    return (a.kind, a.oid, a.target, a.mode) == (b.kind, b.oid, b.target, b.mode)


def _within(path: bytes, filters: list[bytes] | None, is_dir: bool) -> bool:
    if not filters:
        return True
    return any(path == f or path.startswith(f + b"/") or (is_dir and f.startswith(path + b"/")) for f in filters)


def whole_tree_or(paths: Sequence[bytes] | None) -> list[bytes] | None:
    """Path filters as the walks take them: None for the whole tree, which
    an empty path (the root: '.' given at the tree's top) also names."""
    if not paths or b"" in paths:
        return None
    return list(paths)


def diff_trees(load_a: TreeLoader, a: ObjectId | None, load_b: TreeLoader, b: ObjectId | None,
               filters: list[bytes] | None = None, prefix: bytes = b"") -> Iterator[Change]:
    """Changes from tree ``a`` to tree ``b``, in path order.

    Each level yields changes and deferred work for the levels below; an
    explicit stack of those (not recursion) keeps a crafted chain of
    thousands of nested trees from ending in RecursionError. Each side has
    a ``WalkGuard`` as ``TreeWalk`` does: a tree inside itself, or a
    subtree reused to more paths than a walk takes, is an error.
    """
    pair = _Pair(load_a, load_b, whole_tree_or(filters), WalkGuard(), WalkGuard())
    pair.root = b or a
    stack = [iter(pair.level(a, b, prefix, pair.enter(a, b, prefix)))]
    leave: list[tuple[ObjectId | None, ObjectId | None]] = [(a, b)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            pair.leave(*leave.pop())
        elif isinstance(item, Change):
            yield item
        elif isinstance(item, _Descend):
            # Entered on the way down, left when its level is done: a tree
            # below itself on either side is a loop however it is reached.
            reused = pair.enter(item.a, item.b, item.prefix) or item.reused
            stack.append(iter(pair.level(item.a, item.b, item.prefix, reused)))
            leave.append((item.a, item.b))
        else:
            yield from _side(item, pair.filters)


class _Descend(NamedTuple):
    a: ObjectId
    b: ObjectId
    prefix: bytes
    reused: bool


class _Side(NamedTuple):
    walk: TreeWalk | None
    entry: TreeEntry
    path: bytes
    kind: str


class _Pair:
    """Both sides of a comparison: their loaders, filters and guards."""

    def __init__(self, load_a: TreeLoader, load_b: TreeLoader, filters: list[bytes] | None,
                 guard_a: WalkGuard, guard_b: WalkGuard):
        self.load_a, self.load_b, self.filters = load_a, load_b, filters
        self.guard_a, self.guard_b = guard_a, guard_b
        self.root: ObjectId | None = None

    def enter(self, a: ObjectId | None, b: ObjectId | None, prefix: bytes) -> bool:
        reused_a = self.guard_a.enter(a, prefix) if a is not None else False
        reused_b = self.guard_b.enter(b, prefix) if b is not None else False
        return reused_a and reused_b

    def leave(self, a: ObjectId | None, b: ObjectId | None) -> None:
        if a is not None:
            self.guard_a.leave(a)
        if b is not None:
            self.guard_b.leave(b)

    def side(self, entry: TreeEntry, path: bytes, kind: str) -> _Side:
        if entry.kind != DIR:
            return _Side(None, entry, path, kind)
        load, guard = (self.load_a, self.guard_a) if kind == DELETED else (self.load_b, self.guard_b)
        return _Side(TreeWalk(load, entry.oid, path + b"/", guard=guard), entry, path, kind)

    def level(self, a: ObjectId | None, b: ObjectId | None, prefix: bytes, reused: bool) -> list:
        """One directory's changes, and what to descend into below it."""
        if a == b:
            return []
        old = {e.name: e for e in self.load_a(a).entries} if a else {}
        new = {e.name: e for e in self.load_b(b).entries} if b else {}
        if reused:
            self.guard_a.count(len(old) + len(new), self.root)
        items: list = []
        for name in sorted(old.keys() | new.keys()):
            o, n = old.get(name), new.get(name)
            if o is None or n is None or not _same(o, n):
                items += self.changed(o, n, prefix + name, reused)
        return items

    def changed(self, o: TreeEntry | None, n: TreeEntry | None, path: bytes, reused: bool) -> list:
        """What differs at one name: a change, a pair to descend into, or a side."""
        is_dir = (o is not None and o.kind == DIR) or (n is not None and n.kind == DIR)
        if not _within(path, self.filters, is_dir):
            return []
        if o is None:
            assert n is not None
            return [self.side(n, path, ADDED)]
        if n is None:
            return [self.side(o, path, DELETED)]
        if o.kind == DIR and n.kind == DIR:
            assert o.oid is not None and n.oid is not None
            return [_Descend(o.oid, n.oid, path + b"/", reused)]
        if o.kind != n.kind:
            if DIR not in (o.kind, n.kind):
                return [Change(TYPE_CHANGED, path, o, n)]
            return [self.side(o, path, DELETED), self.side(n, path, ADDED)]
        return [Change(MODIFIED, path, o, n)]


def _side(side: _Side, filters: list[bytes] | None) -> Iterator[Change]:
    """An entry present on one side only: a file, or every file below a
    directory (and an empty directory as its path with a trailing '/')."""
    if side.walk is None:
        yield _one(side.kind, side.path, side.entry)
        return
    walk = side.walk
    open_dirs = [(side.path, False)]   # (path, holds anything), the side entry first
    for path, entry, depth in walk:
        while len(open_dirs) > depth + 1:
            yield from _empty(side.kind, open_dirs.pop(), filters)
        open_dirs[-1] = (open_dirs[-1][0], True)
        if not _within(path, filters, entry.kind == DIR):
            if entry.kind == DIR:
                walk.prune()
        elif entry.kind == DIR:
            open_dirs.append((path, False))
        else:
            yield _one(side.kind, path, entry)
    while open_dirs:
        yield from _empty(side.kind, open_dirs.pop(), filters)


def _one(kind: str, path: bytes, entry: TreeEntry) -> Change:
    return Change(kind, path, entry if kind == DELETED else None, entry if kind == ADDED else None)


def _empty(kind: str, open_dir: tuple[bytes, bool], filters: list[bytes] | None) -> Iterator[Change]:
    path, holds = open_dir
    if not holds and _within(path, filters, False):
        yield Change(kind, path + b"/", None, None)
