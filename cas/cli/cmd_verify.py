from __future__ import annotations

import click

from ..errors import EXIT_PROBLEM_FOUND
from ..ops.verify import verify
from .main import Context, pass_ctx
import os

from .output import path_text, byte_progress, error_line, human_bytes, info, out_json, wants_progress


@click.command("verify")
@click.option("--full", is_flag=True, help="Read back every byte and check it hashes to its id.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def command(ctx: Context, full: bool, as_json: bool) -> int:
    """Check the store: every indexed object is present with its recorded size.

    With --full every object and pack is read and rehashed (on all cores)
    and each damaged object is named. Exit 1 when anything is damaged.
    """
    history = ctx.open_history()
    with history.store as store:
        total = sum(p.file_size for p in store.index.packs()) if full else None
        with byte_progress("verifying", total, full and wants_progress(ctx.quiet), "objects") as advance:
            report = verify(store, full=full, on_progress=advance, history=history)
    if as_json:
        out_json({
            "ok": report.ok, "full": report.full, "objects": report.objects,
            "bytes_checked": report.bytes_checked,
            "snapshots": report.snapshots,
            "damage": [{"id": d.label, "kind": d.what, "why": d.why,
                        "used_by": [{"snapshot": s.hex, "path": path_text(os.fsdecode(p))}
                                    for s, p in d.used_by]} for d in report.damage],
            "unindexed_objects": report.unindexed_objects,
            "unindexed_packs": report.unindexed_packs, "temp_files": report.temp_files,
        })
    else:
        for d in report.damage:
            error_line(f"{d.what} {d.label}: {d.why}")
            for snap, path in d.used_by[:20]:
                error_line(f"  used by snapshot {snap.short} at {path_text(os.fsdecode(path))}")
            if len(d.used_by) > 20:
                error_line(f"  ... and {len(d.used_by) - 20} more places")
        checked = f", {human_bytes(report.bytes_checked)} read and rehashed" if full else ""
        if report.unindexed_objects or report.unindexed_packs:
            info(f"note: {report.unindexed_objects} object files and {report.unindexed_packs} "
                 "packs on disk are not in the index (left by an interrupted write; "
                 "harmless, 'cas index rebuild' adopts them)", ctx.quiet)
        status = "ok" if report.ok else f"{len(report.damage)} problem(s) found"
        info(f"{report.objects} objects in {report.snapshots} snapshots checked{checked}: {status}",
             ctx.quiet and report.ok)
    return 0 if report.ok else EXIT_PROBLEM_FOUND
