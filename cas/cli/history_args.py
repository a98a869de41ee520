"""Arguments shared by the history commands: refs followed by paths."""

from __future__ import annotations

import os

from ..errors import CasError
from ..model.history import History
from ..model.snapshot import Snapshot


def split_refs(history: History, args: tuple[str, ...], max_refs: int) -> tuple[list[Snapshot], list[bytes]]:
    """Leading arguments that name snapshots, then paths (as after '--' in git)."""
    refs: list[Snapshot] = []
    rest = list(args)
    while rest and len(refs) < max_refs:
        try:
            refs.append(history.resolve(rest[0]))
        except CasError:
            break
        rest.pop(0)
    return refs, [tree_path(p) for p in rest]


def tree_path(path: str) -> bytes:
    """A user-given path as a '/'-separated path relative to the tree root."""
    raw = os.fsencode(path).strip(b"/")
    parts = [p for p in raw.split(b"/") if p and p != b"."]
    return b"/".join(parts)


def source_relative(source: str, path: str) -> bytes:
    """A path on disk as a path inside the tracked tree, if it lies there."""
    full = os.path.abspath(path)
    if full == source or full.startswith(source.rstrip("/") + "/"):
        return tree_path(os.path.relpath(full, source))
    return tree_path(path)
