"""cas copy: another store's whole history into this one (or the one --to names)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from ..errors import RefsNotCopied, SameStore, SourcePasswordRequired, counted
from ..model.history import History
from ..ops.copy import CopyReport, copy_store, plan_copy, same_directory
from ..passwords import environment_source, read_password_file
from ..storage.store import Store, locate_store
from .main import Context, ask_passphrase, json_option, pass_ctx
from .output import byte_progress, info, out_json, shown, wants_progress, warn


@click.command("copy")
@click.option("--from", "source", required=True, metavar="OLD",
              type=click.Path(file_okay=False, path_type=str),
              help="The store to copy from (a store directory, or a tree holding .cas/).")
@click.option("--to", "target", metavar="NEW", type=click.Path(file_okay=False, path_type=str),
              help="The store to copy into (default: this one, or --store).")
@click.option("--force", is_flag=True,
              help="Move refs and policies that differ in NEW to OLD's values.")
@click.option("--from-password-file", "password_file", metavar="FILE",
              type=click.Path(dir_okay=False, path_type=str),
              help="OLD's passphrase, the file's first line (else CAS_FROM_PASSWORD, "
                   "CAS_FROM_PASSWORD_FILE, CAS_FROM_PASSWORD_COMMAND or a prompt).")
@json_option("Print a summary as JSON.")
@pass_ctx
def command(ctx: Context, source: str, target: str | None, force: bool,
            password_file: str | None, as_json: bool) -> int:
    """Copy every snapshot, branch, tag, model and policy of OLD into NEW.

    Snapshots keep their ids, times, messages and parents. Content is read
    from OLD and written as NEW stores it: cut by NEW's settings, and
    encrypted when NEW is (the way a plain store becomes an encrypted one).
    Only what NEW lacks is copied, so copying again is cheap. Objects are
    made durable first, snapshot records next and refs last, so a copy
    stopped at any point leaves NEW sound. A branch, model or tag that
    exists in NEW with another value is left as it is and named (exit 1),
    unless it only moves forward (or --force). NEW's HEAD is set to OLD's
    when NEW has none.

    \b
    Examples:
      cas --store /media/ssd/cas init --encrypt
      cas copy --from ~/data/.cas --to /media/ssd/cas
    """
    if target is not None:
        ctx.store_path = target
    source = locate_store(source)
    if same_directory(source, ctx.resolve_store_path()):
        raise SameStore(source)   # before a second open of one index
    with Store.open(source, password=_source_password(source, password_file)) as old, \
            ctx.opened() as new:
        report = _run(ctx, History(old), new, force)
    if as_json:
        out_json(report.to_doc())
    else:
        _print(report, ctx.quiet)
    if not report.ok:
        for ref, why in report.refused:
            warn(f"{shown(ref)} {why}")
        raise RefsNotCopied([ref for ref, _ in report.refused])
    return 0


def _source_password(source: str, password_file: str | None) -> Callable[[], bytes]:
    """OLD's passphrase, asked for only if OLD turns out to be encrypted."""
    def ask() -> bytes:
        if password_file is not None:
            return read_password_file(password_file, "--from-password-file")
        given = environment_source("CAS_FROM_")
        if given is None and sys.stdin.isatty():
            given = ask_passphrase("Passphrase of the store copied from: ") or None
        if given is None:
            raise SourcePasswordRequired(source)
        return given
    return ask


def _run(ctx: Context, old: History, new: History, force: bool) -> CopyReport:
    plan = plan_copy(old, new)
    bar = wants_progress(ctx.quiet)
    with byte_progress("copying", plan.total_bytes if bar else None, bar,
                       files=len(plan.contents)) as advance:
        return copy_store(old, new, on_progress=advance, plan=plan, force=force)


def _print(report: CopyReport, quiet: bool) -> None:
    info(f"copied {counted(report.snapshots, 'snapshot')} "
         f"({report.snapshots_present} already there), "
         f"{counted(report.objects, 'object')} ({_mib(report.bytes)}, {_mib(report.stored_bytes)} "
         f"stored), skipped {report.objects_present} present", quiet)
    moved = report.refs + [f"policies/{b}" for b in report.policies]
    if moved:
        info(f"set {', '.join(shown(r) for r in moved)}", quiet)
    if report.head:
        info(f"HEAD is now branch {shown(report.head)}", quiet)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
