from __future__ import annotations

import click

from ..errors import EXIT_USAGE, counted
from ..ops.scan import ScanPolicy
from ..ops.snapshot import take_snapshot
from ..ops.worktree import plain_branch_name, resolve_source
from .main import Context, pass_ctx
from .timespec import TimeParam
from .output import byte_progress, error_line, human_bytes, info, out_json, out_line, path_text, warn, wants_progress


@click.command("snapshot")
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("-m", "--message", default="", help="What this snapshot is.")
@click.option("-b", "--branch", help="Branch to record on (default: the one tracking PATH).")
@click.option("--allow-empty", is_flag=True, help="Record a snapshot even if nothing changed.")
@click.option("--sqlite-backup/--no-sqlite-backup", default=True, show_default=True,
              help="Copy SQLite databases through SQLite's online backup API, as cas watch "
                   "does: a consistent copy even while another process writes, and their "
                   "-wal, -shm and -journal files left out. --no-sqlite-backup copies their "
                   "bytes as they are, side files included.")
@click.option("--time", "time_ns", type=TimeParam(), metavar="TIME",
              help="Record TIME (ISO 8601 or '3 days ago') as the snapshot's time instead of "
                   "now: for importing old copies.")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
@pass_ctx
def command(ctx: Context, path: str | None, message: str, branch: str | None,
            allow_empty: bool, sqlite_backup: bool, time_ns: int | None, as_json: bool) -> int:
    """Record the state of a directory as a snapshot.

    PATH defaults to the tree the store tracks. Only files whose size, times
    or inode changed since the last snapshot of the branch are read again;
    unchanged directories are shared with earlier snapshots. Honours
    .casignore (gitignore syntax) at the top of PATH.
    """
    history = ctx.open_history()
    chosen = branch
    with history.store:
        source, branch = resolve_source(history, path, branch)
        with byte_progress("snapshot", None, wants_progress(ctx.quiet)) as advance:
            result = take_snapshot(history, source, branch, message, allow_empty, advance,
                                   ScanPolicy(sqlite_backup=sqlite_backup), time_ns=time_ns)
    scan = result.scan
    for p in scan.problems:
        (error_line if p.severity == "error" else warn)(f"{path_text(p.path)}: {p.message}")
    snap = result.snapshot
    if as_json:
        out_json({"created": snap is not None, "branch": branch, "source": source,
                  "id": snap.oid.hex if snap else (result.parent.oid.hex if result.parent else None),
                  "files": scan.files, "read_files": scan.read_files, "bytes": scan.bytes,
                  "stats": snap.stats if snap else None,
                  "problems": [{"path": path_text(p.path), "message": p.message,
                                "severity": p.severity} for p in scan.problems]})
    elif snap is None:
        info(f"nothing changed on {branch} since {result.parent.oid.short}; no snapshot recorded",
             False)
    else:
        plain = plain_branch_name(source)
        if chosen is None and result.parent is None and branch.startswith(plain + "-"):
            info(f"branch {plain} tracks another directory: {source} is recorded on "
                 f"branch {branch}", ctx.quiet)
        out_line(f"{snap.oid.hex}")
        s = snap.stats
        info(f"[{branch} {snap.oid.short}] {message or '(no message)'}: {counted(s['files'], 'file')}, "
             f"{human_bytes(s['bytes'])}; {scan.read_files} read, "
             f"{counted(s['new_objects'], 'new object')}, {human_bytes(s['stored_bytes'])} stored",
             ctx.quiet)
    errors = [p for p in scan.problems if p.severity == "error"]
    if errors:
        error_line(f"{counted(len(errors), 'path')} could not be read and "
                   f"{'is' if len(errors) == 1 else 'are'} not in the snapshot")
        return EXIT_USAGE
    return 0
