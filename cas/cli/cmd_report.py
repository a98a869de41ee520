"""``cas report --html FILE``: the store's growth as one offline page."""

from __future__ import annotations

import click

from ..errors import counted
from ..ops.report import write_report
from .complete import complete_branch
from .main import Context, json_option, pass_ctx
from .output import info, out_json, path_text


@click.command("report")
@click.option("--html", "html_path", required=True, metavar="FILE",
              help="Write the report to FILE (replaced whole, created 0600).")
@click.option("--branch", metavar="B", shell_complete=complete_branch,
              help="Only branch B (default: every branch, models too).")
@json_option("Print what the page holds as JSON.")
@pass_ctx
def report(ctx: Context, html_path: str, branch: str | None, as_json: bool) -> None:
    """A self-contained HTML page: growth over time, what was stored per day,
    the dedup ratio, the paths that grew the most and the models by size.

    The page fetches nothing (charts are inline SVG) and opens offline. Its
    numbers are those of 'cas stats --history'; the growers compare
    consecutive snapshots of each branch, skipping unchanged subtrees, over
    as much recent history as a few seconds of work allow (the page says
    how much).

    \b
    Examples:
      cas report --html growth.html
    """
    with ctx.opened() as history:
        result = write_report(history, html_path, branch)
    if as_json:
        out_json({"path": path_text(html_path), "days": result.rows,
                  "changes_compared": result.growers.pairs_compared, "models": result.models})
        return
    info(f"wrote {path_text(html_path)}: {counted(result.rows, 'day')}, "
         f"{counted(result.growers.pairs_compared, 'change')} compared, "
         f"{counted(result.models, 'model')}", ctx.quiet)


commands = [report]
