from __future__ import annotations

import json
import shutil
import sys

import click

from ..errors import counted
from ..ops.growth import BY_DAY, BY_SNAPSHOT, GrowthRow, growth
from ..ops.usage import FIGURES, DirUsage, StoreUsage, disk_usage, store_usage
from .complete import complete_branch, complete_ref, complete_ref_or_path
from .history_args import tree_path
from .main import Context, json_option, pass_ctx
from .output import human_bytes, out_json, out_line, path_text, shown

_STATS_HELP = """Store totals: objects, then the figures below, in bytes.

With SNAP, what that snapshot added to the store.

\b
""" + FIGURES + """
\b
Invariants: content bytes <= snapshot bytes; stored bytes is the sum of
its four parts; 'cas gc' leaves unreferenced at 0 (after its grace time).

\b
With --history, how the store grew, from the snapshot records (and one
tree walk per branch):
  SNAPS    recorded snapshots taken in the row (KEPT: up to its end)
  LOGICAL  size of the files the branches held at the row's end
           (each branch's newest snapshot then, added up)
  NEW      content new to the store in the row, as read
  STORED   what the row's snapshots wrote to disk (compressed)
  STORE    what each branch's oldest kept snapshot reaches, stored,
           plus STORED of every later recorded snapshot up to the row:
           what the kept history cost (not what forgotten snapshots in
           between wrote, nor pack framing; 'cas stats' gives the
           store's size now)
  DEDUP    bytes of every recorded snapshot up to the row, each
           counted whole, over STORE

\b
Examples:
  cas stats --json
"""


@click.command("stats", help=_STATS_HELP)
@click.argument("spec", metavar="[SNAP]", required=False, shell_complete=complete_ref)
@click.option("--history", "by_history", is_flag=True,
              help="Growth over time, per day or per snapshot, with a chart.")
@click.option("--branch", metavar="B", shell_complete=complete_branch,
              help="With --history: only branch B (default: every branch).")
@click.option("--by", type=click.Choice([BY_DAY, BY_SNAPSHOT]), default=BY_DAY, show_default=True,
              help="With --history: one row per local day, or per snapshot.")
@click.option("-n", "--last", "last", type=click.IntRange(min=1), metavar="N",
              help="With --history: only the newest N rows.")
@click.option("--no-chart", is_flag=True,
              help="With --history: no chart (it is drawn only when stdout is a terminal).")
@json_option()
@pass_ctx
def stats(ctx: Context, spec: str | None, by_history: bool, branch: str | None, by: str,
          last: int | None, no_chart: bool, as_json: bool) -> None:
    if by_history:
        if spec is not None:
            raise click.UsageError("--history takes no SNAP (use --branch B for one branch)")
        _history(ctx, branch, by, last, no_chart, as_json)
        return
    if branch is not None or last is not None or no_chart or by != BY_DAY:
        raise click.UsageError("--branch, --by, -n and --no-chart go with --history")
    with ctx.opened() as history:
        if spec is not None:
            snap = history.resolve(spec)
            doc = {"id": snap.stored_id.hex, **snap.stats}
            if as_json:
                out_json(doc)
                return
            st = snap.stats
            out_line(f"snapshot {snap.stored_id.short}: {counted(st['files'], 'file')}, {human_bytes(st['bytes'])}")
            out_line(f"added {counted(st['new_objects'], 'object')}, {human_bytes(st['new_bytes'])} of new "
                     f"content, {human_bytes(st['stored_bytes'])} stored")
            return
        usage = store_usage(history)
    if as_json:
        out_json(usage.to_doc())
        return
    _print_usage(usage)


def _print_usage(u: StoreUsage) -> None:
    out_line(f"objects:         {u.objects} ({u.loose_objects} loose, {u.packed_objects} in "
             f"{counted(u.packs, 'pack')}, {u.compressed_objects} compressed, "
             f"{counted(u.chunked_files, 'chunked file')})")
    for label, value, what in (
            ("snapshot bytes", u.snapshot_bytes, "all files of all snapshots"),
            ("content bytes", u.content_bytes, "each distinct chunk once"),
            ("unreferenced", u.unreferenced_bytes, "in no recorded snapshot; 'cas gc' frees it"),
            ("unique bytes", u.unique_bytes, "content + unreferenced"),
            ("metadata", u.metadata_bytes, "trees, snapshot records, manifests, chunk lists"),
            ("stored bytes", u.stored_bytes,
             f"on disk: {human_bytes(u.content_stored)} content, {human_bytes(u.metadata_stored)} "
             f"metadata, {human_bytes(u.unreferenced_stored)} unreferenced, "
             f"{human_bytes(u.pack_overhead)} pack headers"),
            ("views", u.view_bytes, "copies under views/ for 'cas model path'")):
        out_line(f"{label + ':':<17}{value} ({human_bytes(value)}: {what})")
    if u.dedup_ratio is not None:
        out_line(f"dedup:           {u.dedup_ratio:.2f}x (snapshot bytes / content bytes)")
    if u.compression_ratio is not None:
        out_line(f"compression:     {u.compression_ratio:.3f} (stored / uncompressed, of content)")


def _history(ctx: Context, branch: str | None, by: str, last: int | None, no_chart: bool,
             as_json: bool) -> None:
    with ctx.opened() as history:
        rows = growth(history, branch, by)
    if last is not None:
        rows = rows[-last:]
    if as_json:
        out_json({"by": by, "branch": branch, "rows": [r.to_doc(by) for r in rows]})
        return
    _print_growth(rows, by)
    if not no_chart and sys.stdout.isatty():
        out_line("")
        out_line(growth_chart(rows, by, shutil.get_terminal_size().columns))


def _ratio(r: GrowthRow) -> str:
    return f"{r.dedup_ratio:.2f}x" if r.dedup_ratio is not None else "-"


def _print_growth(rows: list[GrowthRow], by: str) -> None:
    head = ["DAY" if by == BY_DAY else "SNAPSHOT", "SNAPS", "KEPT", "LOGICAL", "NEW", "STORED",
            "STORE", "DEDUP"]
    if by == BY_SNAPSHOT:
        head[1:2] = ["BRANCH"]
    lines = [head]
    for r in rows:
        first = [r.label, str(r.snapshots)] if by == BY_DAY else [r.label[:12], shown(r.branch or '')]
        lines.append(first + [str(r.snapshots_total), human_bytes(r.logical_bytes),
                              human_bytes(r.new_bytes), human_bytes(r.stored_bytes),
                              human_bytes(r.store_bytes), _ratio(r)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out_line("  ".join(cells).rstrip())


# A chart of more points than a terminal has columns shows nothing more and
# takes longer to draw: rows are merged into at most this many.
_CHART_POINTS = 120


def _merged(rows: list[GrowthRow], points: int) -> list[tuple[str, int, int]]:
    """(label, store bytes at its end, stored bytes in it) for groups of
    consecutive rows, at most ``points`` of them."""
    step = max(1, -(-len(rows) // points))
    return [(group[-1].label, group[-1].store_bytes, sum(r.stored_bytes for r in group))
            for group in (rows[i:i + step] for i in range(0, len(rows), step))]


def _unit(largest: int) -> tuple[int, str]:
    for power, name in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        if largest >= 1024 ** power:
            return 1024 ** power, name
    return 1, "bytes"


def growth_chart(rows: list[GrowthRow], by: str, columns: int) -> str:
    """The store size over the rows and what each wrote, drawn by plotext."""
    import plotext as plt  # only when a chart is drawn: it is not needed otherwise

    width = max(40, min(columns, 120))
    points = _merged(rows, min(_CHART_POINTS, width - 12))
    labels = [p[0] if by == BY_DAY else p[0][:8] for p in points]
    xs = list(range(1, len(points) + 1))
    ticks = xs[:: max(1, len(xs) // 5)]
    plt.clear_figure()
    plt.plot_size(width, 30)
    plt.theme("clear")
    plt.subplots(2, 1)
    for n, (values, title, draw) in enumerate((
            ([p[1] for p in points], "store size (STORE)", plt.plot),
            ([p[2] for p in points], "stored per " + by + " (STORED)", plt.bar)), start=1):
        scale, unit = _unit(max(values))
        plt.subplot(n, 1)
        draw(xs, [v / scale for v in values])
        plt.title(f"{title}, {unit}")
        plt.xticks(ticks, [labels[i - 1] for i in ticks])
    return plt.build()


def _usage_path(u: DirUsage) -> str:
    return path_text(u.path.decode("utf-8", "surrogateescape")) or "."


def _usage_json(root: DirUsage) -> str:
    """The directory tree as ``json.dumps(doc, indent=2, sort_keys=True)`` would
    print it, built with an explicit stack: json's own encoder recurses, and a
    crafted chain of thousands of nested trees must not end in RecursionError."""
    parts: list[str] = []
    # Each item: a node to print at an indent, or text to print as it is.
    stack: list[tuple[DirUsage, int] | str] = [(root, 0)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
            continue
        u, indent = item
        pad, inner = " " * indent, " " * (indent + 2)
        parts.append(f'{{\n{inner}"bytes": {u.logical_bytes},\n{inner}"children": ')
        tail = (f',\n{inner}"files": {u.files},\n{inner}"path": {json.dumps(_usage_path(u))},'
                f'\n{inner}"unique_bytes": {u.unique_bytes}\n{pad}}}')
        if not u.children:
            parts.append("[]" + tail)
            continue
        stack.append(f"\n{inner}]" + tail)
        child_pad = " " * (indent + 4)
        for i in range(len(u.children) - 1, -1, -1):
            stack.append((u.children[i], indent + 4))
            stack.append(("[" if i == 0 else ",") + "\n" + child_pad)
    return "".join(parts)


@click.command("du")
@click.argument("spec", metavar="SNAP[:PATH]", default="HEAD", shell_complete=complete_ref_or_path)
@json_option("Print JSON (the whole directory tree).")
@pass_ctx
def du(ctx: Context, spec: str, as_json: bool) -> None:
    """Per-directory sizes in a snapshot, with bytes unique to it.

    'unique' is what no other snapshot shares: what forgetting this snapshot
    and running gc would free.

    \b
    Examples:
      cas du HEAD:models
    """
    ref, _, path = spec.partition(":")
    with ctx.opened() as history:
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
