"""``cas report --html FILE``: the store's growth as one offline page."""

from __future__ import annotations

import click

from ..ops.report import write_report
from .complete import complete_branch
from .main import Context, pass_ctx
from .output import info, path_text


@click.command("report")
@click.option("--html", "html_path", required=True, metavar="FILE",
              help="Write the report to FILE (replaced whole, created 0600).")
@click.option("--branch", metavar="B", shell_complete=complete_branch,
              help="Only branch B (default: every branch, models too).")
@pass_ctx
def report(ctx: Context, html_path: str, branch: str | None) -> None:
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
    info(f"wrote {path_text(html_path)}: {result.rows} day(s), "
         f"{result.growers.pairs_compared} change(s) compared, {result.models} model(s)",
         ctx.quiet)


commands = [report]
