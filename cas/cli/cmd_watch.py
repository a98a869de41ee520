"""``cas watch``: snapshot a directory continuously as it changes."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import click

from ..errors import EXIT_PROBLEM_FOUND, counted
from ..ops.watch import Watcher, WatchOptions, watch_status
from ..ops.worktree import resolve_source
from ..storage.crypto import PLAIN, PlainSealer, Sealer
from .main import Context, branch_option, json_option, pass_ctx
from .output import out_json, out_line, shown
from .timespec import DurationParam


@click.command("watch")
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--quiet-period", type=DurationParam(), default="2s", show_default=True,
              help="How long a change must rest before it is snapshotted.")
@click.option("--max-interval", type=DurationParam(), default="5m", show_default=True,
              help="Snapshot at least this often while changes keep coming.")
@click.option("--maintain-interval", type=DurationParam(), default="1d", show_default=True,
              help="Run 'cas maintain' this often, while idle (0: never).")
@branch_option("Branch to record on (default: the one tracking PATH).")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=str),
              help="Append the JSON log lines here instead of stderr.")
@click.option("--status", is_flag=True,
              help="Tell whether a watcher runs on PATH, and its state (exit 0 if one runs, "
                   "1 if it runs but is in trouble or stalled, 3 if none runs).")
@json_option("With --status: print JSON.")
@pass_ctx
def command(ctx: Context, path: str | None, quiet_period: float, max_interval: float,
            maintain_interval: float, branch: str | None, log_file: str | None, status: bool,
            as_json: bool) -> int:
    """Watch a directory and snapshot its changes as they happen.

    Runs in the foreground until SIGINT or SIGTERM, then takes a final
    snapshot and exits 0. On start, changes made while no watcher ran are
    found and snapshotted first. Files are taken once complete (closed after
    writing, renamed into place, or quiet for the quiet period); SQLite
    databases through SQLite's backup API. One JSON line per ingest and per
    snapshot goes to stderr (or --log-file). After each snapshot the
    branch's retention policy thins its history (a branch without one gets
    the watcher's default, see 'cas policy show'); once a maintain interval,
    while idle, 'cas maintain' runs. A full disk, a store it may not write or
    a dead event source is retried with a growing delay (up to a minute),
    logged once, and shown by --status (exit 1). An unexpected error is
    logged and answered with a full scan; after repeated ones in a row the
    watcher exits 1, for a service manager to restart it.

    \b
    Examples:
      cas watch --status
    """
    with ctx.opened() as history:
        source, branch = resolve_source(history, path, branch)
        store_path, sealer = history.store.path, history.store.sealer
    if status:
        return report_status(store_path, source, as_json, sealer)
    if quiet_period <= 0 or max_interval < quiet_period:
        raise click.UsageError("need 0 < --quiet-period <= --max-interval")
    sink = _open_log(log_file) if log_file else sys.stderr
    stop = threading.Event()
    options = WatchOptions(branch, quiet_period, max_interval, maintain_interval=maintain_interval)
    watcher = Watcher(store_path, source, options, _json_lines(sink),
                      quiet_paths=(log_file,) if log_file else (), sealer=sealer,
                      command=["cas", *ctx.audit.argv])

    def on_signal(signum, frame) -> None:
        stop.set()
        watcher.wake()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        watcher.run(stop)
    finally:
        if log_file:
            sink.close()
    return 0


def _json_lines(sink) -> Callable[[dict], None]:
    """The watcher's log: one JSON line per record, with its time."""
    sink_lock = threading.Lock()

    def log(record: dict) -> None:
        # Lines come from the loop and, for faults, from other threads.
        now = time.time()
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) +
                f".{int(now * 1000) % 1000:03d}Z", **record}
        try:
            with sink_lock:
                sink.write(json.dumps(line, sort_keys=True) + "\n")
                sink.flush()
        except (OSError, ValueError):
            pass  # a full disk under the log must not stop the snapshots

    return log


def _open_log(path: str):
    """The log, appended to; created private (it names the tree's files)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise click.UsageError(f"cannot open the log file {path}: {e.strerror}") from None
    return os.fdopen(fd, "a", buffering=1)


def report_status(store_path: str, source: str, as_json: bool,
                  sealer: Sealer | PlainSealer = PLAIN) -> int:
    """Print a watcher's state; exit 0 if one runs, 1 if it runs but is in
    trouble (a full disk, say) or has stopped beating (stalled), 3 if none runs."""
    state = watch_status(store_path, source, sealer)
    if as_json:
        out_json(state)
    else:
        _print_status(state)
    if not state["running"]:
        return 3
    return EXIT_PROBLEM_FOUND if state["stalled"] or state["in_trouble"] else 0


def _print_status(state: dict) -> None:
    if not state["running"]:
        out_line(f"no watcher is running on {state['source']}")
    else:
        out_line(f"watching {state['source']} (pid {state.get('pid')}, branch {state.get('branch')}, "
                 f"since {state.get('started')})")
        out_line(f"backlog: {counted(_count(state.get('backlog')), 'changed path')} "
                 "not yet snapshotted")
    if state.get("stalled"):
        age = state.get("heartbeat_age")
        out_line(f"STALLED: no heartbeat for {'an unknown time' if age is None else f'{age:.0f} s'}"
                 + (f" (a snapshot started {state['snapshot_started']})"
                    if state.get("snapshot_started") else "")
                 + "; restart it (its service manager, or SIGTERM and start it again)")
    troubles = state.get("trouble") if state["running"] else None
    for activity, t in sorted((troubles or {}).items()):
        if isinstance(t, dict):
            out_line(shown(f"TROUBLE ({activity}, {t.get('kind')}) since {t.get('since')}: "
                           f"{t.get('error')}; {counted(_count(t.get('attempts')), 'attempt')}, the next in "
                           f"{t.get('retry_in')} s"))
    last = state.get("last_snapshot")
    if isinstance(last, dict) and last.get("id"):
        out_line(f"last snapshot: {str(last['id'])[:12]} at {last.get('time')} "
                 f"({counted(_count(last.get('files')), 'file')})")
    fault = state.get("last_fault")
    if isinstance(fault, dict):
        out_line(shown(f"faults: {state.get('faults')}, the last at {fault.get('time')} in "
                       f"{fault.get('thread')}: {fault.get('error')} (details in the log)"))
    if state.get("last_maintenance"):
        out_line(shown(f"last maintenance: {state['last_maintenance']}"))
    if state.get("failed"):
        out_line(shown(f"stopped: {state['failed']}"))


def _count(value: object) -> int:
    """A count from a state file, which may be damaged or crafted: 0 if it is not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
