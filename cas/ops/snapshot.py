"""``cas snapshot``: record the state of a source directory on a branch."""

from __future__ import annotations

import getpass
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable

from ..model.history import History
from ..model.treelinks import TABLE as LINKS_TABLE, records_for as links_records
from ..model.snapshot import Snapshot
from .scan import STAT_TABLE, ScanPolicy, ScanResult, scan


@dataclass
class SnapshotResult:
    snapshot: Snapshot | None     # None: nothing changed, nothing recorded
    scan: ScanResult
    parent: Snapshot | None


def take_snapshot(history: History, source: str, branch: str, message: str = "",
                  allow_empty: bool = False,
                  on_file: Callable[[int], None] | None = None,
                  policy: ScanPolicy | None = None, time_ns: int | None = None) -> SnapshotResult:
    """Scan ``source`` and record it on ``branch`` (at ``time_ns``, default now)."""
    store = history.store
    source = os.path.abspath(source)
    parent = history.branch_head(branch)
    with store.writer() as writer:
        result = scan(store, source, branch, writer, on_file, policy)
        writer.flush()
        # The stat cache only ever describes content that is durable now;
        # beside it, what the new trees name, so gc and verify need not
        # parse them again.
        store.index.update_tables({
            STAT_TABLE: (result.cache_updates.items(), result.cache_deletes),
            LINKS_TABLE: (links_records(result.trees), ()),
        })
        if parent is not None and parent.tree == result.root and not allow_empty:
            return SnapshotResult(None, result, parent)
        snapshot = Snapshot(
            tree=result.root,
            parents=(parent.oid,) if parent else (),
            time_ns=time.time_ns() if time_ns is None else time_ns,
            message=message,
            branch=branch,
            host=socket.gethostname(),
            user=_user(),
            source=source,
            stats={"files": result.files, "dirs": result.dirs, "symlinks": result.symlinks,
                   "bytes": result.bytes, "new_objects": writer.new_objects,
                   "new_bytes": writer.new_bytes, "stored_bytes": writer.stored_bytes},
        )
        recorded = history.record(snapshot, writer)
    if history.branch_head(history.refs.head_branch()) is None:
        # The store's first history: HEAD follows it, so log and HEAD~N work.
        history.refs.set_head_branch(branch)
    return SnapshotResult(recorded, result, parent)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
