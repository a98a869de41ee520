"""Finding the files to store under the paths a user names.

Named paths follow symbolic links (as ``cp`` and ``b3sum`` do); inside a
directory, links to files are followed but links to directories are not,
which is what keeps a walk finite. Problems are reported, never raised:
one unreadable file must not stop the rest from being stored.

Directories are descended through their parent's fd (``cas.dirfd``) and
each found file carries the (device, inode) its listing gave, which the
reader checks when it opens the path: a directory swapped for a link while
the walk runs leads nowhere outside what was listed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..dirfd import DirHandle, open_dir_at

# Re-exported: ignore, ingest, checkout, restore and watch take Problem and
# its severities from here.
from ..problems import ERROR as ERROR
from ..problems import WARNING as WARNING
from ..problems import Problem as Problem


@dataclass(frozen=True, slots=True)
class FoundFile:
    path: str       # as the user will see it
    via_link: bool = False  # a symbolic link to a file, to be followed
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) the listing gave


def _special_kind(mode: int) -> str | None:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def _stat_problem(path: str, e: OSError) -> Problem:
    if e.errno == errno.ELOOP:
        return Problem(path, "symbolic link loop; skipped")
    if e.errno == errno.ENOENT:
        if os.path.islink(path):
            return Problem(path, "broken symbolic link; skipped")
        return Problem(path, "no such file or directory")
    if e.errno == errno.EACCES:
        return Problem(path, "permission denied; skipped")
    return Problem(path, f"{e.strerror or e}; skipped")


def walk(paths: list[str], skip: Callable[[os.stat_result], bool]) -> Iterator[FoundFile | Problem]:
    """Yield files (and problems) under ``paths`` in a stable, sorted order.

    ``skip`` is asked about every directory; it keeps the store out of its
    own walk.
    """
    for top in paths:
        try:
            st = os.stat(top)
        except OSError as e:
            yield _stat_problem(top, e)
            continue
        if stat.S_ISDIR(st.st_mode):
            if not skip(st):
                yield from _walk_dir(top, skip)
        elif stat.S_ISREG(st.st_mode):
            yield FoundFile(top, os.path.islink(top))
        else:
            yield Problem(top, f"is {_special_kind(st.st_mode) or 'not a regular file'}; skipped",
                          WARNING)


def _walk_dir(top: str, skip: Callable[[os.stat_result], bool]) -> Iterator[FoundFile | Problem]:
    try:
        top_fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        yield _stat_problem(top, e)
        return
    # (directory fd shared with its pending subdirectories, path, expected stat)
    stack: list[tuple[DirHandle | None, str, os.stat_result | None]] = [(None, top, None)]
    try:
        while stack:
            parent, directory, expect = stack.pop()
            try:
                fd = top_fd if parent is None else \
                    open_dir_at(parent.fd, os.fsencode(os.path.basename(directory)), expect)
            except OSError as e:
                yield _stat_problem(directory, e)
                continue
            finally:
                if parent is not None:
                    parent.release()
            handle = DirHandle(fd)
            try:
                subdirs = yield from _list(fd, directory, skip)
                for path, st in reversed(subdirs):  # reversed: popped in sorted order
                    handle.hold()
                    stack.append((handle, path, st))
            finally:
                handle.release()
    finally:
        for parent, _, _ in stack:
            if parent is not None:
                parent.release()


def _list(fd: int, directory: str, skip: Callable[[os.stat_result], bool]):
    """Yield the files of one directory; return its subdirectories to walk."""
    try:
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError as e:
        yield _stat_problem(directory, e)
        return []
    subdirs = []
    for entry in entries:
        path = os.path.join(directory, entry.name)
        try:
            if entry.is_symlink():
                st = os.stat(entry.name, dir_fd=fd)
                if stat.S_ISDIR(st.st_mode):
                    yield Problem(path, "symbolic link to a directory; not followed", WARNING)
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield FoundFile(path, True)
                    continue
            else:
                st = entry.stat(follow_symlinks=False)
        except OSError as e:
            yield _stat_problem(path, e)
            continue
        if stat.S_ISREG(st.st_mode):
            yield FoundFile(path, False, (st.st_dev, st.st_ino))
        elif stat.S_ISDIR(st.st_mode):
            if not skip(st):
                subdirs.append((path, st))
        else:
            yield Problem(path, f"is {_special_kind(st.st_mode) or 'not a regular file'}; skipped",
                          WARNING)
    return subdirs
