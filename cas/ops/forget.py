"""Forgetting snapshots: by name, or by a branch's retention policy.

A forgotten snapshot's record leaves ``snapshots/``; its data stays until
gc. Refs never point at a forgotten snapshot: a branch moves to the newest
surviving snapshot of the branch at or before it, a model ref to its
nearest surviving ancestor, and a tag never moves on its own.

What another name stands on is protected. A policy thins one branch and
only that branch's own ref may move: it always keeps the snapshots a tag,
another branch's head or a model ref names (a fork made from a snapshot
of main must not lose, or silently change, what it holds when main is
thinned). Forgetting such a snapshot by name is refused unless forced:
force deletes its tags, and moves each other branch (or model ref) on it
to the newest surviving snapshot of that branch's history, or deletes it
when none survives; the report says which.

Order, for a SIGKILL at any moment: everything happens under ``refs/lock``
(no snapshot lands meanwhile); refs move off the doomed snapshots first,
then the records go (``History.forget_many``). A crash in between leaves
refs on kept snapshots and some doomed records still listed: nothing kept
is lost, no ref dangles, and running forget again finishes the job.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import tzinfo

from ..errors import CasError, SnapshotReferenced, SnapshotTagged
from ..model.history import History, TimelineEntry
from ..model.policy import Policies
from ..model.refs import HEADS, MODELS, TAGS
from ..model.retention import NEWEST_FALLBACK, WATCH_DEFAULT, Decision, Policy, decide
from ..objectid import ObjectId


@dataclass
class ForgetReport:
    branch: str | None = None
    policy: Policy | None = None
    kept: list[Decision] = field(default_factory=list)        # newest first
    forgotten: list[Decision] = field(default_factory=list)   # newest first
    moved: dict[str, ObjectId | None] = field(default_factory=dict)  # None: deleted
    deleted_tags: list[str] = field(default_factory=list)
    dry_run: bool = False
    note: str = ""   # e.g. that the policy would have forgotten everything


def forget(history: History, oids: list[ObjectId], force: bool = False) -> ForgetReport:
    """Forget the named snapshots. One that a tag, another branch's head or a
    model ref of another history names only with ``force``, which deletes
    the tags and moves (or deletes) those refs; ``report.moved`` lists them."""
    doomed = list(dict.fromkeys(oids))
    doomed_set = set(doomed)
    with history.refs.locked():
        tagged = {name: oid for name, oid in history.refs.tags().items() if oid in doomed_set}
        if tagged and not force:
            raise SnapshotTagged({name: oid.hex for name, oid in tagged.items()})
        entries = [_entry(history, oid) for oid in doomed]
        others = _other_refs_on(history, entries)
        if others and not force:
            raise SnapshotReferenced({ref: oid.hex for ref, oid in others.items()})
        report = ForgetReport(forgotten=[Decision(e, False, ("named",)) for e in entries],
                              deleted_tags=sorted(tagged))
        for name in report.deleted_tags:
            history.refs.delete(TAGS + name)
        report.moved = _forget_locked(history, entries)
    return report


def apply_policy(history: History, branch: str, policy: Policy, dry_run: bool = False,
                 now_ns: int | None = None, tz: tzinfo | None = None) -> ForgetReport:
    """Forget what ``policy`` does not keep of ``branch``'s recorded snapshots.

    Snapshots a tag, another branch's head or a model ref names are always
    kept, so only ``branch``'s own ref can move. Decided and done under
    ``refs/lock``, so a snapshot recorded meanwhile waits instead of being
    judged by a stale list. Only records and refs are read: the watcher
    runs this after every snapshot. A dry run takes no lock, so it works
    on a read-only store too.
    """
    with contextlib.nullcontext() if dry_run else history.refs.locked():
        names = _protecting_names(history, branch)
        decisions = _protect(decide(history.timeline(branch), names["tags"], policy, tz, now_ns),
                             names["all"])
        report = ForgetReport(branch=branch, policy=policy, dry_run=dry_run,
                              kept=[d for d in decisions if d.keep],
                              forgotten=[d for d in decisions if not d.keep])
        if report.kept and NEWEST_FALLBACK in report.kept[0].reasons:
            report.note = (f"the policy would forget every snapshot of {branch}; "
                           "the newest is kept")
        if report.forgotten and not dry_run:
            report.moved = _forget_locked(history, [d.entry for d in report.forgotten])
    return report


def apply_policies(history: History, dry_run: bool = False,
                   now_ns: int | None = None) -> list[ForgetReport]:
    """Every stored policy applied to its branch."""
    return [apply_policy(history, branch, policy, dry_run, now_ns)
            for branch, policy in Policies(history).all().items()]


def apply_stored_policies(history: History, dry_run: bool = False, now_ns: int | None = None
                          ) -> tuple[list[ForgetReport], dict[str, CasError]]:
    """Every stored policy applied to its branch, a branch whose policy is
    unreadable (or whose thinning fails) skipped: the reports, and the
    problem of each skipped branch."""
    reports: list[ForgetReport] = []
    problems: dict[str, CasError] = {}
    for branch, policy in Policies(history).each().items():
        if isinstance(policy, CasError):
            problems[branch] = policy
            continue
        try:
            reports.append(apply_policy(history, branch, policy, dry_run, now_ns))
        except CasError as e:
            problems[branch] = e
    return reports, problems


def thin_branch(history: History, branch: str) -> ForgetReport | None:
    """The branch's stored policy applied (None when it has none): for the
    watcher, after each snapshot; it reads the policy, records and refs only."""
    policy = Policies(history).get(branch)
    return None if policy is None else apply_policy(history, branch, policy)


def ensure_default_policy(history: History, branch: str) -> None:
    """Store the watcher's default policy for a branch that has none
    (``cas policy set --keep-all`` is how a branch opts out)."""
    Policies(history).set_if_missing(branch, WATCH_DEFAULT)


# -- under refs/lock ---------------------------------------------------------------

def _forget_locked(history: History, entries: list[TimelineEntry]) -> dict[str, ObjectId | None]:
    """Move refs off ``entries``, then drop their records; returns the refs moved."""
    doomed = {e.oid for e in entries}
    moved = _new_ref_targets(history, doomed)
    for ref, target in moved.items():
        if target is None:
            history.refs.delete(ref)
        else:
            history.refs.write_locked(ref, target)
    doomed_entries: list[ObjectId | TimelineEntry] = [*entries]   # forget_many takes either
    history.forget_many(doomed_entries)
    return moved


def _new_ref_targets(history: History, doomed: set[ObjectId]) -> dict[str, ObjectId | None]:
    """Where each branch and model ref on a doomed snapshot goes (None: deleted)."""
    targets: dict[str, ObjectId | None] = {}
    for name, oid in history.refs.branches().items():
        if oid in doomed:
            targets[HEADS + name] = _branch_survivor(history, name, oid, doomed)
    for name, oid in history.refs.models().items():
        if oid in doomed:
            targets[MODELS + name] = _surviving_ancestor(history, oid, doomed)
    return targets


def _branch_survivor(history: History, branch: str, head: ObjectId,
                     doomed: set[ObjectId]) -> ObjectId | None:
    """The newest surviving snapshot of the branch no newer than its head;
    for a branch made from another's snapshot, the head's nearest surviving
    ancestor; else the branch's newest survivor; else None."""
    survivors = [e for e in history.timeline(branch) if e.oid not in doomed]
    head_time = _time_of(history, head)
    older = [e for e in survivors if head_time is None or e.time_ns <= head_time]
    if older:
        return older[0].oid
    ancestor = _surviving_ancestor(history, head, doomed)
    if ancestor is not None:
        return ancestor
    return survivors[0].oid if survivors else None


def _surviving_ancestor(history: History, oid: ObjectId, doomed: set[ObjectId]) -> ObjectId | None:
    seen: set[ObjectId] = set()
    current: ObjectId | None = oid
    while current is not None and current not in seen:
        seen.add(current)
        if current not in doomed and history.is_recorded(current):
            return current
        try:
            current = history.load_snapshot(current).parent  # forgotten manifests stay until gc
        except CasError:
            return None  # a manifest already collected ends the walk
    return None


def _time_of(history: History, oid: ObjectId) -> int | None:
    try:
        return history.load_snapshot(oid).time_ns
    except CasError:
        return None


def _entry(history: History, oid: ObjectId) -> TimelineEntry:
    snap = history.load_snapshot(oid)
    return TimelineEntry(oid, snap.time_ns, snap.branch)


def _protecting_names(history: History, branch: str) -> dict[str, dict[ObjectId, list[str]]]:
    """The names a policy of ``branch`` must not take a snapshot from, by
    snapshot: ``tags`` (tag names, for keep_tags) and ``all`` (reasons: the
    tags, other branches' heads, model refs)."""
    tags: dict[ObjectId, list[str]] = {}
    reasons: dict[ObjectId, list[str]] = {}
    for name, oid in sorted(history.refs.tags().items()):
        tags.setdefault(oid, []).append(name)
        reasons.setdefault(oid, []).append(f"tagged {name}")
    for name, oid in sorted(history.refs.branches().items()):
        if name != branch:
            reasons.setdefault(oid, []).append(f"head of branch {name}")
    for name, oid in sorted(history.refs.models().items()):
        reasons.setdefault(oid, []).append(f"model ref {name}")
    return {"tags": tags, "all": reasons}


def _other_refs_on(history: History, entries: list[TimelineEntry]) -> dict[str, ObjectId]:
    """Branch and model refs on ``entries`` other than each snapshot's own
    branch's (a model's history is recorded as branch ``models/NAME``)."""
    own = {e.oid: e.branch for e in entries}
    found: dict[str, ObjectId] = {}
    for prefix, refs in ((HEADS, history.refs.branches()), (MODELS, history.refs.models())):
        for name, oid in refs.items():
            if oid in own and (prefix + name).removeprefix("refs/") not in _own_refs(own[oid]):
                found[prefix + name] = oid
    return found


def _own_refs(branch: str) -> tuple[str, ...]:
    """The refs (less ``refs/``) a snapshot recorded on ``branch`` belongs to."""
    return ("heads/" + branch, branch) if branch.startswith("models/") else ("heads/" + branch,)


def _protect(decisions: list[Decision], reasons: dict[ObjectId, list[str]]) -> list[Decision]:
    """A tag, another branch or a model ref protects its snapshot whatever
    the policy says."""
    if not reasons:
        return decisions
    protected = []
    for d in decisions:
        why = reasons.get(d.entry.oid)
        if why and not d.keep:
            d = Decision(d.entry, True, tuple(why))
        protected.append(d)
    return protected
