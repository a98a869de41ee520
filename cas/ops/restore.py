"""Writing a snapshot (or some paths of it) back to a directory.

Every name has already been checked by ``Tree.from_json`` (no ``..``, ``/``,
NUL, duplicates), so a crafted manifest cannot point outside the target.
What is checked here is the target itself: a directory on the way that is a
symbolic link is never followed. Files are written to a temp name in their
directory, given their mode and mtime, then renamed over the old name, so an
interrupted restore leaves each file either old or new, never torn.
Directory modes and mtimes are applied last, deepest first.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ..errors import CasError, ManifestInvalid, SourceError
from ..model.history import History
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE, TreeEntry
from .walk import Problem

WINDOW = 256


@dataclass
class RestoreReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)


def restore(history: History, snapshot: Snapshot, target: str, paths: list[bytes] | None = None,
            on_file: Callable[[int], None] | None = None) -> RestoreReport:
    report = RestoreReport()
    target_b = os.fsencode(os.path.abspath(target))
    os.makedirs(os.path.dirname(target_b), exist_ok=True)
    _make_dir(target_b, 0o777)  # the target is not in the snapshot: umask decides
    dir_meta: list[tuple[bytes, TreeEntry]] = []
    label = snapshot.oid.short if snapshot.oid else "snapshot"
    with ThreadPoolExecutor(min(2, os.cpu_count() or 1), "cas-restore") as pool:
        in_flight: deque[tuple[bytes, Future]] = deque()

        def submit(path: bytes, entry: TreeEntry) -> None:
            in_flight.append((path, pool.submit(_write_file, history, entry, path)))
            while len(in_flight) > WINDOW:
                _collect(*in_flight.popleft(), report, on_file)

        def place(entry: TreeEntry, path: bytes) -> None:
            if entry.kind == DIR:
                _make_dir(path)
                dir_meta.append((path, entry))
                report.dirs += 1
                for child in history.load_tree(entry.oid).entries:
                    place(child, path + b"/" + child.name)
            elif entry.kind == FILE:
                submit(path, entry)
            else:
                _write_symlink(entry, path)
                report.symlinks += 1

        for rel in (paths or [b""]):
            parts = [p for p in rel.split(b"/") if p and p != b"."]
            try:
                tree_id = snapshot.tree
                where = target_b
                for i, part in enumerate(parts):
                    entry = history.entry_at(tree_id, part, label)
                    if entry is None:
                        break
                    where = where + b"/" + part
                    if i < len(parts) - 1:
                        _make_dir(where)
                        dir_meta.append((where, entry))
                        tree_id = entry.oid
                    else:
                        place(entry, where)
                if not parts:
                    for child in history.load_tree(snapshot.tree).entries:
                        place(child, target_b + b"/" + child.name)
            except ManifestInvalid:
                raise
            except (SourceError, OSError) as e:
                report.problems.append(Problem(os.fsdecode(rel), str(e)))
        while in_flight:
            _collect(*in_flight.popleft(), report, on_file)
    for path, entry in reversed(dir_meta):
        try:
            os.chmod(path, entry.mode)
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
        except OSError as e:
            report.problems.append(Problem(os.fsdecode(path), e.strerror or str(e)))
    return report


def _collect(path: bytes, future: Future, report: RestoreReport, on_file) -> None:
    try:
        size = future.result()
    except (CasError, OSError) as e:
        report.problems.append(Problem(os.fsdecode(path), str(e)))
        return
    report.files += 1
    report.bytes += size
    if on_file is not None:
        on_file(size)


def _make_dir(path: bytes, mode: int = 0o700) -> None:
    """Create a directory, refusing to go through a symbolic link.

    Directories of the snapshot start private and get their recorded mode
    once their contents are in place.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.mkdir(path, mode)
        return
    if stat.S_ISDIR(st.st_mode):
        return
    if stat.S_ISLNK(st.st_mode):
        raise SourceError(os.fsdecode(path), "is a symbolic link in the target; not followed")
    raise SourceError(os.fsdecode(path), "exists and is not a directory; not replaced")


def _temp_beside(path: bytes) -> bytes:
    head, _, _ = path.rpartition(b"/")
    return head + b"/.cas-restore-" + secrets.token_hex(6).encode()


def _write_file(history: History, entry: TreeEntry, path: bytes) -> int:
    existing = _lstat(path)
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise SourceError(os.fsdecode(path), "exists as a directory; not replaced")
    temp = _temp_beside(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            history.store.write_content(entry.oid, f.fileno())
            os.fchmod(f.fileno(), entry.mode)
            os.utime(f.fileno(), ns=(entry.mtime_ns, entry.mtime_ns))
        os.rename(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    return entry.size


def _write_symlink(entry: TreeEntry, path: bytes) -> None:
    existing = _lstat(path)
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise SourceError(os.fsdecode(path), "exists as a directory; not replaced")
    temp = _temp_beside(path)
    os.symlink(entry.target, temp)
    try:
        os.utime(temp, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
        os.rename(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
