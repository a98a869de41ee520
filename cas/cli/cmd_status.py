"""cas status: what changed in the working tree since the snapshot it was last at."""

from __future__ import annotations

import click

from ..ops.diff import diff_trees
from ..ops.worktree import resolve_source
from .cmd_diff import _print, _working
from .main import Context, pass_ctx
from .output import out_line, shown


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--watch", "watcher", is_flag=True,
              help="Instead: whether a watcher runs on this tree (as 'cas watch --status').")
@pass_ctx
def status(ctx: Context, as_json: bool, watcher: bool) -> int:
    """Show what changed in the working tree since the last snapshot (HEAD).

    Unchanged files are recognised from their stat alone, so an unchanged
    tree answers without reading file contents.
    """
    history = ctx.open_history()
    if watcher:
        from .cmd_watch import report_status
        with history.store:
            source, _ = resolve_source(history, None, None)
            store_path = history.store.path
        return report_status(store_path, source, as_json)
    with history.store:
        source, branch = resolve_source(history, None, None)
        head = history.branch_head(branch)
        working, load = _working(history, (source, branch))
        changes = list(diff_trees(history.load_tree, head.tree if head else None, load, working.root))
    if not as_json:
        if head is None:
            out_line(f"on branch {shown(branch)}, no snapshots yet")
        elif not changes:
            out_line(f"on branch {shown(branch)} at {head.oid.short}: nothing changed")
    _print(changes, as_json)
    return 0


command = status
