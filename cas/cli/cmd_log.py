from __future__ import annotations

import os

import click

from ..errors import ArgumentsConflict, counted
from ..model.log import LogEntry
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE, SYMLINK
from ..model.treediff import SYMBOL, TYPE_CHANGED
from .complete import complete_ref, complete_ref_or_path, complete_ref_then_paths
from .history_args import RefsThenPaths, paths_after_dashdash, resolve_snapshot, split_refs, tree_path
from .main import Context, json_option, pass_ctx
from .output import human_bytes, out_json, out_line, shown
from .timespec import TimeParam, show_time


def _snapshot_doc(s: Snapshot) -> dict:
    return {"id": s.stored_id.hex, "tree": s.tree.hex, "parents": [p.hex for p in s.parents],
            "time": s.time_iso, "time_ns": s.time_ns, "message": s.message, "branch": s.branch,
            "host": s.host, "user": s.user, "source": s.source, "stats": s.stats}


@click.command("log", cls=RefsThenPaths)
@click.argument("args", nargs=-1, shell_complete=complete_ref_then_paths)
@click.option("-n", "--max-count", "limit", type=click.IntRange(min=0), metavar="N",
              help="Show at most N snapshots.")
@click.option("--oneline", is_flag=True, help="One short line per snapshot: id and message.")
@click.option("--all", "all_branches", is_flag=True, help="Every branch, newest first.")
@click.option("--since", type=TimeParam(), help="Only snapshots at or after TIME.")
@click.option("--until", type=TimeParam(), help="Only snapshots at or before TIME.")
@click.option("--stat", "with_stat", is_flag=True,
              help="Count the paths each snapshot added, modified and deleted.")
@click.option("--name-status", "name_status", is_flag=True,
              help="List each path a snapshot added (A), modified (M) or deleted (D).")
@json_option()
@pass_ctx
def log(ctx: Context, args: tuple[str, ...], limit: int | None, oneline: bool, all_branches: bool,
        since: int | None, until: int | None, with_stat: bool, name_status: bool,
        as_json: bool) -> None:
    """Show history: cas log [REF] [-n N] [--since T] [--until T] [-- PATH].

    Lists every recorded snapshot of REF's branch (default HEAD) from REF
    back, newest first, including those recorded before snapshots that were
    forgotten: a '~' after the id marks a snapshot whose parent was
    forgotten (history was thinned there). Branches and tags naming a
    snapshot are shown in parentheses, as git's --decorate. With a PATH,
    only the snapshots where that path changed (or was deleted) are shown.
    --stat and --name-status compare each snapshot with the one before it.
    --all lists every branch.

    \b
    Examples:
      cas log --name-status -- notes/ideas.md
    """
    with ctx.opened() as history:
        refs, paths = split_refs(history, args, 1, paths_after_dashdash())
        if all_branches and refs:
            raise click.UsageError("--all lists every branch: give no REF with it")
        entries = history.log(args[0] if refs else "HEAD", all_branches=all_branches, limit=limit,
                              since=since, until=until, paths=paths,
                              changes=with_stat or name_status)
    if as_json:
        out_json([e.to_doc() for e in entries])
        return
    for e in entries:
        _print_entry(e, oneline)
        if with_stat:
            counts = e.counts() or {}
            out_line("    " + ", ".join(f"{n} {kind}" for kind, n in counts.items()
                                        if n or kind != TYPE_CHANGED))
        if name_status:
            for c in e.changes or ():
                out_line(f"    {SYMBOL[c.kind]}  {shown(c.path)}")


def _print_entry(e: LogEntry, oneline: bool) -> None:
    s = e.snapshot
    mark = "~" if e.parent_forgotten else " "
    refs = f"({shown(', '.join(e.refs))}) " if e.refs else ""
    if oneline:
        out_line(f"{s.stored_id.short}{mark} {refs}{shown(s.message)}")
        return
    files = s.stats['files']
    noun = "file " if files == 1 else "files"  # padded: the columns stay aligned
    out_line(f"{s.stored_id.short}{mark} {show_time(s.time_ns)}  {shown(s.branch):<10} "
             f"{files:>7} {noun} {human_bytes(s.stats['bytes']):>10}  {refs}{shown(s.message)}")


@click.command("show")
@click.argument("spec", metavar="SNAP", default="HEAD", shell_complete=complete_ref)
@json_option("Print the manifest as JSON.")
@pass_ctx
def show(ctx: Context, spec: str, as_json: bool) -> None:
    """Show one snapshot's manifest.

    \b
    Examples:
      cas show HEAD~2 --json
    """
    with ctx.opened() as history:
        s = resolve_snapshot(history, spec)
    if as_json:
        out_json(_snapshot_doc(s))
        return
    out_line(f"snapshot {s.stored_id.hex}")
    out_line(f"branch   {shown(s.branch)}")
    out_line(f"parents  {' '.join(p.hex for p in s.parents) or '(none)'}")
    out_line(f"time     {show_time(s.time_ns)} ({s.time_iso})")
    out_line(f"source   {shown(s.user)}@{shown(s.host)}:{shown(s.source)}")
    out_line(f"tree     {s.tree.hex}")
    st = s.stats
    out_line(f"contents {counted(st['files'], 'file')}, {counted(st['dirs'], 'dir')}, "
             f"{counted(st['symlinks'], 'symlink')}, {human_bytes(st['bytes'])}")
    out_line(f"added    {counted(st['new_objects'], 'new object')}, {human_bytes(st['new_bytes'])} "
             f"({human_bytes(st['stored_bytes'])} stored)")
    out_line("")
    out_line(f"    {shown(s.message) or '(no message)'}")


@click.command("ls")
@click.argument("spec", metavar="SNAP[:PATH]", default="HEAD", shell_complete=complete_ref_or_path)
@click.option("-r", "--recursive", is_flag=True, help="List everything below, not one level.")
@click.option("--b3sum", "as_b3sum", is_flag=True,
              help="Only files, each as b3sum prints it: its BLAKE3 (its id), two spaces, its path.")
@json_option()
@pass_ctx
def ls(ctx: Context, spec: str, recursive: bool, as_b3sum: bool, as_json: bool) -> None:
    """List a directory of a snapshot: cas ls SNAP[:PATH].

    A file's id is the BLAKE3 of its content, in an encrypted store too, so
    --b3sum output compares with b3sum's (paths are relative to the store's
    tree, ids to the bytes restore writes).

    \b
    Examples:
      cas ls -r HEAD~1:notes
      cas ls -r --b3sum HEAD:notes
    """
    if as_b3sum and as_json:
        raise ArgumentsConflict("--b3sum and --json are two formats: give one (the JSON has each id)")
    ref, _, path = spec.partition(":")
    with ctx.opened() as history:
        snap = resolve_snapshot(history, ref or "HEAD")
        rel = tree_path(path)
        entry = history.entry_at(snap.tree, rel, snap.stored_id.short)
        if entry is not None and entry.kind != DIR:
            rows = [(rel, entry)]
        else:
            tree_id = snap.tree if entry is None or entry.oid is None else entry.oid
            base = rel + b"/" if rel else b""
            rows = list(history.walk(tree_id, base)) if recursive else \
                [(base + e.name, e) for e in history.load_tree(tree_id).entries]
    if as_b3sum:
        for p, e in rows:
            if e.kind == FILE and e.oid is not None:
                out_line(f"{e.oid.hex}  {shown(p)}")
        return
    if as_json:
        out_json([{"path": os.fsdecode(p).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
                   **e.to_doc()} for p, e in rows])
        return
    for p, e in rows:
        kind = {FILE: "-", DIR: "d", SYMLINK: "l"}[e.kind]
        size = e.size if e.kind != DIR else ""
        suffix = " -> " + shown(e.target or b"") if e.kind == SYMLINK else ("/" if e.kind == DIR else "")
        out_line(f"{kind}{e.mode:04o}  {size:>12}  {show_time(e.mtime_ns)}  {shown(p)}{suffix}")


commands = [log, show, ls]
