"""Differences between two trees: added, deleted, modified, type-changed paths.

In the model layer, beside the trees it reads: history listings (``cas log
--stat``) need it as much as the diff commands do.

Subtrees with equal ids are skipped without being read (Merkle), so the
cost of a diff follows the size of the change, not of the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..objectid import ObjectId
from .tree import DIR, Tree, TreeEntry

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


def diff_trees(load_a: TreeLoader, a: ObjectId | None, load_b: TreeLoader, b: ObjectId | None,
               filters: list[bytes] | None = None, prefix: bytes = b"") -> Iterator[Change]:
    """Changes from tree ``a`` to tree ``b``, in path order.

    Each level yields changes and deferred work for the levels below; an
    explicit stack of those (not recursion) keeps a crafted chain of
    thousands of nested trees from ending in RecursionError.
    """
    stack = [iter(_level(load_a, a, load_b, b, filters, prefix))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, Change):
            yield item
        else:
            stack.append(iter(item()))


def _level(load_a: TreeLoader, a: ObjectId | None, load_b: TreeLoader, b: ObjectId | None,
           filters, prefix: bytes) -> list:
    """One directory's changes, and a callable for each subdirectory to descend into."""
    if a == b:
        return []
    old = {e.name: e for e in load_a(a).entries} if a else {}
    new = {e.name: e for e in load_b(b).entries} if b else {}
    items: list = []
    for name in sorted(old.keys() | new.keys()):
        path = prefix + name
        o, n = old.get(name), new.get(name)
        is_dir = (o is not None and o.kind == DIR) or (n is not None and n.kind == DIR)
        if not _within(path, filters, is_dir):
            continue
        if o is not None and n is not None and _same(o, n):
            continue
        if o is not None and n is not None and o.kind == DIR and n.kind == DIR:
            items.append(lambda o=o, n=n, p=path + b"/": _level(load_a, o.oid, load_b, n.oid, filters, p))
        elif o is not None and n is not None and o.kind != n.kind:
            if DIR not in (o.kind, n.kind):
                items.append(Change(TYPE_CHANGED, path, o, n))
            else:
                items.append(lambda o=o, p=path: _side(load_a, o, p, DELETED, filters))
                items.append(lambda n=n, p=path: _side(load_b, n, p, ADDED, filters))
        elif o is None:
            items.append(lambda n=n, p=path: _side(load_b, n, p, ADDED, filters))
        elif n is None:
            items.append(lambda o=o, p=path: _side(load_a, o, p, DELETED, filters))
        else:
            items.append(Change(MODIFIED, path, o, n))
    return items


def _side(load: TreeLoader, entry: TreeEntry, path: bytes, kind: str, filters) -> list:
    """An entry present on one side only: a file, or every file below a directory."""
    if entry.kind != DIR:
        return [Change(kind, path, entry if kind == DELETED else None, entry if kind == ADDED else None)]
    children = load(entry.oid).entries
    items: list = []
    if not children and _within(path, filters, False):
        items.append(Change(kind, path + b"/", entry if kind == DELETED else None,
                            entry if kind == ADDED else None))
    for child in children:
        child_path = path + b"/" + child.name
        if not _within(child_path, filters, child.kind == DIR):
            continue
        if child.kind == DIR:
            items.append(lambda c=child, p=child_path: _side(load, c, p, kind, filters))
        else:
            items.append(Change(kind, child_path, child if kind == DELETED else None,
                                child if kind == ADDED else None))
    return items
