"""cas status: what changed in the working tree since the snapshot it shows."""

from __future__ import annotations

import click

from ..ops.checkout import status as worktree_status
from ..ops.worktree import WorktreeState, resolve_source
from .main import Context, json_option, pass_ctx
from .output import out_json, out_line, print_changes, shown


@click.command("status")
@json_option()
@click.option("--watch", "watcher", is_flag=True,
              help="Instead: whether a watcher runs on this tree (as 'cas watch --status').")
@pass_ctx
def status(ctx: Context, as_json: bool, watcher: bool) -> int:
    """Show what changed in the working tree since the snapshot it shows.

    That is the branch head (HEAD), or the snapshot a whole-tree 'cas
    checkout' made it match since then: status then says "working tree at
    SNAP (branch B is at HEAD)". Unchanged files are recognised from their
    stat alone, so an unchanged tree answers without reading file contents.

    \b
    Examples:
      cas checkout HEAD~4 && cas status
    """
    if watcher:
        from .cmd_watch import report_status
        with ctx.opened() as history:
            source, _ = resolve_source(history, None, None)
            store_path, sealer = history.store.path, history.store.sealer
        return report_status(store_path, source, as_json, sealer)
    with ctx.opened() as history:
        report = worktree_status(history)
    if as_json:
        out_json(report.to_doc())
        return 0
    where = _where(report.state)
    if where:
        out_line(where + ("" if report.changes else ": nothing changed"))
    print_changes(report.changes)
    return 0


def _where(state: WorktreeState) -> str:
    """The first line: which snapshot the tree shows, as git's 'HEAD detached at'."""
    branch, head, shows = shown(state.branch), state.branch_head, state.shows
    if shows is None:
        return f"on branch {branch}, no snapshots yet"
    if state.interrupted:
        return (f"a checkout of {shows.stored_id.short} was interrupted: the working tree is partly at it "
                f"(branch {branch} is at {head.stored_id.short if head else 'nothing'}; run "
                f"'cas checkout {shows.stored_id.short}' again to finish)")
    if state.detached:
        return (f"working tree at {shows.stored_id.short} (branch {branch} is at "
                f"{head.stored_id.short if head else 'nothing'})")
    return f"on branch {branch} at {shows.stored_id.short}"


command = status
