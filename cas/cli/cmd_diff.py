from __future__ import annotations

import click

from ..ops.diff import SYMBOL, Change, diff_trees
from ..ops.scan import ScanPolicy, scan
from ..ops.worktree import resolve_source
from .history_args import RefsThenPaths, paths_after_dashdash, split_refs
from .main import Context, pass_ctx
from .output import out_json, out_line, path_text, shown


def _size(e) -> str:
    return "" if e is None or e.kind == "dir" else str(e.size)


def _print(changes: list[Change], as_json: bool) -> None:
    if as_json:
        out_json([{"change": c.kind, "path": path_text(c.path.decode("utf-8", "surrogateescape")),
                   "old": c.old.to_doc() if c.old else None, "new": c.new.to_doc() if c.new else None}
                  for c in changes])
        return
    for c in changes:
        sizes = f"{_size(c.old)} -> {_size(c.new)}" if c.old and c.new else _size(c.old or c.new)
        out_line(f"{SYMBOL[c.kind]}  {shown(c.path)}  ({sizes})")


def _working(history, branch_source):
    """The working tree as a snapshot would record it: live SQLite databases
    by a consistent copy (what snapshots store), their -wal, -shm and
    -journal files left out."""
    source, branch = branch_source
    result = scan(history.store, source, branch, writer=None, policy=ScanPolicy(sqlite_backup=True))
    return result, (lambda oid: result.trees.get(oid) or history.load_tree(oid))


@click.command("diff", cls=RefsThenPaths)
@click.argument("args", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def diff(ctx: Context, args: tuple[str, ...], as_json: bool) -> int:
    """Compare snapshots: cas diff [SNAP_A] [SNAP_B] [-- PATH...].

    With two snapshots, A against B; with one, that snapshot against the
    working tree; with none, HEAD against the working tree. Lines read
    'A|M|D|T  path  (sizes)'. Exit 0 whether or not there are changes.
    """
    history = ctx.open_history()
    with history.store:
        refs, paths = split_refs(history, args, 2, paths_after_dashdash())
        if len(refs) == 2:
            changes = list(diff_trees(history.load_tree, refs[0].tree, history.load_tree,
                                      refs[1].tree, paths))
        else:
            base = refs[0] if refs else history.resolve("HEAD")
            working, load = _working(history, resolve_source(history, None, base.branch))
            changes = list(diff_trees(history.load_tree, base.tree, load, working.root, paths))
    _print(changes, as_json)
    return 0


commands = [diff]
