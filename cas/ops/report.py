"""``cas report --html``: one self-contained page about a store's growth.

The page opens offline and fetches nothing: its charts are SVG drawn by
pygal and inlined (pygal's tooltip script, loaded from the network by
default, is turned off), its style is inline, and a Content-Security-Policy
forbids any other source. Every name from the store (paths, branches,
messages, model names and architectures) is hostile input: it is escaped
once, in ``_h``, and nothing from the store is written unescaped.
"""

from __future__ import annotations

import html
import os
import re
import time
from dataclasses import dataclass
from xml.etree import ElementTree

import pygal
from pygal.style import Style

from ..durable import atomic_output
from ..errors import TargetRefused, counted, human_bytes
from ..model.history import History
from ..model.snapshot import iso_time
from .growth import BY_DAY, Growers, GrowthRow, growth_rows, largest_growers, selected_snapshots
from .models import ModelRow, list_models

# Controls (newlines and tabs too) are shown as \xNN: a name must not break
# the page's layout, and NUL is not allowed in HTML at all.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_STYLE = Style(background="white", plot_background="white", foreground="#333",
               foreground_strong="#111", foreground_subtle="#999",
               colors=("#2a6fdb", "#e0812b", "#3a9a5b"), font_family="sans-serif")


@dataclass
class Report:
    html: str
    rows: int                  # days charted
    growers: Growers
    models: int


def _h(text: str | bytes) -> str:
    """Text from the store, safe inside HTML text and quoted attributes."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    else:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return html.escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text), quote=True)


def build_report(history: History, branch: str | None = None) -> Report:
    snaps = selected_snapshots(history, branch)
    rows = growth_rows(snaps, BY_DAY)
    growers = largest_growers(history, snaps)
    skipped: list[str] = []
    models = [] if branch is not None else \
        list_models(history, on_skip=lambda name, e: skipped.append(f"{name}: {e}"))
    models.sort(key=lambda m: (-m.stored_bytes, m.version.name))
    parts = [_head(history, branch, snaps[-1].time_ns, rows),
             _charts(rows), _growers_html(growers),
             _models_html(models, skipped) if branch is None else "",
             _rows_html(rows), "</body></html>\n"]
    return Report("".join(parts), len(rows), growers, len(models))


def write_report(history: History, path: str, branch: str | None = None) -> Report:
    """Build the page and put it at ``path`` whole or not at all (a temp
    file beside it, fsynced, renamed over it: a link at ``path`` is
    replaced, never written through). Never inside the store."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise TargetRefused(path, "is a directory; give a file name for the report")
    store_dir = os.path.realpath(history.store.path)
    parent = os.path.realpath(os.path.dirname(target))
    if os.path.commonpath([parent, store_dir]) == store_dir:
        raise TargetRefused(path, "is inside the store; write the report elsewhere")
    report = build_report(history, branch)
    try:
        with atomic_output(target) as f:
            f.write(report.html.encode("utf-8"))
    except OSError as e:
        # Named by the path asked for, not by the temp file beside it; a
        # full disk stays a failed write (exit 1), a missing folder exit 2.
        raise OSError(e.errno, e.strerror, path) from None
    return report


def _head(history: History, branch: str | None, newest_ns: int, rows: list[GrowthRow]) -> str:
    last = rows[-1]
    scope = f"branch {_h(branch)}" if branch is not None else "every branch"
    ratio = f"{last.dedup_ratio:.2f}x" if last.dedup_ratio is not None else "-"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>cas report: {_h(os.path.basename(history.store.path.rstrip('/')) or '/')}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child, td.name {{ text-align: left; }}
td.name {{ font-family: monospace; word-break: break-all; }}
.note {{ color: #666; font-size: 90%; }}
figure {{ margin: 0 0 1em; }}
</style></head><body>
<h1>cas store report</h1>
<p>Store <code>{_h(history.store.path)}</code>, {scope}; generated {_h(iso_time(time.time_ns())[:19])}Z,
newest snapshot {_h(iso_time(newest_ns)[:19])}Z.</p>
<table><tr><th>recorded snapshots</th><th>files now</th><th>kept history cost</th>
<th>dedup</th></tr>
<tr><td>{last.snapshots_total}</td><td>{human_bytes(last.logical_bytes)}</td>
<td>{human_bytes(last.store_bytes)}</td><td>{ratio}</td></tr></table>
<p class="note">Sizes come from what each recorded snapshot noted when it was taken
(see <code>cas stats --history --help</code> for each column's meaning).</p>
"""


def _chart(kind, title: str, labels: list[str], series: list[tuple[str, list]]) -> str:
    chart = kind(js=[], style=_STYLE, width=960, height=300, explicit_size=True,
                 disable_xml_declaration=True, show_legend=len(series) > 1,
                 legend_at_bottom=True, x_label_rotation=30, show_minor_x_labels=False,
                 x_labels_major_count=min(len(labels), 12), truncate_label=-1,
                 print_values=False, title=title)
    chart.x_labels = labels
    for name, values in series:
        chart.add(name, values, show_dots=len(values) <= 60)
    svg = chart.render_tree()
    # pygal always adds a script carrying its config for the tooltips; the
    # page runs no script (its policy forbids them), so it goes.
    for parent in svg.iter():
        for child in [c for c in parent if c.tag == "script"]:
            parent.remove(child)
    return f"<figure>{ElementTree.tostring(svg, encoding='unicode')}</figure>\n"


def _charts(rows: list[GrowthRow]) -> str:
    labels = [r.label for r in rows]   # local days: made here, not from the store
    scale, unit = _unit_of(max(max(r.store_bytes, r.logical_bytes) for r in rows))
    per_day = _unit_of(max(r.stored_bytes for r in rows))
    return "<h2>Growth</h2>\n" + "".join([
        _chart(pygal.Line, f"Store size and files held ({unit})", labels,
               [("kept history cost", [round(r.store_bytes / scale, 3) for r in rows]),
                ("files held", [round(r.logical_bytes / scale, 3) for r in rows])]),
        _chart(pygal.Bar, f"Stored per day ({per_day[1]})", labels,
               [("stored", [round(r.stored_bytes / per_day[0], 3) for r in rows])]),
        _chart(pygal.Line, "Dedup ratio (every snapshot counted whole / stored)", labels,
               [("dedup", [r.dedup_ratio for r in rows])]),
    ])


def _unit_of(n: int) -> tuple[int, str]:
    for power, name in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        if n >= 1024 ** power:
            return 1024 ** power, name
    return 1, "bytes"


def _since(time_ns: int | None) -> str:
    return f" (since {_h(iso_time(time_ns)[:19])}Z)" if time_ns is not None else ""


def _growers_html(g: Growers) -> str:
    if g.pairs_total == 0:
        return "<h2>Largest growers</h2>\n<p>One snapshot per branch: nothing to compare yet.</p>\n"
    scope = (f"all {g.pairs_total} changes between consecutive snapshots"
             if g.pairs_compared == g.pairs_total else
             f"the newest {g.pairs_compared} of {g.pairs_total} changes between consecutive "
             f"snapshots{_since(g.since_ns)}")
    out = [f"<h2>Largest growers</h2>\n<p class=\"note\">Stored bytes each path added, over "
           f"{scope}; a branch's first snapshot is the baseline.</p>\n"]
    if g.unreadable:
        out.append(f"<p class=\"note\">{counted(len(g.unreadable), 'snapshot')} could not be compared "
                   f"(damaged trees; run <code>cas verify</code>).</p>\n")
    out.append("<table><tr><th>file</th><th>branch</th><th>added</th><th>changes</th></tr>\n")
    out += [f"<tr><td class=\"name\">{_h(p)}</td><td class=\"name\">{_h(b)}</td>"
            f"<td>{human_bytes(n)}</td><td>{c}</td></tr>\n" for b, p, n, c in g.files]
    out.append("</table>\n<table><tr><th>directory</th><th>branch</th><th>added</th></tr>\n")
    out += [f"<tr><td class=\"name\">{_h(d + b'/' if d else b'(top)')}</td>"
            f"<td class=\"name\">{_h(b)}</td><td>{human_bytes(n)}</td></tr>\n" for b, d, n in g.dirs]
    out.append("</table>\n")
    return "".join(out)


def _models_html(models: list[ModelRow], skipped: list[str]) -> str:
    out = ["<h2>Models by size</h2>\n"]
    if not models:
        out.append("<p>No models (import one with <code>cas model import</code>).</p>\n")
    else:
        out.append("<table><tr><th>model</th><th>architecture</th><th>size</th><th>on disk</th>"
                   "<th>shared</th><th>imported</th></tr>\n")
        for m in models:
            v = m.version
            out.append(f"<tr><td class=\"name\">{_h(v.label)}</td>"
                       f"<td class=\"name\">{_h(v.manifest.architecture or '-')}</td>"
                       f"<td>{human_bytes(v.manifest.bytes)}</td><td>{human_bytes(m.stored_bytes)}</td>"
                       f"<td>{human_bytes(m.shared_bytes)}</td>"
                       f"<td>{_h(v.snapshot.time_iso[:10])}</td></tr>\n")
        out.append("</table>\n")
    out += [f"<p class=\"note\">Not listed: {_h(s)}</p>\n" for s in skipped]
    return "".join(out)


def _rows_html(rows: list[GrowthRow]) -> str:
    out = ["<h2>Per day</h2>\n<table><tr><th>day</th><th>snapshots</th><th>kept</th>"
           "<th>files held</th><th>new</th><th>stored</th><th>history cost</th><th>dedup</th></tr>\n"]
    for r in reversed(rows[-400:]):
        ratio = f"{r.dedup_ratio:.2f}x" if r.dedup_ratio is not None else "-"
        out.append(f"<tr><td>{_h(r.label)}</td><td>{r.snapshots}</td><td>{r.snapshots_total}</td>"
                   f"<td>{human_bytes(r.logical_bytes)}</td><td>{human_bytes(r.new_bytes)}</td>"
                   f"<td>{human_bytes(r.stored_bytes)}</td><td>{human_bytes(r.store_bytes)}</td>"
                   f"<td>{ratio}</td></tr>\n")
    out.append("</table>\n")
    return "".join(out)
