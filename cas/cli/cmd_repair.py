from __future__ import annotations

import click

from ..errors import EXIT_PROBLEM_FOUND, counted
from ..ops.repair import repair
from .cmd_verify import print_damage, stored_size
from .main import Context, json_option, pass_ctx
from .output import byte_progress, info, out_json, wants_progress


@click.command("repair")
@click.option("--from", "sources", multiple=True, type=click.Path(path_type=str),
              metavar="PATH|STORE",
              help="Where good copies may be: a directory or file (hashed), or another cas "
                   "store (read by id). Repeat to name several, looked in in order.")
@json_option("Print the report as JSON.")
@pass_ctx
def command(ctx: Context, sources: tuple[str, ...], as_json: bool) -> int:
    """Replace damaged or missing objects with good copies.

    Reads the whole store back (as 'verify --full' does), stores a good copy
    of each damaged object found in the sources, rewrites damaged packs
    whose objects are all sound again, then says what is still damaged
    (exit 1) or that all is repaired (exit 0). Takes the store's exclusive
    lock. Importing or adding the good file again repairs its content too.

    \b
    Examples:
      cas repair --from ~/models/tiny-coder --from /mnt/backup/.cas
    """
    with ctx.opened(exclusive=True) as history:
        bar = wants_progress(ctx.quiet)
        with byte_progress("verifying", stored_size(history.store) if bar else None, bar) as advance:
            report = repair(history, list(sources), on_progress=advance)
    if as_json:
        out_json(report.to_doc())
        return 0 if report.ok else EXIT_PROBLEM_FOUND
    repaired = len(report.repaired) + len(report.packs_rewritten)
    if report.found or repaired:
        info(f"replaced {counted(len(report.repaired), 'damaged object')}, rewrote "
             f"{counted(len(report.packs_rewritten), 'damaged pack')}", ctx.quiet)
    print_damage(report.still_damaged, "still damaged: ")
    if report.ok:
        info("all repaired: the store verifies" if report.found else "nothing is damaged",
             ctx.quiet)
        return 0
    where = "in the sources named" if sources else "without a source"
    remain = "remains" if len(report.still_damaged) == 1 else "remain"
    info(f"{counted(len(report.still_damaged), 'problem')} {remain}, with no good copy found {where}: "
         "name a directory or store that holds the content ('cas repair --from DIR|STORE'), "
         "or add or import the good files again", False)
    return EXIT_PROBLEM_FOUND
