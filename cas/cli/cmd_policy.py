"""``cas policy set/show/clear``: a retention policy per branch, kept in the
store and applied by ``cas maintain``, ``cas forget --branch B`` without
rules, and the watcher after every snapshot. The ``--keep-*`` options are
shared with ``cas forget``."""

from __future__ import annotations

import click

from ..errors import ArgumentsConflict, BranchNotInHistory, RetentionRuleInvalid
from ..model.policy import Policies
from ..model.refs import HEADS, check_ref_name
from ..model.retention import UNITS, WATCH_DEFAULT, Policy, Tier, count_from_text, parse_duration
from .main import Context, branch_option, json_option, pass_ctx
from .output import info, out_json, out_line, shown

COUNT_OPTIONS = ("last",) + UNITS


def rule_options(command):
    """The ``--keep-*`` options, restic's names and meanings."""
    decorators = [click.option("--keep-last", "keep_last", metavar="N",
                               help="Keep the N newest snapshots ('all': every one).")]
    decorators += [click.option(f"--keep-{name}", f"keep_{name}", metavar="N",
                                help=f"Keep the newest snapshot of each of the last N "
                                     f"{_bucket(name)} that have one ('all': every one).")
                   for name in UNITS]
    decorators.append(click.option("--keep-within", "keep_within", metavar="DURATION",
                                   help="Keep every snapshot within DURATION of the newest "
                                        "(30min, 2h, 7d, 1w, 3m = three months, 1y6m)."))
    decorators += [click.option(f"--keep-within-{unit}", f"keep_within_{unit}", metavar="DURATION",
                                help=f"Keep the newest snapshot of each {_bucket(unit)[:-1]} "
                                     "within DURATION of the newest.")
                   for unit in UNITS]
    decorators.append(click.option("--keep-every", "keep_every", metavar="INTERVAL[:WITHIN]",
                                   multiple=True,
                                   help="Keep one snapshot per INTERVAL (the newest of each), "
                                        "within WITHIN of the newest or forever: 10min:1d."))
    decorators.append(click.option("--keep-tag", "keep_tag", metavar="TAG", multiple=True,
                                   help="Keep the snapshot tag TAG names (tags protect their "
                                        "snapshots from policies anyway)."))
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def _bucket(name: str) -> str:
    return {"hourly": "hours", "daily": "days", "weekly": "weeks",
            "monthly": "months", "yearly": "years"}[name]


def policy_from_options(options: dict) -> Policy | None:
    """The policy the ``--keep-*`` options describe; None when none was given."""
    values: dict = {}
    for name in COUNT_OPTIONS:
        text = options.get(f"keep_{name}")
        if text is not None:
            values[f"keep_{name}"] = count_from_text(text, f"--keep-{name}")
    for key in ("keep_within",) + tuple(f"keep_within_{u}" for u in UNITS):
        text = options.get(key)
        if text is not None:
            values[key] = _duration(text, "--" + key.replace("_", "-"))
    tiers = tuple(_tier(text) for text in options.get("keep_every") or ())
    if tiers:
        values["keep_every"] = tiers
    if options.get("keep_tag"):
        values["keep_tags"] = tuple(options["keep_tag"])
    return Policy(**values) if values else None


def _duration(text: str, option: str):
    try:
        return parse_duration(text)
    except RetentionRuleInvalid as e:
        raise RetentionRuleInvalid(f"{option}: {str(e).removeprefix('bad retention rule: ')}") from None


def _tier(text: str) -> Tier:
    every, _, within = text.partition(":")
    return Tier(_duration(every, "--keep-every"), _duration(within, "--keep-every") if within else None)


def require_branch(history, branch: str) -> str:
    """A branch name that has a ref or recorded snapshots (a typo is an error)."""
    check_ref_name(branch)
    if history.refs.get(HEADS + branch) is None and not history.timeline(branch):
        raise BranchNotInHistory(branch)
    return branch


@click.group("policy")
def policy() -> None:
    """Retention policies stored per branch (applied by 'cas maintain', by
    'cas forget --branch B' without rules, and by the watcher as it goes).

    \b
    Examples:
      cas policy set --keep-hourly 24 --keep-daily 30
    """


@policy.command("set")
@branch_option("Branch (default: HEAD's).")
@click.option("--keep-all", is_flag=True, help="Keep everything (opts a watched branch out "
                                                "of the default thinning).")
@click.option("--watch-default", is_flag=True, help="The watcher's default (README, 'Thinning').")
@rule_options
@json_option("Print the stored policy as JSON.")
@pass_ctx
def set_policy(ctx: Context, branch: str | None, keep_all: bool, watch_default: bool,
               as_json: bool, **rules) -> None:
    """Store BRANCH's policy, replacing any it had.

    \b
    Examples:
      cas policy set --keep-hourly 24 --keep-daily 30
    """
    given = policy_from_options(rules)
    if sum((given is not None, keep_all, watch_default)) != 1:
        raise ArgumentsConflict("give --keep-* rules, --keep-all or --watch-default (one of them)")
    chosen = Policy() if keep_all else WATCH_DEFAULT if watch_default else given
    assert chosen is not None   # exactly one of the three was given
    with ctx.opened() as history:
        branch = require_branch(history, branch or history.refs.head_branch())
        Policies(history).set(branch, chosen)
    if as_json:
        out_json({"branch": branch, "policy": chosen.to_doc()})
        return
    info(f"{branch}: {chosen.describe()}", ctx.quiet)


@policy.command("show")
@branch_option("Only this branch (default: every branch with a policy).")
@json_option()
@pass_ctx
def show_policy(ctx: Context, branch: str | None, as_json: bool) -> None:
    """Print stored policies.

    \b
    Examples:
      cas policy show -b main
    """
    with ctx.opened() as history:
        policies = Policies(history)
        found: dict[str, Policy | None]
        if branch is None:
            found = {**policies.all()}
        else:
            check_ref_name(branch)
            found = {branch: policies.get(branch)}
    if as_json:
        out_json({b: None if p is None else p.to_doc() for b, p in found.items()})
        return
    if not found:
        info("no branch has a stored policy (see 'cas policy set')", ctx.quiet)
    for b, p in found.items():
        out_line(f"{shown(b)}: {p.describe() if p else 'no policy (nothing is thinned)'}")


@policy.command("clear")
@branch_option("Branch (default: HEAD's).")
@json_option("Print what was removed as JSON.")
@pass_ctx
def clear_policy(ctx: Context, branch: str | None, as_json: bool) -> None:
    """Remove BRANCH's policy (a watcher stores its default again when it starts;
    'cas policy set --keep-all' keeps everything instead).

    \b
    Examples:
      cas policy clear -b main
    """
    with ctx.opened() as history:
        branch = branch or history.refs.head_branch()
        check_ref_name(branch)
        removed = Policies(history).clear(branch)
    if as_json:
        out_json({"branch": branch, "removed": removed})
        return
    info(f"{branch}: policy removed" if removed else f"{branch} had no policy", ctx.quiet)


commands = [policy]
