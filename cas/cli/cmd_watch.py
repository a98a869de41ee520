"""``cas watch``: snapshot a directory continuously as it changes."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import click

from ..ops.watch import WatchOptions, Watcher, watch_status
from ..ops.worktree import resolve_source
from .main import Context, pass_ctx
from .output import out_json, out_line
from .timespec import DurationParam


@click.command("watch")
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--quiet-period", type=DurationParam(), default="2s", show_default=True,
              help="How long a change must rest before it is snapshotted.")
@click.option("--max-interval", type=DurationParam(), default="5m", show_default=True,
              help="Snapshot at least this often while changes keep coming.")
@click.option("-b", "--branch", help="Branch to record on (default: the one tracking PATH).")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=str),
              help="Append the JSON log lines here instead of stderr.")
@click.option("--status", is_flag=True,
              help="Tell whether a watcher runs on PATH, and its state (exit 0 if one runs, 3 if not).")
@click.option("--json", "as_json", is_flag=True, help="With --status: print JSON.")
@pass_ctx
def command(ctx: Context, path: str | None, quiet_period: float, max_interval: float,
            branch: str | None, log_file: str | None, status: bool, as_json: bool) -> int:
    """Watch a directory and snapshot its changes as they happen.

    Runs in the foreground until SIGINT or SIGTERM, then takes a final
    snapshot and exits 0. On start, changes made while no watcher ran are
    found and snapshotted first. Files are taken once complete (closed after
    writing, renamed into place, or quiet for the quiet period); SQLite
    databases through SQLite's backup API. One JSON line per ingest and per
    snapshot goes to stderr (or --log-file).
    """
    history = ctx.open_history()
    with history.store:
        source, branch = resolve_source(history, path, branch)
        store_path = history.store.path
    if status:
        return report_status(store_path, source, as_json)
    if quiet_period <= 0 or max_interval < quiet_period:
        raise click.UsageError("need 0 < --quiet-period <= --max-interval")
    sink = open(log_file, "a", buffering=1) if log_file else sys.stderr

    def log(record: dict) -> None:
        now = time.time()
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) +
                f".{int(now * 1000) % 1000:03d}Z", **record}
        sink.write(json.dumps(line, sort_keys=True) + "\n")
        sink.flush()

    stop = threading.Event()
    watcher = Watcher(store_path, source, WatchOptions(branch, quiet_period, max_interval), log,
                      quiet_paths=(log_file,) if log_file else ())

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


def report_status(store_path: str, source: str, as_json: bool) -> int:
    """Print a watcher's state; exit 0 if one runs, 3 if not."""
    state = watch_status(store_path, source)
    if as_json:
        out_json(state)
    else:
        _print_status(state)
    return 0 if state["running"] else 3


def _print_status(state: dict) -> None:
    if not state["running"]:
        out_line(f"no watcher is running on {state['source']}")
    else:
        out_line(f"watching {state['source']} (pid {state.get('pid')}, branch {state.get('branch')}, "
                 f"since {state.get('started')})")
        out_line(f"backlog: {state.get('backlog', 0)} changed path(s) not yet snapshotted")
    last = state.get("last_snapshot")
    if last:
        out_line(f"last snapshot: {last['id'][:12]} at {last['time']} ({last['files']} files)")
