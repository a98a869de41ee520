"""Differences between two snapshots, or a snapshot and the working tree.

Which paths changed is the tree diff (model/treediff.py, re-exported
here); how their contents changed (``cas diff -p`` and ``--stat``) is
computed here, only when asked: a unified diff of each text file up to a
size cap, binary files named as git names them. Old contents come from the
store (checked against their ids); the working tree's from the disk,
opened below its root without following links.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import CasError, DiffContentUnreadable, human_bytes
from ..model.history import History
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE, SYMLINK, Tree, TreeEntry
from ..model.treediff import (
    ADDED,
    DELETED,
    MODIFIED,
    SYMBOL,
    TYPE_CHANGED,
    Change,
    TreeLoader,
    diff_trees,
    whole_tree_or,
)
from ..objectid import ObjectId
from ..storage.store import Store
from .scan import ScanPolicy, ScanResult, scan
from .worktree import resolve_source, worktree_state

__all__ = [
    "ADDED",
    "DELETED",
    "LINE_LIMIT",
    "MODIFIED",
    "PATCH_LIMIT",
    "SYMBOL",
    "TYPE_CHANGED",
    "Change",
    "DiffReport",
    "FileDiff",
    "TreeLoader",
    "c_quote",
    "compare",
    "diff_trees",
    "file_diff",
    "scan_working_tree",
    "whole_tree_or",
]

# Past this size a file's lines are not compared (difflib is quadratic in
# the worst case, and a patch of megabytes is read by no one).
PATCH_LIMIT = 1 << 20
# Past this many lines a side, lines are not compared either: difflib's
# matching is quadratic on files of many short, repeated lines (250,000
# lines of a CSV took minutes; 20,000 take about 1.5 s at worst).
LINE_LIMIT = 20_000
# As git decides: a NUL byte in the first 8000 bytes makes a file binary.
_BINARY_PROBE = 8000

ContentReader = Callable[[bytes, TreeEntry], bytes]


@dataclass(frozen=True, slots=True)
class FileDiff:
    """How one changed file's content changed.

    ``patch`` holds the unified diff's hunk lines without line ends (empty
    for binary files and those too large or of too many lines to compare);
    ``added`` and ``removed`` count its
    '+' and '-' lines.
    """
    change: Change
    binary: bool = False
    too_large: bool = False
    too_many_lines: bool = False
    added: int = 0
    removed: int = 0
    patch: tuple[bytes, ...] = ()

    @property
    def old_size(self) -> int:
        return _size(self.change.old)

    @property
    def new_size(self) -> int:
        return _size(self.change.new)

    def lines(self, limit: int = PATCH_LIMIT) -> list[bytes]:
        """The file's part of a git-style patch, header first; names
        C-quoted as git quotes them, so no name can add a line of its own
        or reach a terminal as a control sequence."""
        path = self.change.path
        a, b = c_quote(b"a/" + path), c_quote(b"b/" + path)
        out = [b"diff --git " + a + b" " + b, *_mode_lines(self.change)]
        old = a if self.change.old else b"/dev/null"
        new = b if self.change.new else b"/dev/null"
        if self.binary:
            return [*out, b"Binary files " + old + b" and " + new + b" differ"]
        if self.too_large:
            return [*out, b"File " + c_quote(path) + f" is larger than {human_bytes(limit)}: "
                          "its lines are not compared".encode()]
        if self.too_many_lines:
            return [*out, b"File " + c_quote(path) + f" has more than {LINE_LIMIT:,} lines: "
                          "its lines are not compared".encode()]
        if not self.patch:
            return out
        return [*out, b"--- " + old, b"+++ " + new, *self.patch]

    def to_doc(self) -> dict:
        return {"change": self.change.kind, "path": _text(self.change.path), "binary": self.binary,
                "too_large": self.too_large, "too_many_lines": self.too_many_lines,
                "added": self.added, "removed": self.removed,
                "old_size": self.old_size, "new_size": self.new_size,
                "patch": [_text(line) for line in self.patch]}


@dataclass
class DiffReport:
    """The changed paths, and with contents asked for, a FileDiff per changed file."""
    changes: list[Change]
    files: list[FileDiff] | None = None
    limit: int = PATCH_LIMIT
    summary: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        files = self.files or []
        self.summary = {"files": len(files) if self.files is not None else len(self.changes),
                        "insertions": sum(f.added for f in files),
                        "deletions": sum(f.removed for f in files)}

    def to_doc(self) -> dict:
        doc: dict = {"changes": [_change_doc(c) for c in self.changes], "summary": self.summary}
        if self.files is not None:
            doc["files"] = [f.to_doc() for f in self.files]
        return doc


# As git's quote_c_style: these are written as escapes, any other byte
# below 0x20, DEL and every byte from 0x80 (core.quotePath) as octal.
_C_ESCAPES = {0x07: b"\\a", 0x08: b"\\b", 0x09: b"\\t", 0x0a: b"\\n", 0x0b: b"\\v",
              0x0c: b"\\f", 0x0d: b"\\r", 0x22: b'\\"', 0x5c: b"\\\\"}


def c_quote(name: bytes) -> bytes:
    """``name`` as git writes it in patches and --stat: as it is when it
    needs no quoting, else in double quotes with C escapes."""
    if not any(c < 0x20 or c >= 0x7f or c in (0x22, 0x5c) for c in name):
        return name
    out = bytearray(b'"')
    for c in name:
        if c in _C_ESCAPES:
            out += _C_ESCAPES[c]
        elif c < 0x20 or c >= 0x7f:
            out += b"\\%03o" % c
        else:
            out.append(c)
    return bytes(out + b'"')


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _change_doc(c: Change) -> dict:
    return {"change": c.kind, "path": _text(c.path),
            "old": c.old.to_doc() if c.old else None, "new": c.new.to_doc() if c.new else None}


def _size(entry: TreeEntry | None) -> int:
    if entry is None or entry.kind == DIR:
        return 0
    return len(entry.target or b"") if entry.kind == SYMLINK else entry.size


def _git_mode(entry: TreeEntry) -> str:
    return f"{(0o120000 if entry.kind == SYMLINK else 0o100000) | entry.mode:06o}"


def _mode_lines(c: Change) -> list[bytes]:
    if c.old is None and c.new is not None:
        return [f"new file mode {_git_mode(c.new)}".encode()]
    if c.new is None and c.old is not None:
        return [f"deleted file mode {_git_mode(c.old)}".encode()]
    assert c.old is not None and c.new is not None
    if _git_mode(c.old) != _git_mode(c.new):
        return [f"old mode {_git_mode(c.old)}".encode(), f"new mode {_git_mode(c.new)}".encode()]
    return []


# -- contents --------------------------------------------------------------


def store_reader(store: Store, limit: int = PATCH_LIMIT) -> ContentReader:
    """Contents from the store: whole (checked against the id) up to
    ``limit``, only the head that decides 'binary' past it."""
    def read(path: bytes, entry: TreeEntry) -> bytes:
        if entry.kind == SYMLINK:
            return entry.target or b""
        assert entry.oid is not None   # a file entry names its content
        if entry.size <= limit:
            return store.read_object(entry.oid)
        return _head(store.iter_content(entry.oid), _BINARY_PROBE)
    return read


def _head(blocks: Iterator[bytes], size: int) -> bytes:
    """The first ``size`` bytes of a stream. The stream is let go unfinished
    on return; a generator's last reference going closes it (and the file
    it reads) at once, so no ``close()`` is needed of an Iterator."""
    head = bytearray()
    for block in blocks:
        head += block
        if len(head) >= size:
            break
    return bytes(head[:size])


def disk_reader(root: str, limit: int = PATCH_LIMIT) -> ContentReader:
    """Contents from the working tree at ``root``: each directory opened
    from its parent with O_NOFOLLOW, so a link swapped in since the scan is
    refused rather than followed out of the tree."""
    def read(path: bytes, entry: TreeEntry) -> bytes:
        want = limit + 1 if entry.size <= limit else _BINARY_PROBE
        *dirs, name = path.split(b"/")
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in dirs:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)
                os.close(fd)
                fd = child
            if entry.kind == SYMLINK:
                return os.readlink(name, dir_fd=fd)
            return _read_regular(fd, name, want)
        except OSError as e:
            raise DiffContentUnreadable(_text(path), e.strerror or str(e)) from None
        finally:
            os.close(fd)
    return read


def _read_regular(dir_fd: int, name: bytes, want: int) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "no longer a regular file")
        parts, got = [], 0
        while got < want:
            block = os.read(fd, min(want - got, 1 << 20))
            if not block:
                break
            parts.append(block)
            got += len(block)
        return b"".join(parts)
    finally:
        os.close(fd)


def _lines(data: bytes) -> list[bytes]:
    """Lines split at '\\n' only (as git and diff split), each keeping it."""
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def file_diff(change: Change, read_old: ContentReader, read_new: ContentReader,
              limit: int = PATCH_LIMIT, context: int = 3) -> FileDiff | None:
    """How a changed file's content changed; None for a directory entry."""
    sides = [e for e in (change.old, change.new) if e is not None]
    if any(e.kind not in (FILE, SYMLINK) for e in sides):
        return None
    old = read_old(change.path, change.old) if change.old else b""
    new = read_new(change.path, change.new) if change.new else b""
    if b"\0" in old[:_BINARY_PROBE] or b"\0" in new[:_BINARY_PROBE]:
        return FileDiff(change, binary=True)
    if len(old) > limit or len(new) > limit or any(e.kind == FILE and e.size > limit for e in sides):
        return FileDiff(change, too_large=True)
    old_lines, new_lines = _lines(old), _lines(new)
    if len(old_lines) > LINE_LIMIT or len(new_lines) > LINE_LIMIT:
        return FileDiff(change, too_many_lines=True)
    hunks = list(difflib.diff_bytes(difflib.unified_diff, old_lines, new_lines, b"", b"",
                                    n=context))[2:]   # the ---/+++ pair is written by lines()
    patch: list[bytes] = []
    added = removed = 0
    for line in hunks:
        added += line.startswith(b"+")
        removed += line.startswith(b"-")
        if line.endswith(b"\n"):
            patch.append(line[:-1])
        else:
            patch += [line, b"\\ No newline at end of file"]
    return FileDiff(change, added=added, removed=removed, patch=tuple(patch))


# -- whole comparisons -------------------------------------------------------


def scan_working_tree(history: History, source: str, branch: str,
                      source_fd: int | None = None) -> tuple[ScanResult, TreeLoader]:
    """The working tree as a snapshot would record it (live SQLite
    databases by a consistent copy, their -wal, -shm and -journal files
    left out), and a loader for its trees, stored or not. ``source_fd``:
    the tree's directory already open (checkout holds it)."""
    result = scan(history.store, source, branch, writer=None, source_fd=source_fd,
                  policy=ScanPolicy(sqlite_backup=True))

    def load(oid: ObjectId) -> Tree:
        return result.trees.get(oid) or history.load_tree(oid)
    return result, load


def working_base(history: History) -> Snapshot:
    """What the working tree is compared with when no snapshot is named:
    the snapshot it shows (a whole-tree checkout's, as git diffs against a
    detached HEAD), else HEAD."""
    try:
        shows = worktree_state(history).shows
    except CasError:
        shows = None   # no tracked tree of its own: HEAD says it
    return shows or history.resolve("HEAD")


def compare(history: History, old: Snapshot, new: Snapshot | None = None,
            paths: Sequence[bytes] | None = None, *, contents: bool = False,
            limit: int = PATCH_LIMIT, working: tuple[str, str] | None = None) -> DiffReport:
    """``cas diff``: ``old`` against ``new``, or against the working tree
    (``working`` = (source, branch), by default the tree ``old``'s branch
    is snapshotted from) when ``new`` is None. With ``contents``, each
    changed file's unified diff and line counts too."""
    filters = whole_tree_or(paths)
    if new is not None:
        changes = list(diff_trees(history.load_tree, old.tree, history.load_tree, new.tree, filters))
        read_new = store_reader(history.store, limit)
    else:
        source, branch = working or resolve_source(history, None, old.branch)
        result, load = scan_working_tree(history, source, branch)
        changes = list(diff_trees(history.load_tree, old.tree, load, result.root, filters))
        read_new = disk_reader(source, limit)
    if not contents:
        return DiffReport(changes, None, limit)
    read_old = store_reader(history.store, limit)
    files = [d for d in (file_diff(c, read_old, read_new, limit) for c in changes) if d is not None]
    return DiffReport(changes, files, limit)
