from __future__ import annotations

import os

import click

from ..errors import counted
from ..model.refs import check_ref_name
from ..ops.purge import PurgeReport, purge
from .cmd_policy import require_branch
from .history_args import given_path
from .main import Context, json_option, pass_ctx
from .output import human_bytes, info, out_json, out_line, path_text, warn
from .timespec import show_time


@click.command("purge")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-b", "--branch", help="Purge from this branch's snapshots only (default: every "
                                     "snapshot of every branch and tag).")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would change; change nothing.")
@json_option()
@pass_ctx
def command(ctx: Context, paths: tuple[str, ...], branch: str | None, dry_run: bool,
            as_json: bool) -> None:
    """Remove files or directories from history, and their bytes from the store.

    Every snapshot holding a PATH is recorded again without it (same time,
    message and branch; tags and branches move to the new records, later
    snapshots get the new parents) and the old records are forgotten. Then
    everything no snapshot reaches is removed at once, whatever gc's grace
    period (objects stored by 'cas add' alone included), every pack that
    held some of it is rewritten, and the index is rewritten. Content a
    kept snapshot holds under another path stays, and is named. Model
    versions are left alone ('cas model rm' removes a model). Takes the
    store's exclusive lock. The disk itself may keep old blocks: see the
    README.

    \b
    Examples:
      cas purge notes/secret.txt --dry-run
      cas purge memory/ --branch main
    """
    if branch is not None:
        check_ref_name(branch)
    with ctx.opened(exclusive=not dry_run) as history:
        if branch is not None:
            require_branch(history, branch)   # a typo must not purge nothing and collect all
        report = purge(history, [given_path(p) for p in paths], branch, dry_run)
    if as_json:
        out_json(_report_doc(report))
        return
    _print_report(report, ctx.quiet)


def _print_report(r: PurgeReport, quiet: bool) -> None:
    would = "would " if r.dry_run else ""
    for p in r.absent:
        info(f"{_shown(p)}: in no recorded snapshot{_of(r.branch)}", quiet)
    for rw in r.rewritten:
        what = ", ".join(_shown(p) for p in rw.paths) if rw.paths else "(new parent)"
        out_line(f"{would}rewrite {rw.old.stored_id.short} -> {rw.new_id.short}  "
                 f"{rw.old.branch}  {show_time(rw.old.time_ns)}  {what}")
    for ref, (old, new) in r.moved.items():
        out_line(f"{would}move {ref} {old.short} -> {new.short if new else '?'}")
    for k in r.kept:
        warn(f"{_shown(k.path)}: its content stays, still held by snapshot "
             f"{k.snapshot.short} as {_shown(k.elsewhere)}")
    for snap, p in r.skipped_models:
        warn(f"{_shown(p)}: left in model {snap.branch.removeprefix('models/')} "
             f"({snap.stored_id.short}); 'cas model rm' removes a model")
    if r.gc is not None:
        g = r.gc
        out_line(f"removed {counted(g.removed_objects, 'object')} ({human_bytes(g.removed_bytes)}; "
                 f"{counted(g.removed_packs, 'pack')}, {g.repacked_packs} of them rewritten "
                 f"without them), {counted(g.removed_temp_files, 'temp file')}, "
                 f"{counted(r.stat_records, 'stat cache record')}")
    if r.index_bytes is not None:
        info(f"index rewritten: {human_bytes(r.index_bytes[0])} -> {human_bytes(r.index_bytes[1])}",
             quiet)


def _shown(path: bytes) -> str:
    return path_text(os.fsdecode(path))


def _of(branch: str | None) -> str:
    return f" of branch {branch}" if branch else ""


def _report_doc(r: PurgeReport) -> dict:
    return {
        "dry_run": r.dry_run, "branch": r.branch, "paths": [_shown(p) for p in r.paths],
        "absent": [_shown(p) for p in r.absent],
        "rewritten": [{"old": rw.old.stored_id.hex, "new": rw.new_id.hex, "branch": rw.old.branch,
                       "time_ns": rw.old.time_ns, "paths": [_shown(p) for p in rw.paths]}
                      for rw in r.rewritten],
        "moved": {ref: {"old": old.hex, "new": new.hex if new else None}
                  for ref, (old, new) in r.moved.items()},
        "kept": [{"path": _shown(k.path), "elsewhere": _shown(k.elsewhere),
                  "snapshot": k.snapshot.hex} for k in r.kept],
        "skipped_models": [{"snapshot": s.stored_id.hex, "path": _shown(p)}
                           for s, p in r.skipped_models],
        "stat_records": r.stat_records,
        "gc": r.gc.to_doc(False) if r.gc is not None else None,
        "index_bytes": list(r.index_bytes) if r.index_bytes else None,
    }
