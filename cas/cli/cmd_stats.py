from __future__ import annotations

import json

import click

from ..ops.usage import DirUsage, disk_usage, logical_bytes
from .history_args import tree_path
from .main import Context, pass_ctx
from .output import human_bytes, out_json, out_line, path_text, shown


@click.command("stats")
@click.argument("spec", metavar="[SNAP]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def stats(ctx: Context, spec: str | None, as_json: bool) -> None:
    """Store totals: objects, logical, unique and stored bytes, dedup and compression.

    With SNAP, what that snapshot added to the store.
    """
    history = ctx.open_history()
    with history.store as store:
        if spec is not None:
            snap = history.resolve(spec)
            doc = {"id": snap.oid.hex, **snap.stats}
            if as_json:
                out_json(doc)
                return
            st = snap.stats
            out_line(f"snapshot {snap.oid.short}: {st['files']} files, {human_bytes(st['bytes'])}")
            out_line(f"added {st['new_objects']} objects, {human_bytes(st['new_bytes'])} of new "
                     f"content, {human_bytes(st['stored_bytes'])} stored")
            return
        s = store.stats()
        logical = logical_bytes(history)
    doc = {
        "objects": s.objects, "loose_objects": s.loose_objects,
        "packed_objects": s.packed_objects, "packs": s.packs,
        "compressed_objects": s.compressed_objects, "chunked_files": s.chunked_files,
        "snapshot_bytes": logical, "unique_bytes": s.unique_bytes, "stored_bytes": s.stored_bytes,
        "dedup_ratio": round(logical / s.unique_bytes, 4) if s.unique_bytes and logical else None,
        "compression_ratio": round(s.compression_ratio, 4),
    }
    if as_json:
        out_json(doc)
        return
    out_line(f"objects:         {s.objects} ({s.loose_objects} loose, {s.packed_objects} in "
             f"{s.packs} packs, {s.compressed_objects} compressed, {s.chunked_files} chunked files)")
    out_line(f"snapshot bytes:  {logical} ({human_bytes(logical)}: all files of all snapshots)")
    out_line(f"unique bytes:    {s.unique_bytes} ({human_bytes(s.unique_bytes)}: each distinct chunk once)")
    out_line(f"stored bytes:    {s.stored_bytes} ({human_bytes(s.stored_bytes)}: on disk)")
    if doc["dedup_ratio"]:
        out_line(f"dedup:           {doc['dedup_ratio']:.2f}x (snapshot bytes / unique bytes)")
    out_line(f"stored/unique:   {s.compression_ratio:.3f} (compression)")


def _usage_path(u: DirUsage) -> str:
    return path_text(u.path.decode("utf-8", "surrogateescape")) or "."


def _usage_json(root: DirUsage) -> str:
    """The directory tree as ``json.dumps(doc, indent=2, sort_keys=True)`` would
    print it, built with an explicit stack: json's own encoder recurses, and a
    crafted chain of thousands of nested trees must not end in RecursionError."""
    parts: list[str] = []
    stack: list[tuple[str, object, int]] = [("node", root, 0)]
    while stack:
        kind, value, indent = stack.pop()
        if kind == "text":
            parts.append(value)
            continue
        u, pad, inner = value, " " * indent, " " * (indent + 2)
        parts.append(f'{{\n{inner}"bytes": {u.logical_bytes},\n{inner}"children": ')
        tail = (f',\n{inner}"files": {u.files},\n{inner}"path": {json.dumps(_usage_path(u))},'
                f'\n{inner}"unique_bytes": {u.unique_bytes}\n{pad}}}')
        if not u.children:
            parts.append("[]" + tail)
            continue
        stack.append(("text", f"\n{inner}]" + tail, 0))
        child_pad = " " * (indent + 4)
        for i in range(len(u.children) - 1, -1, -1):
            stack.append(("node", u.children[i], indent + 4))
            stack.append(("text", ("[" if i == 0 else ",") + "\n" + child_pad, 0))
    return "".join(parts)


@click.command("du")
@click.argument("spec", metavar="SNAP[:PATH]", default="HEAD")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the whole directory tree).")
@pass_ctx
def du(ctx: Context, spec: str, as_json: bool) -> None:
    """Per-directory sizes in a snapshot, with bytes unique to it.

    'unique' is what no other snapshot shares: what forgetting this snapshot
    and running gc would free.
    """
    ref, _, path = spec.partition(":")
    history = ctx.open_history()
    with history.store:
        snap = history.resolve(ref or "HEAD")
        usage = disk_usage(history, snap, tree_path(path))
    if as_json:
        out_line(_usage_json(usage))
        return
    out_line(f"{'bytes':>12} {'unique':>12} {'files':>8}  path")
    for u in sorted(usage.children, key=lambda c: -c.logical_bytes) + [usage]:
        name = u.path + (b"/" if u is not usage and u.path else b"") or b"."
        out_line(f"{human_bytes(u.logical_bytes):>12} {human_bytes(u.unique_bytes):>12} "
                 f"{u.files:>8}  {shown(name)}")


commands = [stats, du]
