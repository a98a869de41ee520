"""Arguments shared by the history commands: refs followed by paths.

As in git, ``cas log X`` takes X as a revision if it names one, else as a
path if one exists by that name; anything else is an error, never an
empty answer. After ``--`` every argument is a path.
"""

from __future__ import annotations

import os

import click

from ..errors import AmbiguousArgument, HistoryTooShort, PathNotInSnapshot, RefNotFound
from ..model.history import History
from ..model.snapshot import Snapshot

PATHS_AFTER_DASHDASH = "cas.paths_after_dashdash"


class RefsThenPaths(click.Command):
    """A command whose ``--`` ends revisions: the arguments after it are
    kept in ``ctx.meta`` (click would drop the ``--`` itself)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta[PATHS_AFTER_DASHDASH] = args[cut + 1:]
            args = args[:cut]
        return super().parse_args(ctx, args)


def paths_after_dashdash() -> list[str]:
    return click.get_current_context().meta.get(PATHS_AFTER_DASHDASH, [])


def split_refs(history: History, args: tuple[str, ...], max_refs: int,
               after: list[str] | tuple[str, ...] = ()) -> tuple[list[Snapshot], list[bytes]]:
    """Leading arguments that name snapshots, then paths; ``after`` came after '--'.

    Before '--', an argument that names no snapshot must be a path that
    exists on disk or in one of the snapshots named (HEAD when none is):
    ``cas log NOSUCH`` is an error, not a filter that matches nothing.
    """
    refs: list[Snapshot] = []
    rest = list(args)
    failed: dict[str, RefNotFound] = {}
    while rest and len(refs) < max_refs:
        try:
            refs.append(history.resolve(rest[0]))
        except RefNotFound as e:
            failed[rest[0]] = e
            break
        rest.pop(0)
    trees = [s.tree for s in refs] or _head_tree(history)
    for arg in rest:
        if _is_path(history, arg, trees):
            continue
        error = failed.get(arg)
        if isinstance(error, HistoryTooShort):
            raise error
        if len(refs) == max_refs:  # no revision could come here: a path, not found
            raise PathNotInSnapshot(arg, " or ".join(s.oid.short for s in refs))
        raise AmbiguousArgument(arg)
    return refs, [tree_path(p) for p in [*rest, *after]]


def _head_tree(history: History) -> list:
    try:
        return [history.resolve("HEAD").tree]
    except RefNotFound:
        return []


def _is_path(history: History, arg: str, trees: list) -> bool:
    if os.path.lexists(arg):
        return True
    rel = tree_path(arg)
    for tree in trees:
        try:
            history.entry_at(tree, rel)
            return True
        except PathNotInSnapshot:
            continue
    return False


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
