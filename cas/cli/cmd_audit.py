from __future__ import annotations

import click

from ..errors import EXIT_PROBLEM_FOUND
from ..storage.audit import AuditLog
from .main import Context, json_option, pass_ctx
from .output import out_json, out_line
from .timespec import TimeParam


@click.group("audit")
def command() -> None:
    """The store's audit trail: what read content or changed the store.

    \b
    Examples:
      cas audit log --since '1 day ago'
      cas audit verify
    """


def _audit_log(ctx: Context) -> AuditLog:
    # The store's sealer opens an encrypted store's records (its keys stay
    # usable once the store is closed).
    with ctx.open_store(with_index=False) as store:
        return AuditLog.of(store)


def _line(record: dict) -> str:
    outcome = record.get("outcome") or {}
    status = outcome.get("status", "?")
    if status != "ok":
        message = outcome.get("message")
        status = f"error {outcome.get('exit_code')}" + (f": {message}" if message else "")
    command = " ".join(str(word) for word in record.get("command") or [])
    return (f"{record.get('seq')} {record.get('time')} {record.get('user')}@{record.get('host')} "
            f"pid {record.get('pid')}: {command} [{status}]")


@command.command("log")
@click.option("--since", "since_ns", type=TimeParam(), metavar="TIME",
              help="Only records from TIME on (ISO 8601, '2h ago', 'yesterday'...).")
@json_option("Print the records as a JSON list.")
@pass_ctx
def log(ctx: Context, since_ns: int | None, as_json: bool) -> None:
    """List the audit trail's records, oldest first.

    \b
    Examples:
      cas audit log --since yesterday --json
    """
    records = [r for r in _audit_log(ctx).records()
               if since_ns is None or (isinstance(r.get("time_ns"), int) and r["time_ns"] >= since_ns)]
    if as_json:
        out_json(records)
        return
    for record in records:
        out_line(_line(record))


@command.command("verify")
@json_option("Print the result as JSON.")
@pass_ctx
def verify(ctx: Context, as_json: bool) -> int:
    """Check the audit trail's hash chain; exit 1 naming the first bad or
    missing record.

    \b
    Examples:
      cas audit verify
    """
    with ctx.opened() as history:
        # A record copied from another store ('cas copy') keeps the head of
        # that store's log: only this store's heads are checked here.
        own = history.store.config.store_id
        heads = [(oid.hex, s.audit_head[0], s.audit_head[1])
                 for oid, s, _ in history.records()
                 if s is not None and s.audit_head and s.audit_head[2] in (None, own)]
        report = AuditLog.of(history.store).verify(heads)
    if as_json:
        out_json({"records": report.records, "ok": report.problem is None,
                  "problem": report.problem})
    elif report.problem:
        out_line(f"audit log broken after {report.records} good records: {report.problem}")
    else:
        out_line(f"{report.records} records, chain intact")
    return 0 if report.problem is None else EXIT_PROBLEM_FOUND
