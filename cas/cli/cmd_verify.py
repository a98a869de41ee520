from __future__ import annotations

import os

import click

from ..errors import EXIT_PROBLEM_FOUND, counted
from ..ops.verify import verify
from ..problems import Problem
from .main import Context, json_option, pass_ctx
from .output import byte_progress, error_line, human_bytes, info, out_json, path_text, wants_progress

SAMPLE_PERCENT = click.FloatRange(0, 100, min_open=True)


def sample_range(sample) -> str:
    """A slice of the digest space as the hex prefixes it runs between."""
    return f"{sample.start >> 48:04x}..{sample.end >> 48:04x}"


def sample_doc(report) -> dict | None:
    if report.sample is None:
        return None
    return {"objects": report.sampled_objects, "bytes": report.bytes_checked,
            "from": f"{report.sample.start:016x}", "to": f"{report.sample.end:016x}"}


def stored_size(store) -> int:
    """What a full verify reads: every pack file and every loose object."""
    return sum(p.file_size for p in store.index.packs()) + \
        sum(e.stored_length for e in store.entries() if e.pack is None)


def print_damage(damage: list[Problem], state: str, places: int = 20) -> None:
    """Each damaged thing on a line (``state``: what is said before why), with
    at most ``places`` of the snapshot paths that use it."""
    for d in damage:
        error_line(f"{d.kind} {d.path}: {state}{d.message}")
        for snap, path in d.used_by[:places]:
            error_line(f"  used by snapshot {snap.short} at {path_text(os.fsdecode(path))}")
        if len(d.used_by) > places:
            error_line(f"  ... and {len(d.used_by) - places} more places")


@click.command("verify")
@click.option("--full", is_flag=True, help="Read back every byte and check it hashes to its id.")
@click.option("--sample", "sample", type=SAMPLE_PERCENT, metavar="PERCENT",
              help="Also reread and rehash PERCENT% of the objects, the next slice of a "
                   "rotation: every object is reread at least once every ceil(100/PERCENT) runs.")
@json_option("Print the report as JSON.")
@pass_ctx
def command(ctx: Context, full: bool, sample: float | None, as_json: bool) -> int:
    """Check the store: every indexed object is present with its recorded size.

    With --full every object and pack is read and rehashed (on all cores)
    and each damaged object is named. With --sample a slice of the objects
    is rehashed, a different slice each run. Exit 1 when anything is damaged.

    \b
    Examples:
      cas verify --sample 5
    """
    with ctx.opened() as history:
        store = history.store
        bar = full and wants_progress(ctx.quiet)
        with byte_progress("verifying", stored_size(store) if bar else None, bar) as advance:
            report = verify(store, full=full, on_progress=advance, history=history,
                            sample_percent=sample)
    if as_json:
        out_json({
            "ok": report.ok, "full": report.full, "objects": report.objects,
            "bytes_checked": report.bytes_checked,
            "snapshots": report.snapshots,
            "damage": [d.damage_doc() for d in report.damage],
            "unindexed_objects": report.unindexed_objects,
            "unindexed_packs": report.unindexed_packs, "temp_files": report.temp_files,
            "sample": sample_doc(report),
        })
    else:
        print_damage(report.damage, "")
        if report.damage:
            info("to repair: add or import the good files again, or run "
                 "'cas repair --from DIR|STORE'", False)
        checked = f", {human_bytes(report.bytes_checked)} read and rehashed" if full else ""
        if report.sample is not None:
            checked = (f", a sample of {report.sampled_objects} ({human_bytes(report.bytes_checked)}) "
                       f"read and rehashed ({sample_range(report.sample)} of the digest space)")
        if report.unindexed_objects or report.unindexed_packs:
            info(f"note: {counted(report.unindexed_objects, 'object file')} and "
                 f"{counted(report.unindexed_packs, 'pack')} on disk are not in the index "
                 "(left by an interrupted write; harmless, 'cas index rebuild' adopts them)", ctx.quiet)
        status = "ok" if report.ok else f"{counted(len(report.damage), 'problem')} found"
        info(f"{counted(report.objects, 'object')} in {counted(report.snapshots, 'snapshot')} "
             f"checked{checked}: {status}",
             ctx.quiet and report.ok)
    return 0 if report.ok else EXIT_PROBLEM_FOUND
