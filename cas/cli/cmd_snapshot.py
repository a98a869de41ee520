from __future__ import annotations

import os

import click

from ..errors import EXIT_USAGE, ArgumentsConflict, SourceError, counted
from ..ops.scan import ScanPolicy
from ..ops.snapshot import SnapshotResult, take_snapshot
from ..ops.worktree import inside, plain_branch_name, resolve_source, tracked_trees
from .history_args import place_in
from .main import Context, branch_option, json_option, pass_ctx
from .output import (
    byte_progress,
    error_line,
    human_bytes,
    info,
    out_json,
    out_line,
    path_text,
    shown,
    wants_progress,
    warn,
)
from .timespec import TimeParam


@click.command("snapshot")
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("-m", "--message", default="", help="What this snapshot is.")
@branch_option("Branch to record on (default: the one tracking PATH).")
@click.option("--allow-empty", is_flag=True, help="Record a snapshot even if nothing changed.")
@click.option("--sqlite-backup/--no-sqlite-backup", default=True, show_default=True,
              help="Copy SQLite databases through SQLite's online backup API, as cas watch "
                   "does: a consistent copy even while another process writes, and their "
                   "-wal, -shm and -journal files left out. --no-sqlite-backup copies their "
                   "bytes as they are, side files included.")
@click.option("--time", "time_ns", type=TimeParam(), metavar="TIME",
              help="Record TIME (ISO 8601 or '3 days ago') as the snapshot's time instead of "
                   "now: for importing old copies.")
@json_option("Print the snapshot as JSON.")
@pass_ctx
def command(ctx: Context, paths: tuple[str, ...], message: str, branch: str | None,
            allow_empty: bool, sqlite_backup: bool, time_ns: int | None, as_json: bool) -> int:
    """Record the state of a directory, or of some paths in it, as a snapshot.

    With no PATH, the tree the store tracks. PATHs inside a tracked tree
    record a snapshot of its branch where only those paths are taken from
    disk and everything else is as in the branch's last snapshot (git's
    'commit -- PATH'); a PATH gone from disk is recorded as deleted. A
    directory outside every tracked tree is recorded on a branch of its own
    (named after it, or -b). Only files whose size, times or inode changed
    since the last snapshot of the branch are read again; unchanged
    directories are shared with earlier snapshots. Honours .casignore
    (gitignore syntax) at the top of the tree.

    \b
    Examples:
      cas snapshot -m "after the import" notes/ db/memory.db
    """
    chosen = branch
    with ctx.opened() as history:
        source, branch, named = _where(history, paths, branch)
        with byte_progress("snapshot", None, wants_progress(ctx.quiet)) as advance:
            result = take_snapshot(history, source, branch, message, allow_empty, advance,
                                   ScanPolicy(sqlite_backup=sqlite_backup), time_ns=time_ns,
                                   paths=named,
                                   on_total=advance.set_total if advance is not None else None)
    scan = result.scan
    for p in scan.problems:
        (error_line if p.severity == "error" else warn)(f"{path_text(p.path)}: {p.message}")
    if as_json:
        _print_json(result, branch, source)
    else:
        _print_summary(ctx, result, branch, source, message, chosen)
    errors = [p for p in scan.problems if p.severity == "error"]
    if errors:
        error_line(f"{counted(len(errors), 'path')} could not be read and "
                   f"{'is' if len(errors) == 1 else 'are'} not in the snapshot")
        return EXIT_USAGE
    return 0


def _where(history, paths: tuple[str, ...], branch: str | None) -> tuple[str, str, list[bytes] | None]:
    """(source, branch, paths inside it to take from disk, or None for all of it).

    A path inside a tracked tree (the one holding the current directory
    first) names part of that tree; a tree itself, or a directory in none,
    is recorded whole, on the branch that tracks it (a new one if none does).
    """
    if not paths:
        source, branch = resolve_source(history, None, branch)
        return source, branch, None
    full = [os.path.abspath(p) for p in paths]
    for tree in place_in(tracked_trees(history)).trees:
        rel = [inside(tree, p) for p in full]
        if any(r is None for r in rel) or rel == [""]:
            continue
        source, tree_branch = resolve_source(history, tree, None)
        head = history.branch_head(branch) if branch is not None else None
        if branch is None or branch == tree_branch or (head is not None and head.source == tree):
            return source, branch or tree_branch, [os.fsencode(r) for r in rel if r is not None]
    if len(paths) > 1:
        raise ArgumentsConflict("paths to snapshot together must lie in one tracked tree; "
                                f"{paths[0]} and the rest do not")
    if not os.path.isdir(full[0]):
        raise SourceError(paths[0], "is not a directory inside a tracked tree"
                          if os.path.lexists(full[0]) else "no such directory")
    source, branch = resolve_source(history, full[0], branch)
    return source, branch, None


def _print_json(result: SnapshotResult, branch: str, source: str) -> None:
    snap, scan = result.snapshot, result.scan
    out_json({"created": snap is not None, "branch": branch, "source": source,
              "id": snap.stored_id.hex if snap else (result.parent.stored_id.hex if result.parent else None),
              "paths": [path_text(os.fsdecode(p)) for p in result.paths] or None,
              "deleted": [path_text(os.fsdecode(p)) for p in result.deleted],
              "files": scan.files, "read_files": scan.read_files, "bytes": scan.bytes,
              "stats": snap.stats if snap else None,
              "problems": [{"path": path_text(p.path), "message": p.message,
                            "severity": p.severity} for p in scan.problems]})


def _print_summary(ctx: Context, result: SnapshotResult, branch: str, source: str,
                   message: str, chosen: str | None) -> None:
    snap, scan, parent = result.snapshot, result.scan, result.parent
    what = _paths_text(result)
    if snap is None:
        where = f" in {what}" if what else ""
        info(f"nothing changed{where} on {branch} since {parent.stored_id.short if parent else 'nothing'}; "
             "no snapshot recorded", False)
        return
    plain = plain_branch_name(source)
    if chosen is None and parent is None and not result.paths and branch.startswith(plain + "-"):
        info(f"branch {plain} tracks another directory: {source} is recorded on "
             f"branch {branch}", ctx.quiet)
    out_line(f"{snap.stored_id.hex}")
    s = snap.stats
    base = f"the rest as in {parent.stored_id.short}" if parent else "nothing else"
    taken = f" (from disk: {what}; {base})" if what else ""
    info(f"[{branch} {snap.stored_id.short}] {message or '(no message)'}{taken}: "
         f"{counted(s['files'], 'file')}, {human_bytes(s['bytes'])}; {scan.read_files} read, "
         f"{counted(s['new_objects'], 'new object')}, {human_bytes(s['stored_bytes'])} stored",
         ctx.quiet)


def _paths_text(result: SnapshotResult, shown_at_most: int = 3) -> str:
    """The named paths as the summary names them, deleted ones marked."""
    if not result.paths:
        return ""
    deleted = set(result.deleted)
    names = [shown(p) + (" deleted" if p in deleted else "") for p in result.paths]
    more = len(names) - shown_at_most
    return ", ".join(names[:shown_at_most]) + (f" and {more} more" if more > 0 else "")
