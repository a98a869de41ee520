from __future__ import annotations

import click

from ..ops.gc import GRACE_SECONDS, forget as do_forget, gc as do_gc
from .main import Context, pass_ctx
from .output import human_bytes, info, out_json, out_line


@click.command("forget")
@click.argument("specs", metavar="SNAP...", nargs=-1, required=True)
@pass_ctx
def forget(ctx: Context, specs: tuple[str, ...]) -> None:
    """Remove snapshots from history (their data goes at the next gc).

    A branch or tag on a forgotten snapshot moves to its nearest surviving
    ancestor; a snapshot whose parent was forgotten keeps the parent id, and
    log and verify treat it as the start of history.
    """
    history = ctx.open_history()
    with history.store:
        snaps = [history.resolve(s) for s in specs]
        moved = do_forget(history, [s.oid for s in snaps])
    for s in snaps:
        out_line(f"forgot {s.oid.hex}")
    for ref, target in moved.items():
        info(f"{ref} -> {target.short if target else '(deleted: no surviving ancestor)'}", ctx.quiet)


@click.command("gc")
@click.option("-n", "--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@click.option("--grace", default=GRACE_SECONDS, show_default=True, metavar="SECONDS",
              help="Never remove objects written less than this long ago.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def gc(ctx: Context, dry_run: bool, grace: int, as_json: bool) -> None:
    """Remove objects that no recorded snapshot reaches.

    Objects stored by 'cas add' alone belong to no snapshot and are removed
    too, once older than the grace period. Takes the store's exclusive lock.
    """
    history = ctx.open_history(exclusive=True)
    with history.store:
        r = do_gc(history, dry_run, grace)
    doc = {"dry_run": dry_run, "live_objects": r.live_objects, "removed_objects": r.removed_objects,
           "removed_bytes": r.removed_bytes, "removed_packs": r.removed_packs,
           "kept_dead_objects": r.kept_dead_objects, "kept_dead_bytes": r.kept_dead_bytes,
           "repacked_packs": r.repacked_packs, "too_young": r.too_young}
    if as_json:
        out_json(doc)
        return
    verb = "would remove" if dry_run else "removed"
    out_line(f"{verb} {r.removed_objects} objects ({r.removed_packs} packs, "
             f"{r.repacked_packs} of them rewritten without their dead objects), "
             f"freeing {human_bytes(r.removed_bytes)}; {r.live_objects} live objects")
    if r.kept_dead_objects:
        out_line(f"{r.kept_dead_objects} unreachable objects ({human_bytes(r.kept_dead_bytes)}) "
                 "share packs with live ones and were kept")
    if r.too_young:
        out_line(f"{r.too_young} unreachable objects are younger than {grace} s and were kept")


commands = [forget, gc]
