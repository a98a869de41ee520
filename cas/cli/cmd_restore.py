from __future__ import annotations

import os

import click

from ..errors import EXIT_PROBLEM_FOUND, counted
from ..model.tree import DIR, FILE
from ..ops.checkout import checkout as do_checkout
from ..ops.checkout import place_in_tree, restore_to
from ..ops.restore import Overwrite, OwnerPolicy, RestoreReport
from ..ops.worktree import resolve_source
from .complete import complete_ref, complete_ref_then_paths, complete_snapshot_paths
from .history_args import (
    RefsThenPaths,
    check_paths,
    paths_after_dashdash,
    resolve_named,
    resolve_snapshot,
    source_relative,
    split_refs,
)
from .main import Context, at_option, branch_option, json_option, pass_ctx
from .output import byte_progress, error_line, human_bytes, info, out_json, path_text, wants_progress
from .timespec import show_time


@click.command("restore", cls=RefsThenPaths)
@click.argument("args", nargs=-1, shell_complete=complete_ref_then_paths)
@click.option("--to", "target", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Directory to write into (created if missing).")
@at_option("Use the newest snapshot at or before TIME (ISO 8601 or '2h ago').")
@branch_option("Branch for --at (default: HEAD's).")
@click.option("--numeric-owner", is_flag=True,
              help="As root, restore owners by the recorded uid/gid, not by user and group name.")
@click.option("--overwrite", type=click.Choice([m.value for m in Overwrite]), default="always",
              show_default=True,
              help="Existing files: replace them, replace only those not as recorded "
                   "(size, mtime and mode, else content), or keep them.")
@click.option("-f", "--force", is_flag=True,
              help="Inside the tracked tree, overwrite even changes that are in no snapshot.")
@json_option("Print what was restored as JSON.")
@pass_ctx
def restore(ctx: Context, args: tuple[str, ...], target: str, at_ns: int | None,
            branch: str | None, numeric_owner: bool, overwrite: str, force: bool,
            as_json: bool) -> int:
    """Write a snapshot, or some paths of it, into a directory.

    cas restore SNAP [PATH...] --to DIR, or cas restore --at TIME [PATH...] --to DIR.
    Modes, mtimes and symlinks are restored as recorded; existing files are
    replaced through a temp file and a rename. Run as root, owners are
    restored too (by name, or by number with --numeric-owner); otherwise
    set-user-ID and set-group-ID bits are dropped. A path that conflicts
    with the target (a file where the snapshot has a directory, a symbolic
    link on the way) is reported and skipped, and the rest is restored
    (exit 1). Into the tracked tree (or a directory in it), a file whose
    content is in no snapshot is not overwritten: the restore refuses (exit
    2, naming the files) unless --force or --overwrite never. Into the
    tracked tree, paths are written where they live in it (--to . from a
    subdirectory means the tree, as git restore does); a target inside the
    store is refused.

    \b
    Examples:
      cas restore HEAD~1 notes/todo.md --to . --overwrite if-changed
    """
    with ctx.opened() as history:
        if at_ns is not None:
            snap = history.at(branch, at_ns, show_time)
            given = [*args, *paths_after_dashdash()]
        else:
            if not args:
                raise click.UsageError("name a snapshot to restore (or use --at TIME)")
            snap = resolve_named(history, args[0], "cas restore")
            split_refs(history, args, 1, paths_after_dashdash())
            given = [*args[1:], *paths_after_dashdash()]
        paths = check_paths(history, snap, given)
        into, part = place_in_tree(history, target, _cwd())
        if part is not None and not paths:
            history.entry_at(snap.tree, part, snap.stored_id.short)   # refused if not there
            paths = [part]
        size, files = _restore_size(history, snap, paths) if wants_progress(ctx.quiet) else (None, None)
        with byte_progress("restore", size, wants_progress(ctx.quiet), files=files) as advance:
            report = restore_to(history, snap, into, paths or None, force=force,
                                overwrite=Overwrite(overwrite), on_file=advance,
                                owners=OwnerPolicy.default(numeric_owner))
    if as_json:
        out_json({"snapshot": snap.stored_id.hex, "time": snap.time_iso, "target": target,
                  **report.figures(), "skipped_paths": [path_text(p) for p in report.skipped],
                  "problems": _problem_docs(report.problems)})
        return EXIT_PROBLEM_FOUND if report.problems else 0
    for p in report.problems:
        error_line(f"{path_text(p.path)}: {p.message}")
    info(f"restored {snap.stored_id.short} ({show_time(snap.time_ns)}): {counted(report.files, 'file')}, "
         f"{counted(report.dirs, 'dir')}, {counted(report.symlinks, 'symlink')}, "
         f"{human_bytes(report.bytes)} into {target}"
         + (f", {counted(len(report.skipped), 'existing file')} kept" if report.skipped else ""),
         ctx.quiet)
    return EXIT_PROBLEM_FOUND if report.problems else 0


@click.command("checkout")
@click.argument("spec", metavar="SNAP", shell_complete=complete_ref)
@click.argument("paths", nargs=-1, shell_complete=complete_snapshot_paths)
@click.option("-f", "--force", is_flag=True, help="Overwrite and delete even changes in no snapshot.")
@json_option("Print what was changed as JSON.")
@pass_ctx
def checkout(ctx: Context, spec: str, paths: tuple[str, ...], force: bool, as_json: bool) -> int:
    """Make the working tree (or some paths of it) match a snapshot.

    Refuses (exit 2, naming the files) when that would overwrite or delete
    content that is not in the store, unless --force.

    \b
    Examples:
      cas checkout HEAD~1 notes/todo.md
    """
    with ctx.opened() as history:
        snap = resolve_snapshot(history, spec)
        source, branch = resolve_source(history, None, None)
        rel = [source_relative(source, p) for p in paths]
        report = do_checkout(history, snap, source, branch, rel or None, force)
    written = report.restore or RestoreReport()   # nothing to write: nothing written
    if as_json:
        out_json({"snapshot": snap.stored_id.hex, "changed": len(report.changes), "removed": report.removed,
                  "written": written.figures(), "problems": _problem_docs(written.problems)})
        return EXIT_PROBLEM_FOUND if written.problems else 0
    for p in written.problems:
        error_line(f"{path_text(p.path)}: {p.message}")
    info(f"checked out {snap.stored_id.short}: {counted(len(report.changes), 'path')} changed "
         f"({counted(written.files, 'file')} written, {report.removed} removed)", ctx.quiet)
    return EXIT_PROBLEM_FOUND if written.problems else 0


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:   # removed meanwhile: no place of its own
        return None


def _restore_size(history, snap, paths: list[bytes]) -> tuple[int | None, int | None]:
    """Bytes and files a restore writes, for its progress bar: the snapshot's
    recorded figures, or the named paths' sizes from the tree."""
    if not paths or b"" in paths:
        return snap.stats.get("bytes"), snap.stats.get("files")
    size = files = 0
    for path in paths:
        entry = history.entry_at(snap.tree, path)
        below = [(path, entry)] if entry is None or entry.kind != DIR else history.walk(entry.oid)
        for _, e in below:
            if e is not None and e.kind == FILE:
                size, files = size + e.size, files + 1
    return size, files


def _problem_docs(problems) -> list[dict]:
    return [{"path": path_text(p.path), "message": p.message, "severity": p.severity}
            for p in problems]


commands = [restore, checkout]
