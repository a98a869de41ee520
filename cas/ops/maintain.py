"""``cas maintain``: the upkeep a store needs, in one run, in a safe order.

1. every branch's retention policy applied (``cas forget`` by policy);
2. gc: what no recorded snapshot reaches is removed (gc's grace period);
3. small packs consolidated into few full ones (``packs.consolidate``);
4. a rotating sample of the objects reread and rehashed (``verify --sample``);
5. the LMDB index compacted (its file never shrinks on its own).

Each step is crash-safe on its own (records after refs, index entries after
the data they name, old files after new ones are durable and indexed), and
each starts from what the one before left on disk, so a SIGKILL at any
moment leaves a store that verifies clean and lists every kept snapshot; the
next run finishes the job. Policies first, so gc reclaims what they forgot;
consolidation after gc, so dead objects are not copied; the sample after
consolidation, so it reads the packs that stay; compaction last, when the
index has had all its deletions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import CasError
from ..model.history import History
from ..storage.audit import AuditLog, new_record
from ..storage.store import Store
from .gc import GRACE_SECONDS, gc
from .packs import SMALL_PACK, consolidate
from .verify import Damage, verify

DEFAULT_SAMPLE_PERCENT = 10.0


@dataclass
class MaintainOptions:
    verify_sample: float = DEFAULT_SAMPLE_PERCENT   # percent of the objects; 0: no sample
    dry_run: bool = False
    grace_seconds: int = GRACE_SECONDS
    small_pack: int = SMALL_PACK


@dataclass
class MaintainReport:
    """Figures of every step; the scalars are the summary a watcher logs."""
    dry_run: bool = False
    forgotten_snapshots: int = 0
    removed_objects: int = 0
    removed_bytes: int = 0
    packs_before: int = 0
    rewritten_packs: int = 0
    new_packs: int = 0
    sampled_objects: int = 0
    sampled_bytes: int = 0
    damaged: int = 0
    index_bytes_before: int = 0
    index_bytes_after: int = 0
    seconds: float = 0.0
    steps: list[dict] = field(default_factory=list)   # {"step", "seconds", figures...}
    notes: list[str] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # steps skipped in part; also in notes

    @property
    def ok(self) -> bool:
        return not self.damage and not self.problems


def run_maintenance(store_path: str, options: MaintainOptions | None = None,
                    audit_command: list[str] | None = None) -> MaintainReport:
    """Open the store exclusively (``StoreLocked`` while anything else has it
    open) and maintain it. With ``audit_command`` (a watcher's scheduled
    run: the library call's name), the run is recorded in the audit trail, with
    the snapshots its policies forgot; ``cas maintain`` is recorded by the CLI."""
    with Store.open(store_path, exclusive=True) as store:
        history = History(store)
        try:
            report = maintain(history, options)
        except CasError as e:
            _record(history, audit_command, e.exit_code, str(e))
            raise
        _record(history, audit_command, 0 if report.ok else 1, _trouble_of(report))
        return report


def _trouble_of(report: MaintainReport) -> str | None:
    """What a run that is not ok found, in words (its record's outcome)."""
    found = list(report.problems)
    if report.damage:
        found.append(f"the verify sample found {len(report.damage)} damaged objects")
    return "; ".join(found) or None


def _record(history: History, command: list[str] | None, exit_code: int,
            message: str | None) -> None:
    """The audit record of a run; a log that cannot be written loses only it."""
    if command is None:
        return
    record = new_record(command, refs=[], paths=[], created=[],
                        removed=[oid.hex for oid in history.snapshots_removed],
                        exit_code=exit_code, message=message)
    try:
        AuditLog.of(history.store).append(record)
    except (OSError, CasError):
        pass  # the run's own report stands; the watcher's next snapshot tries the log again


def maintain(history: History, options: MaintainOptions | None = None) -> MaintainReport:
    """Every step in order, for a History whose store is opened exclusively."""
    options = options or MaintainOptions()
    report = MaintainReport(dry_run=options.dry_run)
    started = time.monotonic()
    for name, step in (("policies", _policies), ("gc", _gc), ("consolidate", _consolidate),
                       ("verify", _verify), ("compact", _compact)):
        t0 = time.monotonic()
        figures = step(history, options, report)
        report.steps.append({"step": name, "seconds": round(time.monotonic() - t0, 3), **figures})
    report.seconds = round(time.monotonic() - started, 3)
    return report


Step = Callable[[History, MaintainOptions, MaintainReport], dict]


def _policies(history: History, options: MaintainOptions, report: MaintainReport) -> dict:
    try:
        from .forget import apply_stored_policies
    except ImportError:  # a cas without retention policies: nothing to apply
        report.notes.append("retention policies are not available in this version; none applied")
        return {"branches": 0, "forgotten": 0}
    # A damaged policy (or policies/ itself) costs its branch's thinning
    # only: gc, consolidation and the sample still run, and the problem is
    # reported (exit 1, the watcher's summary).
    try:
        results, problems = apply_stored_policies(history, dry_run=options.dry_run)
    except CasError as e:
        results, problems = [], {"every branch": e}
    report.forgotten_snapshots = sum(len(r.forgotten) for r in results)
    report.notes.extend(r.note for r in results if r.note)
    for branch, error in problems.items():
        report.problems.append(f"thinning of {branch} skipped: {error}")
    report.notes.extend(report.problems)
    return {"branches": len(results), "forgotten": report.forgotten_snapshots,
            "skipped": sorted(problems)}


def _gc(history: History, options: MaintainOptions, report: MaintainReport) -> dict:
    r = gc(history, options.dry_run, options.grace_seconds)
    report.removed_objects, report.removed_bytes = r.removed_objects, r.removed_bytes
    return {"live_objects": r.live_objects, "removed_objects": r.removed_objects,
            "removed_bytes": r.removed_bytes, "removed_packs": r.removed_packs,
            "repacked_packs": r.repacked_packs, "too_young": r.too_young}


def _consolidate(history: History, options: MaintainOptions, report: MaintainReport) -> dict:
    r = consolidate(history.store, options.small_pack, options.dry_run)
    report.packs_before, report.rewritten_packs, report.new_packs = \
        r.packs_before, r.rewritten_packs, r.new_packs
    return {"packs_before": r.packs_before, "small_packs": r.small_packs,
            "rewritten_packs": r.rewritten_packs, "new_packs": r.new_packs,
            "moved_objects": r.moved_objects, "moved_bytes": r.moved_bytes,
            "orphan_packs": r.orphan_packs}


def _verify(history: History, options: MaintainOptions, report: MaintainReport) -> dict:
    percent = options.verify_sample or None
    r = verify(history.store, history=history, sample_percent=percent,
               advance_sample=not options.dry_run)
    report.sampled_objects, report.sampled_bytes = r.sampled_objects, r.bytes_checked
    report.damage, report.damaged = r.damage, len(r.damage)
    sample = r.sample
    return {"objects": r.objects, "snapshots": r.snapshots, "sampled_objects": r.sampled_objects,
            "sampled_bytes": r.bytes_checked, "damaged": len(r.damage),
            "sample_from": f"{sample.start:016x}" if sample else None,
            "sample_to": f"{sample.end:016x}" if sample else None}


def _compact(history: History, options: MaintainOptions, report: MaintainReport) -> dict:
    index = history.store.index
    if options.dry_run:
        before = after = index.size()
    else:
        before, after = index.compact()
    report.index_bytes_before, report.index_bytes_after = before, after
    return {"bytes_before": before, "bytes_after": after}
