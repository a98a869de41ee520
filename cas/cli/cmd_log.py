from __future__ import annotations

import os
from collections import deque

import click

from ..errors import CasError, counted
from ..model.history import History
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE, SYMLINK
from .history_args import (RefsThenPaths, paths_after_dashdash, resolve_snapshot, split_refs,
                           tree_path)
from .main import Context, pass_ctx
from .output import human_bytes, out_json, out_line, shown
from .timespec import TimeParam, show_time


def _snapshot_doc(s: Snapshot) -> dict:
    return {"id": s.oid.hex, "tree": s.tree.hex, "parents": [p.hex for p in s.parents],
            "time": s.time_iso, "time_ns": s.time_ns, "message": s.message, "branch": s.branch,
            "host": s.host, "user": s.user, "source": s.source, "stats": s.stats}


def _entry_key(history: History, snap: Snapshot, path: bytes):
    try:
        e = history.entry_at(snap.tree, path)
    except CasError:
        return None
    return None if e is None else (e.kind, e.oid, e.target, e.mode)


@click.command("log", cls=RefsThenPaths)
@click.argument("args", nargs=-1)
@click.option("-n", "--max-count", "limit", type=click.IntRange(min=0), metavar="N",
              help="Show at most N snapshots.")
@click.option("--oneline", is_flag=True, help="One short line per snapshot: id and message.")
@click.option("--all", "all_branches", is_flag=True, help="Every branch, newest first.")
@click.option("--since", type=TimeParam(), help="Only snapshots at or after TIME.")
@click.option("--until", type=TimeParam(), help="Only snapshots at or before TIME.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def log(ctx: Context, args: tuple[str, ...], limit: int | None, oneline: bool, all_branches: bool,
        since: int | None, until: int | None, as_json: bool) -> None:
    """Show history: cas log [REF] [-n N] [--since T] [--until T] [-- PATH].

    Lists every recorded snapshot of REF's branch (default HEAD) from REF
    back, newest first, including those recorded before snapshots that were
    forgotten: a '~' after the id marks a snapshot whose parent was
    forgotten (history was thinned there). With a PATH, only the snapshots
    where that path changed are shown. --all lists every branch.
    """
    history = ctx.open_history()
    with history.store:
        refs, paths = split_refs(history, args, 1, paths_after_dashdash())
        if all_branches and refs:
            raise click.UsageError("--all lists every branch: give no REF with it")
        if all_branches:
            entries = iter(history.every_entry())
        else:
            start = refs[0] if refs else resolve_snapshot(history, "HEAD")
            # A branch names all of its history; a new fork's head is still
            # a snapshot of its base, listed from there back.
            whole = history.branch_named(args[0] if refs else "HEAD") == start.branch
            entries = history.lineage(start, whole_branch=whole)
        picked = _pick(history, entries, limit, since, until, paths, by_branch=all_branches)
        rows = [(s, s.parent is not None and not history.is_recorded(s.parent)) for s in picked]
    if as_json:
        out_json([{**_snapshot_doc(s), "parent_forgotten": gap} for s, gap in rows])
        return
    for s, gap in rows:
        mark = "~" if gap else " "
        if oneline:
            out_line(f"{s.oid.short}{mark} {shown(s.message)}")
            continue
        files = s.stats['files']
        noun = "file " if files == 1 else "files"  # padded: the columns stay aligned
        out_line(f"{s.oid.short}{mark} {show_time(s.time_ns)}  {shown(s.branch):<10} "
                 f"{files:>7} {noun} {human_bytes(s.stats['bytes']):>10}  {shown(s.message)}")


def _pick(history: History, entries, limit: int | None, since: int | None, until: int | None,
          paths: list[bytes], by_branch: bool) -> list[Snapshot]:
    """The snapshots to show, reading only as many records as it takes.

    Entries come newest first within each branch, so an entry older than
    --since ends its branch's listing (the stretch of a base branch before
    a fork may still be newer). With paths, each snapshot is compared with
    the next older one listed (of its own branch, with --all).
    """
    picked: list[Snapshot] = []
    for snap, older in _with_next_older(history, entries, since, by_branch):
        if limit is not None and len(picked) >= limit:
            break
        if until is not None and snap.time_ns > until:
            continue
        if paths and not _changed(history, snap, older, paths):
            continue
        picked.append(snap)
    return picked


def _with_next_older(history: History, entries, since: int | None, by_branch: bool):
    """(snapshot, the next older one listed or None), in the order listed.

    An entry older than --since is read only as the partner of the last
    one shown of its branch; after it the branch is skipped unread.
    """
    waiting: deque[list] = deque()   # [snapshot, partner or _WAITING]
    last_of: dict[str, list] = {}
    done: set[str] = set()
    for entry in entries:
        if entry.branch in done:
            continue
        group = entry.branch if by_branch else ""
        snap = history.load_snapshot(entry.oid)
        pending = last_of.get(group)
        if pending is not None:
            pending[1] = snap
        if since is not None and snap.time_ns < since:
            done.add(entry.branch)
            last_of.pop(group, None)
        else:
            last_of[group] = [snap, _WAITING]
            waiting.append(last_of[group])
        while waiting and waiting[0][1] is not _WAITING:
            yield tuple(waiting.popleft())
    for snap, partner in waiting:
        yield snap, None if partner is _WAITING else partner


_WAITING = object()


def _changed(history: History, snap: Snapshot, older: Snapshot | None, paths: list[bytes]) -> bool:
    return any(_entry_key(history, snap, p) != (_entry_key(history, older, p) if older else None)
               for p in paths)


@click.command("show")
@click.argument("spec", metavar="SNAP", default="HEAD")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@pass_ctx
def show(ctx: Context, spec: str, as_json: bool) -> None:
    """Show one snapshot's manifest."""
    history = ctx.open_history()
    with history.store:
        s = resolve_snapshot(history, spec)
    if as_json:
        out_json(_snapshot_doc(s))
        return
    out_line(f"snapshot {s.oid.hex}")
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
@click.argument("spec", metavar="SNAP[:PATH]", default="HEAD")
@click.option("-r", "--recursive", is_flag=True, help="List everything below, not one level.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def ls(ctx: Context, spec: str, recursive: bool, as_json: bool) -> None:
    """List a directory of a snapshot: cas ls SNAP[:PATH]."""
    ref, _, path = spec.partition(":")
    history = ctx.open_history()
    with history.store:
        snap = resolve_snapshot(history, ref or "HEAD")
        rel = tree_path(path)
        entry = history.entry_at(snap.tree, rel, snap.oid.short)
        if entry is not None and entry.kind != DIR:
            rows = [(rel, entry)]
        else:
            tree_id = snap.tree if entry is None else entry.oid
            base = rel + b"/" if rel else b""
            rows = list(history.walk(tree_id, base)) if recursive else \
                [(base + e.name, e) for e in history.load_tree(tree_id).entries]
    if as_json:
        out_json([{"path": os.fsdecode(p).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
                   **e.to_doc()} for p, e in rows])
        return
    for p, e in rows:
        kind = {FILE: "-", DIR: "d", SYMLINK: "l"}[e.kind]
        size = e.size if e.kind != DIR else ""
        suffix = " -> " + shown(e.target) if e.kind == SYMLINK else ("/" if e.kind == DIR else "")
        out_line(f"{kind}{e.mode:04o}  {size:>12}  {show_time(e.mtime_ns)}  {shown(p)}{suffix}")


commands = [log, show, ls]
