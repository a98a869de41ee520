"""Arguments shared by the history commands: refs followed by paths.

As in git, ``cas log X`` takes X as a revision if it names one, else as a
path if one exists by that name; anything else is an error, never an
empty answer. After ``--`` every argument is a path.

Paths are placed in the tracked tree as git places them: relative to the
current directory when that lies inside the tree, absolute ones made
relative to it, those outside it refused (``given_path``). The PATH of
``SNAP:PATH`` is from the tree's root (``tree_path``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import click

from ..errors import (
    AmbiguousArgument,
    CasError,
    HistoryTooShort,
    NoSnapshotsYet,
    PathNotInSnapshot,
    PathOutsideTree,
    RefIsAModel,
    RefIsAPath,
    RefNotFound,
)
from ..model.history import History
from ..model.refs import MODELS
from ..model.snapshot import Snapshot
from ..ops.worktree import inside, tracked_trees
from .main import Context

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
        if isinstance(error, (HistoryTooShort, NoSnapshotsYet, RefIsAModel)):
            raise error
        if len(refs) == max_refs:  # no revision could come here: a path, not found
            if len(refs) == 1:
                raise missing_path(history, refs[0], arg)
            raise PathNotInSnapshot(arg, " or ".join(s.stored_id.short for s in refs))
        raise AmbiguousArgument(arg)
    return refs, [given_path(p) for p in [*rest, *after]]


def resolve_snapshot(history: History, spec: str) -> Snapshot:
    """``history.resolve``, saying plainly when HEAD's branch has no snapshot
    yet, or when the name is a model's (models have their own history)."""
    try:
        return history.resolve(spec)
    except RefNotFound:
        if spec.strip().split("~")[0] in ("", "HEAD"):
            branch = history.refs.head_branch()
            if history.branch_head(branch) is None:
                raise NoSnapshotsYet(branch) from None
        elif _is_model_name(history, spec):
            raise RefIsAModel(spec) from None
        raise


def _is_model_name(history: History, spec: str) -> bool:
    try:
        return history.refs.get(MODELS + spec) is not None
    except CasError:   # not a valid ref name: not a model's either
        return False


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
    rel = given_path(given)
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
        return PathNotInSnapshot(given, snap.stored_id.short, older.stored_id.short)
    return PathNotInSnapshot(given, snap.stored_id.short)


def check_paths(history: History, snap: Snapshot, given: list[str]) -> list[bytes]:
    """The given paths in the tree; refuses, before anything is written, a
    path that ``snap`` does not have."""
    paths = []
    for path in given:
        rel = given_path(path)
        paths.append(rel)
        if not rel:
            continue
        try:
            history.entry_at(snap.tree, rel)
        except PathNotInSnapshot:
            raise missing_path(history, snap, path) from None
    return paths


def _head_tree(history: History) -> list:
    try:
        return [history.resolve("HEAD").tree]
    except RefNotFound:
        return []


def _is_path(history: History, arg: str, trees: list) -> bool:
    if os.path.lexists(arg):
        return True
    rel = given_path(arg)
    for tree in trees:
        try:
            history.entry_at(tree, rel)
            return True
        except PathNotInSnapshot:
            continue
    return False


@dataclass(frozen=True)
class PathPlace:
    """Where paths given on the command line lie: the trees the store
    tracks, the one holding the current directory first, and the current
    directory's place inside that one ('' at its root; None when it is
    inside none of them)."""

    trees: tuple[str, ...]
    here: str | None


def given_path(path: str) -> bytes:
    """A path given for the tracked tree, as a '/'-separated path from its root.

    As in git: relative to the current directory when that lies inside the
    tree, else to the tree's root (a store on another disk, run from
    elsewhere); an absolute path inside the tree is made relative to it,
    and one outside it is refused.
    """
    return _to_tree(path, _current_place())


def tree_path(path: str) -> bytes:
    """The PATH of SNAP:PATH: from the tree's root, as git reads it, or from
    the current directory when it starts with './' or '../'."""
    if path in (".", "..") or path.startswith(("./", "../")):
        return given_path(path)
    return _plain(path)


def source_relative(source: str, path: str) -> bytes:
    """A path given for the tree at ``source``, as a path from its root."""
    return _to_tree(path, place_in((source,)))


def place_in(tracked: Iterable[str]) -> PathPlace:
    """Where the current directory lies among the ``tracked`` trees."""
    trees = list(tracked)
    try:
        cwd = os.getcwd()
    except OSError:  # the current directory was removed
        return PathPlace(tuple(trees), None)
    for i, tree in enumerate(trees):
        here = inside(tree, cwd)
        if here is not None:
            return PathPlace((tree, *trees[:i], *trees[i + 1:]), here)
    return PathPlace(tuple(trees), None)


def _current_place() -> PathPlace | None:
    """The running command's place, worked out once; None outside a command
    that opened a history (the paths are then taken from the root)."""
    click_ctx = click.get_current_context(silent=True)
    obj = click_ctx.find_object(Context) if click_ctx is not None else None
    if obj is None or obj.history is None:
        return None
    if obj.path_place is None:
        obj.path_place = place_in(tracked_trees(obj.history))
    return obj.path_place


def _to_tree(path: str, place: PathPlace | None) -> bytes:
    if place is None:
        return _plain(path)
    if os.path.isabs(path):
        for tree in place.trees:
            rel = inside(tree, path)
            if rel is not None:
                return _plain(rel)
        raise PathOutsideTree(path, place.trees[0] if place.trees else None)
    joined = os.path.normpath(os.path.join(place.here or "", path))
    if joined == ".." or joined.startswith("../"):
        raise PathOutsideTree(path, place.trees[0] if place.trees else None)
    return _plain(joined)


def _plain(path: str) -> bytes:
    raw = os.fsencode(path).strip(b"/")
    parts = [p for p in raw.split(b"/") if p and p != b"."]
    return b"/".join(parts)
