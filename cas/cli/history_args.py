"""Arguments shared by the history commands: refs followed by paths.

As in git, ``cas log X`` takes X as a revision if it names one, else as a
path if one exists by that name; anything else is an error, never an
empty answer. After ``--`` every argument is a path.
"""

from __future__ import annotations

import os

import click

from ..errors import (AmbiguousArgument, CasError, HistoryTooShort, NoSnapshotsYet,
                      PathNotInSnapshot, RefIsAPath, RefNotFound)
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
            refs.append(resolve_snapshot(history, rest[0]))
        except RefNotFound as e:
            failed[rest[0]] = e
            break
        rest.pop(0)
    trees = [s.tree for s in refs] or _head_tree(history)
    for arg in rest:
        if _is_path(history, arg, trees):
            continue
        error = failed.get(arg)
        if isinstance(error, (HistoryTooShort, NoSnapshotsYet)):
            raise error
        if len(refs) == max_refs:  # no revision could come here: a path, not found
            if len(refs) == 1:
                raise missing_path(history, refs[0], arg)
            raise PathNotInSnapshot(arg, " or ".join(s.oid.short for s in refs))
        raise AmbiguousArgument(arg)
    return refs, [tree_path(p) for p in [*rest, *after]]


def resolve_snapshot(history: History, spec: str) -> Snapshot:
    """``history.resolve``, saying plainly when HEAD's branch has no snapshot yet."""
    try:
        return history.resolve(spec)
    except RefNotFound:
        if spec.strip().split("~")[0] in ("", "HEAD"):
            branch = history.refs.head_branch()
            if history.branch_head(branch) is None:
                raise NoSnapshotsYet(branch) from None
        raise


def resolve_named(history: History, spec: str, command: str) -> Snapshot:
    """The snapshot an argument that must name one names; an existing path
    there is named as a path, so the user sees what was misread."""
    try:
        return resolve_snapshot(history, spec)
    except RefNotFound as e:
        if type(e) is RefNotFound and os.path.lexists(spec):
            raise RefIsAPath(spec, command) from None
        raise


# How many older snapshots a missing path is looked for in: the search
# runs only on the way to an error, and must stay quick on long histories.
_LAST_SEEN_SEARCH = 2000


def missing_path(history: History, snap: Snapshot, given: str) -> PathNotInSnapshot:
    """The error for a path ``snap`` lacks, naming the path as the user gave
    it and the newest older snapshot of its history that still has it."""
    rel = tree_path(given)
    last_tree = snap.tree
    for n, entry in enumerate(history.lineage(snap)):
        if n > _LAST_SEEN_SEARCH:
            break
        try:
            older = history.load_snapshot(entry.oid)
            if older.tree == last_tree:
                continue  # the same tree: no need to look again
            last_tree = older.tree
            history.entry_at(older.tree, rel)
        except CasError:  # not there, or unreadable: the hint is only a hint
            continue
        return PathNotInSnapshot(given, snap.oid.short, older.oid.short)
    return PathNotInSnapshot(given, snap.oid.short)


def check_paths(history: History, snap: Snapshot, given: list[str]) -> None:
    """Refuse, before anything is written, a path that ``snap`` does not have."""
    for path in given:
        rel = tree_path(path)
        if not rel:
            continue
        try:
            history.entry_at(snap.tree, rel)
        except PathNotInSnapshot:
            raise missing_path(history, snap, path) from None


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
