from __future__ import annotations

import click

from ..errors import ArgumentsConflict, InvalidRefName, counted
from ..model.policy import Policies
from ..model.refs import check_ref_name
from ..model.snapshot import iso_time
from ..ops.forget import ForgetReport, apply_policies, apply_policy
from ..ops.forget import forget as do_forget
from ..ops.gc import GRACE_SECONDS
from ..ops.gc import gc as do_gc
from .cmd_policy import policy_from_options, require_branch, rule_options
from .complete import complete_ref
from .main import Context, branch_option, json_option, pass_ctx
from .output import human_bytes, info, out_json, out_line, shown, warn
from .timespec import show_time


@click.command("forget")
@click.argument("specs", metavar="[SNAP...]", nargs=-1, shell_complete=complete_ref)
@rule_options
@branch_option("Branch the --keep rules apply to (default: HEAD's).")
@click.option("--all-branches", is_flag=True,
              help="Apply the rules (or each branch's stored policy) to every branch.")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be kept and why; change nothing.")
@click.option("--force", is_flag=True,
              help="Forget named snapshots even if a tag, another branch or a model ref stands on "
                   "them: tags are deleted, other refs move to the newest surviving snapshot of "
                   "their history (or are deleted when none survives), and the output says which.")
@json_option()
@pass_ctx
def forget(ctx: Context, specs: tuple[str, ...], branch: str | None, all_branches: bool,
           dry_run: bool, force: bool, as_json: bool, **rules) -> None:
    """Remove snapshots from history (their data goes at the next gc).

    Either name snapshots, or give --keep rules (restic's: a snapshot is
    kept if any rule keeps it; buckets in local time) for a branch; with
    neither, the branch's stored policy ('cas policy') is applied. A
    snapshot a tag, another branch's head or a model ref stands on is never
    forgotten by rules, and by name only with --force. The branch's own
    head moves to the newest surviving snapshot before it; older snapshots
    stay listed by 'cas log'.

    \b
    Examples:
      cas forget --keep-daily 7 --keep-weekly 4 --dry-run
    """
    policy = policy_from_options(rules)
    if specs and (policy is not None or branch or all_branches):
        raise ArgumentsConflict("give snapshots, or --keep rules for a branch, not both")
    if force and not specs:
        raise ArgumentsConflict("--force applies to named snapshots: rules never forget a tagged one")
    if branch and all_branches:
        raise ArgumentsConflict("give --branch or --all-branches, not both")
    with ctx.opened() as history:
        if specs:
            if dry_run:
                raise ArgumentsConflict("--dry-run applies to --keep rules")
            snaps = [history.resolve(s) for s in specs]
            reports = [do_forget(history, [s.stored_id for s in snaps], force)]
        else:
            reports = _apply_rules(history, policy, branch, all_branches, dry_run)
    if as_json:
        out_json([_report_doc(r) for r in reports])
        return
    for r in reports:
        _print_report(r, ctx.quiet)


def _apply_rules(history, policy, branch: str | None, all_branches: bool,
                 dry_run: bool) -> list[ForgetReport]:
    if all_branches:
        if policy is None:
            return apply_policies(history, dry_run)
        # Model versions are recorded on "models/NAME" histories: not branches to thin.
        branches = [b for b in history.branches_in_history() if _is_branch_name(b)]
        return [apply_policy(history, b, policy, dry_run) for b in branches]
    branch = require_branch(history, branch or history.refs.head_branch())
    if policy is None:
        policy = Policies(history).get(branch)
        if policy is None:
            raise ArgumentsConflict(f"give snapshots or --keep rules ({branch} has no stored "
                                   "policy: see 'cas policy set')")
    return [apply_policy(history, branch, policy, dry_run)]


def _is_branch_name(name: str) -> bool:
    try:
        check_ref_name(name)
        return True
    except InvalidRefName:
        return False


def _print_report(r: ForgetReport, quiet: bool) -> None:
    if r.policy is None:  # snapshots named
        for d in r.forgotten:
            out_line(f"forgot {d.oid.hex}")
    else:
        assert r.branch is not None   # a policy is a branch's
        info(f"{shown(r.branch)}: {r.policy.describe()}", quiet)
        verb = "would forget" if r.dry_run else "forget"
        for d in r.kept:
            out_line(f"{'keep':<{len(verb)}}  {d.oid.short}  {show_time(d.entry.time_ns)}  "
                     f"{', '.join(d.reasons)}")
        for d in r.forgotten:
            out_line(f"{verb}  {d.oid.short}  {show_time(d.entry.time_ns)}")
        done = "would forget" if r.dry_run else "forgot"
        info(f"{shown(r.branch)}: kept {len(r.kept)}, {done} {len(r.forgotten)}", quiet)
    if r.note:
        info(r.note, quiet)
    for name in r.deleted_tags:
        info(f"deleted tag {name}", quiet)
    for ref, target in r.moved.items():
        info(f"{ref} -> {target.short if target else '(deleted: no surviving snapshot)'}", quiet)


def _report_doc(r: ForgetReport) -> dict:
    def row(d):
        return {"id": d.oid.hex, "time_ns": d.entry.time_ns, "time": iso_time(d.entry.time_ns),
                "reasons": list(d.reasons)}
    return {"branch": r.branch, "policy": None if r.policy is None else r.policy.to_doc(),
            "dry_run": r.dry_run, "kept": [row(d) for d in r.kept],
            "forgotten": [row(d) for d in r.forgotten], "note": r.note or None,
            "deleted_tags": r.deleted_tags,
            "moved": {ref: t.hex if t else None for ref, t in r.moved.items()}}


@click.command("gc")
@click.option("-n", "--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@click.option("--grace", default=GRACE_SECONDS, show_default=True, metavar="SECONDS",
              help="Never remove objects written less than this long ago.")
@json_option()
@pass_ctx
def gc(ctx: Context, dry_run: bool, grace: int, as_json: bool) -> None:
    """Remove objects that no recorded snapshot reaches.

    Objects stored by 'cas add' alone belong to no snapshot and are removed
    too, once older than the grace period. Takes the store's exclusive lock.

    \b
    Examples:
      cas gc --dry-run
    """
    with ctx.opened(exclusive=True) as history:
        r = do_gc(history, dry_run, grace)
    doc = r.to_doc(dry_run)
    if as_json:
        out_json(doc)
        return
    verb = "would remove" if dry_run else "removed"
    out_line(f"{verb} {counted(r.removed_objects, 'object')} ({counted(r.removed_packs, 'pack')}, "
             f"{r.repacked_packs} of them rewritten without their dead objects), "
             f"freeing {human_bytes(r.removed_bytes)}; {counted(r.live_objects, 'live object')}")
    if r.kept_dead_objects:
        shares = "shares a pack" if r.kept_dead_objects == 1 else "share packs"
        out_line(f"{counted(r.kept_dead_objects, 'unreachable object')} ({human_bytes(r.kept_dead_bytes)}) "
                 f"{shares} with live ones and {_was(r.kept_dead_objects)} kept")
    if r.too_young:
        is_ = "is" if r.too_young == 1 else "are"
        out_line(f"{counted(r.too_young, 'unreachable object')} {is_} younger than {grace} s and "
                 f"{_was(r.too_young)} kept")
    _print_cleanup(r, verb)


def _print_cleanup(r, verb: str) -> None:
    """What gc took away besides objects: views, links and temp files."""
    if r.removed_views:
        out_line(f"{verb} {counted(r.removed_views, 'model view')} of versions no longer recorded")
    if r.removed_links:
        out_line(f"{verb} {counted(r.removed_links, 'model link')} of versions no longer recorded")
    for left in r.left_links:
        warn(f"model link left in place: {left}")
    if r.removed_temp_files:
        out_line(f"{verb} {counted(r.removed_temp_files, 'temp file')} "
                 f"({human_bytes(r.removed_temp_bytes)}) left by interrupted writes")


def _was(n: int) -> str:
    return "was" if n == 1 else "were"


commands = [forget, gc]
