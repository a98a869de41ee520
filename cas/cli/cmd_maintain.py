from __future__ import annotations

import click

from ..errors import EXIT_PROBLEM_FOUND, counted
from ..ops.maintain import DEFAULT_SAMPLE_PERCENT, MaintainOptions
from ..ops.maintain import maintain as do_maintain
from .cmd_verify import print_damage
from .main import Context, json_option, pass_ctx
from .output import human_bytes, out_json, out_line


@click.command("maintain")
@click.option("--verify-sample", "sample", type=click.FloatRange(0, 100),
              default=DEFAULT_SAMPLE_PERCENT, show_default=True, metavar="PERCENT",
              help="Reread and rehash this share of the objects, the next slice of a rotation "
                   "(every object at least once every ceil(100/PERCENT) runs); 0: none.")
@click.option("-n", "--dry-run", is_flag=True,
              help="Report what each step would do; change nothing.")
@json_option("Print the report as JSON.")
@pass_ctx
def maintain(ctx: Context, sample: float, dry_run: bool, as_json: bool) -> int:
    """Apply every branch's retention policy, gc, consolidate small packs,
    verify a rotating sample and compact the index.

    Takes the store's exclusive lock (a running 'cas watch' runs this on its
    own once a day). Interrupted at any moment, it leaves a sound store; the
    next run finishes the job. Exit 1 when the sample finds damage, or when
    a branch's policy cannot be read (that branch is not thinned; the other
    steps still run).

    \b
    Examples:
      cas maintain --dry-run
    """
    with ctx.opened(exclusive=True) as history:
        report = do_maintain(history, MaintainOptions(verify_sample=sample, dry_run=dry_run))
    if as_json:
        out_json({"ok": report.ok, "dry_run": report.dry_run, "seconds": report.seconds,
                  "steps": report.steps, "notes": report.notes,
                  "damage": [_without_users(d.damage_doc()) for d in report.damage]})
    else:
        _print(report)
    print_damage(report.damage, "", places=5)
    return 0 if report.ok else EXIT_PROBLEM_FOUND


def _without_users(doc: dict) -> dict:
    """maintain's JSON names damage without the snapshots using it (verify's has them)."""
    return {k: v for k, v in doc.items() if k != "used_by"}


def _print(report) -> None:
    steps = {s["step"]: s for s in report.steps}
    would = "would " if report.dry_run else ""
    p, g, c, v, x = (steps[n] for n in ("policies", "gc", "consolidate", "verify", "compact"))
    out_line(f"policies: {counted(p['branches'], 'branch')}, {would}forget {counted(p['forgotten'], 'snapshot')}")
    out_line(f"gc: {would}remove {counted(g['removed_objects'], 'object')} "
             f"({human_bytes(g['removed_bytes'])}); {g['live_objects']} live")
    out_line(f"packs: {c['small_packs']} of {c['packs_before']} under the small size; "
             f"{would}rewrite {c['rewritten_packs']} into {c['new_packs']}"
             + (f", drop {c['orphan_packs']} left by an interrupted run" if c["orphan_packs"] else ""))
    out_line(f"verify: {counted(v['objects'], 'object')} in {counted(v['snapshots'], 'snapshot')} present; "
             f"{v['sampled_objects']} ({human_bytes(v['sampled_bytes'])}) reread, "
             f"{v['damaged']} damaged")
    out_line(f"index: {human_bytes(x['bytes_before'])} -> {human_bytes(x['bytes_after'])}")
    for note in report.notes:
        out_line(f"note: {note}")


commands = [maintain]
