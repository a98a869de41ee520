"""Differences between two trees: added, deleted, modified, type-changed paths.

Subtrees with equal ids are skipped without being read (Merkle), so the
cost of a diff follows the size of the change, not of the tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from ..objectid import ObjectId
from ..model.tree import DIR, Tree, TreeEntry

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
    for f in filters:
        if path == f or path.startswith(f + b"/") or (is_dir and f.startswith(path + b"/")):
            return True
    return False


def diff_trees(load_a: TreeLoader, a: ObjectId | None, load_b: TreeLoader, b: ObjectId | None,
               filters: list[bytes] | None = None, prefix: bytes = b"") -> Iterator[Change]:
    if a == b:
        return
    old = {e.name: e for e in load_a(a).entries} if a else {}
    new = {e.name: e for e in load_b(b).entries} if b else {}
    for name in sorted(old.keys() | new.keys()):
        path = prefix + name
        o, n = old.get(name), new.get(name)
        is_dir = (o is not None and o.kind == DIR) or (n is not None and n.kind == DIR)
        if not _within(path, filters, is_dir):
            continue
        if o is not None and n is not None and _same(o, n):
            continue
        if o is not None and n is not None and o.kind == DIR and n.kind == DIR:
            yield from diff_trees(load_a, o.oid, load_b, n.oid, filters, path + b"/")
        elif o is not None and n is not None and o.kind != n.kind:
            if DIR not in (o.kind, n.kind):
                yield Change(TYPE_CHANGED, path, o, n)
            else:
                yield from _side(load_a, o, path, DELETED, filters)
                yield from _side(load_b, n, path, ADDED, filters)
        elif o is None:
            yield from _side(load_b, n, path, ADDED, filters)
        elif n is None:
            yield from _side(load_a, o, path, DELETED, filters)
        else:
            yield Change(MODIFIED, path, o, n)


def _side(load: TreeLoader, entry: TreeEntry, path: bytes, kind: str, filters) -> Iterator[Change]:
    """An entry present on one side only: a file, or every file below a directory."""
    if entry.kind != DIR:
        yield Change(kind, path, entry if kind == DELETED else None, entry if kind == ADDED else None)
        return
    children = load(entry.oid).entries
    if not children and _within(path, filters, False):
        yield Change(kind, path + b"/", entry if kind == DELETED else None,
                     entry if kind == ADDED else None)
    for child in children:
        child_path = path + b"/" + child.name
        if _within(child_path, filters, child.kind == DIR):
            yield from _side(load, child, child_path, kind, filters)
