from __future__ import annotations

import click

from ..errors import counted
from ..ops.reindex import rebuild_index
from .main import Context, json_option, pass_ctx
from .output import info, out_json, warn


@click.group("index")
def command() -> None:
    """Maintain the store's LMDB index (a cache of what is on disk).

    \b
    Examples:
      cas index rebuild
    """


@command.command("rebuild")
@json_option("Print the result as JSON.")
@pass_ctx
def rebuild(ctx: Context, as_json: bool) -> None:
    """Rebuild the index from the object files and pack trailers.

    Safe at any time: the new index is built beside the old one and swapped
    in. Takes the store's exclusive lock.

    \b
    Examples:
      cas index rebuild --json
    """
    report = rebuild_index(ctx.resolve_store_path())
    for path, why in report.bad_files:
        warn(f"{path}: unreadable, left out of the index ({why}); run 'cas verify --full'")
    if as_json:
        out_json({"objects": report.objects, "packs": report.packs, "loose": report.loose,
                  "bad_files": [{"path": p, "why": w} for p, w in report.bad_files],
                  "temp_files_removed": report.temp_files_removed})
    else:
        info(f"index rebuilt: {counted(report.objects, 'object')} ({report.loose} loose, "
             f"from {counted(report.packs, 'pack')})", ctx.quiet)
