from __future__ import annotations

import re
import sys

import click

from ..ops.diff import DiffReport, FileDiff, c_quote, compare, scan_working_tree, working_base
from ..ops.worktree import resolve_source
from .complete import complete_ref_then_paths
from .history_args import RefsThenPaths, paths_after_dashdash, split_refs
from .main import Context, json_option, pass_ctx
from .output import out_json, out_line, print_changes

# Escaped in patch lines on a terminal (a file could hold ESC sequences);
# a tab is content. Through a pipe, lines go out as they are, for patch(1).
_TERMINAL_UNSAFE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_STAT_WIDTH = 50


def _working(history, branch_source):
    """The working tree as a snapshot would record it (see ops.diff.scan_working_tree)."""
    source, branch = branch_source
    return scan_working_tree(history, source, branch)


def _print_patch(report: DiffReport) -> None:
    on_terminal = sys.stdout.isatty()
    for f in report.files or []:
        for line in f.lines(report.limit):
            out_line(_TERMINAL_UNSAFE.sub(lambda m: b"\\x%02x" % m.group()[0], line)
                     if on_terminal else line)


def _stat_cell(f: FileDiff, scale: float) -> str:
    if f.binary or f.too_large or f.too_many_lines:
        return f"Bin {f.old_size} -> {f.new_size} bytes"
    plus, minus = round(f.added * scale), round(f.removed * scale)
    # Every changed side gets at least one mark, as git draws it.
    plus, minus = max(plus, 1 if f.added else 0), max(minus, 1 if f.removed else 0)
    return f"{f.added + f.removed} {'+' * plus}{'-' * minus}"


def _print_stat(report: DiffReport) -> None:
    files = report.files or []
    # C-quoted as in the patch's headers (and as git's --stat): one line a name.
    names = [c_quote(f.change.path).decode("ascii") for f in files]
    width = max((len(n) for n in names), default=0)
    most = max((f.added + f.removed for f in files), default=0)
    scale = min(1.0, _STAT_WIDTH / most) if most else 1.0
    for name, f in zip(names, files, strict=False):
        out_line(f" {name:<{width}} | {_stat_cell(f, scale)}")
    s = report.summary
    parts = [f"{s['files']} file{'' if s['files'] == 1 else 's'} changed"]
    if s["insertions"] or not s["deletions"]:
        parts.append(f"{s['insertions']} insertion{'' if s['insertions'] == 1 else 's'}(+)")
    if s["deletions"]:
        parts.append(f"{s['deletions']} deletion{'' if s['deletions'] == 1 else 's'}(-)")
    out_line(" " + ", ".join(parts))


@click.command("diff", cls=RefsThenPaths)
@click.argument("args", nargs=-1, shell_complete=complete_ref_then_paths)
@click.option("-p", "--patch", is_flag=True,
              help="Show a unified diff of each changed text file (binary files are named).")
@click.option("--stat", "with_stat", is_flag=True,
              help="Show lines added and removed per file (sizes for binary files), and a total.")
@json_option()
@pass_ctx
def diff(ctx: Context, args: tuple[str, ...], patch: bool, with_stat: bool, as_json: bool) -> int:
    """Compare snapshots: cas diff [SNAP_A] [SNAP_B] [-p|--stat] [-- PATH...].

    With two snapshots, A against B; with one, that snapshot against the
    working tree; with none, HEAD against the working tree. Lines read
    'A|M|D|T  path  (sizes)'. -p prints a git-style patch: files over
    1 MiB are noted, not compared. Exit 0 whether or not there are changes.

    \b
    Examples:
      cas diff HEAD~1 -p -- notes/todo.md
    """
    with ctx.opened() as history:
        refs, paths = split_refs(history, args, 2, paths_after_dashdash())
        old = refs[0] if refs else working_base(history)
        new = refs[1] if len(refs) == 2 else None
        working = None if new is not None else resolve_source(history, None, old.branch)
        report = compare(history, old, new, paths, contents=patch or with_stat, working=working)
    if as_json:
        doc = report.to_doc()
        out_json(doc if patch or with_stat else doc["changes"])
        return 0
    if with_stat:
        _print_stat(report)
    if patch:
        if with_stat:
            out_line("")
        _print_patch(report)
    if not (patch or with_stat):
        print_changes(report.changes)
    return 0


commands = [diff]
