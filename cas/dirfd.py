"""Working inside a directory tree through directory file descriptors.

A path joined as a string and handed to ``open`` is resolved again, one
component at a time, every time it is used: if someone who can write in the
tree swaps a directory for a symbolic link between two uses, the second use
lands wherever the link points. So the walks of scan, restore and checkout
never do that. They hold an fd of each directory they work in, reach a child
with ``openat(parent, name, O_NOFOLLOW | O_DIRECTORY)``, check that what
they opened is the directory they listed (device and inode), and create,
rename, remove, chmod and utime only relative to a verified fd. A swapped
component is an error for that entry, never followed.

``DirHandle`` shares one open directory among the entries still to be done
under it, so a walk holds about one fd per level of depth, not one per
directory, and a directory's own metadata can be applied the moment the
last entry under it is finished.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import sys
from collections.abc import Callable

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# openat2(2) (Linux 5.6+): resolve a relative path refusing every symbolic
# link on the way and any step outside the starting directory.
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(os.uname().machine)
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x02, 0x04, 0x08
# macOS 11+: the same guarantee as a plain open flag.
_O_NOFOLLOW_ANY = 0x20000000 if sys.platform == "darwin" else 0


def _load_syscall():
    if not sys.platform.startswith("linux") or _SYS_OPENAT2 is None:
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn


_syscall = _load_syscall()
_openat2_works = _syscall is not None


def open_beneath(root_fd: int, rel: bytes, flags: int) -> int:
    """Open ``rel`` (a '/'-separated path below ``root_fd``) following no link.

    No component, the last included, may be a symbolic link, and the path
    may not leave ``root_fd``: a directory swapped for a link since it was
    listed makes this fail with ELOOP or EXDEV instead of reaching outside.
    One system call where the kernel offers it (openat2 on Linux, O_NOFOLLOW_ANY
    on macOS); elsewhere a walk of ``open_dir_at`` calls.
    """
    global _openat2_works
    if _openat2_works:
        how = struct.pack("QQQ", flags | os.O_NOFOLLOW, 0,
                          _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
        fd = _syscall(_SYS_OPENAT2, root_fd, rel, how, len(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter refusing it
            raise OSError(err, os.strerror(err), os.fsdecode(rel))
        _openat2_works = False
    if _O_NOFOLLOW_ANY:
        return os.open(rel, flags | os.O_NOFOLLOW | _O_NOFOLLOW_ANY, dir_fd=root_fd)
    head, _, name = rel.rpartition(b"/")
    parent = open_path(root_fd, [p for p in head.split(b"/") if p])
    try:
        return os.open(name, flags | os.O_NOFOLLOW, dir_fd=parent)
    finally:
        os.close(parent)


class NotADirectoryHere(OSError):
    """What a walk found at a name is not the directory it expected."""


def open_dir_at(parent_fd: int, name: bytes, expect: os.stat_result | None = None) -> int:
    """Open directory ``name`` in ``parent_fd`` without following a link.

    With ``expect`` (an lstat from the listing), the opened directory must be
    that very one: a directory renamed away and replaced (by another
    directory, say) since it was listed is refused.
    """
    try:
        fd = os.open(name, OPEN_DIR, dir_fd=parent_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotADirectoryHere(e.errno, _not_dir_reason(parent_fd, name)) from None
        raise
    if expect is not None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
            os.close(fd)
            raise NotADirectoryHere(errno.ESTALE, "was replaced while the tree was read; skipped")
    return fd


def _not_dir_reason(parent_fd: int, name: bytes) -> str:
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        return "vanished while the tree was read"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link; not followed"
    return "exists and is not a directory; not replaced"


def make_dir_at(parent_fd: int, name: bytes, mode: int = 0o700) -> tuple[int, bool]:
    """Open directory ``name`` in ``parent_fd``, creating it if missing.

    Returns the fd and whether it was created. An existing symbolic link or
    non-directory at ``name`` raises ``NotADirectoryHere``.
    """
    created = False
    try:
        os.mkdir(name, mode, dir_fd=parent_fd)
        created = True
    except FileExistsError:
        pass
    return open_dir_at(parent_fd, name), created


def open_path(root_fd: int, parts: list[bytes], create: bool = False) -> int:
    """Open the directory at ``parts`` below ``root_fd``, one verified step at a time."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            child = make_dir_at(fd, part)[0] if create else open_dir_at(fd, part)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def lstat_at(parent_fd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def remove_at(parent_fd: int, name: bytes) -> bool:
    """Remove ``name`` from ``parent_fd``, a whole directory tree included.

    Links are removed, never followed: each level is opened with
    O_NOFOLLOW from its parent's fd and checked against its lstat. Without
    recursion (``shutil.rmtree`` recurses, so a deep tree stops it with a
    RecursionError). Returns whether anything was there.
    """
    st = lstat_at(parent_fd, name)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return True
    # One frame per level: (parent fd, name in it, own fd, subdirectories left).
    stack = [(parent_fd, name, *_empty_but_subdirs(parent_fd, name, st))]
    try:
        while stack:
            up_fd, up_name, fd, subdirs = stack[-1]
            if subdirs:
                sub_name, sub_st = subdirs.pop()
                stack.append((fd, sub_name, *_empty_but_subdirs(fd, sub_name, sub_st)))
                continue
            stack.pop()
            os.close(fd)
            os.rmdir(up_name, dir_fd=up_fd)
    finally:
        for _, _, fd, _ in stack:
            os.close(fd)
    return True


def _empty_but_subdirs(parent_fd: int, name: bytes,
                       st: os.stat_result) -> tuple[int, list[tuple[bytes, os.stat_result]]]:
    """Open a directory, unlink everything in it but subdirectories, and list those."""
    fd = open_dir_at(parent_fd, name, st)
    subdirs = []
    try:
        with os.scandir(fd) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append((os.fsencode(entry.name), entry.stat(follow_symlinks=False)))
                else:
                    os.unlink(entry.name, dir_fd=fd)
    except BaseException:
        os.close(fd)
        raise
    return fd, subdirs


class DirHandle:
    """An open directory shared by the work still to be done inside it.

    Each piece of work takes a hold with ``hold()`` and gives it back with
    ``release()``; the directory's owner holds one too until it has queued
    everything. When the last hold goes, ``on_done`` runs with the fd (to
    apply the directory's mode and times after its contents are in place),
    the fd is closed and the parent's hold is given back.
    """

    __slots__ = ("fd", "holds", "on_done", "parent")

    def __init__(self, fd: int, parent: DirHandle | None = None,
                 on_done: Callable[[int], None] | None = None):
        self.fd = fd
        self.parent = parent
        self.holds = 1
        self.on_done = on_done
        if parent is not None:
            parent.hold()

    def hold(self) -> None:
        self.holds += 1

    def release(self) -> None:
        handle: DirHandle | None = self
        while handle is not None:  # a loop, not recursion: trees can be deep
            handle.holds -= 1
            if handle.holds:
                return
            try:
                if handle.on_done is not None:
                    handle.on_done(handle.fd)
            finally:
                os.close(handle.fd)
                handle.fd = -1
            handle = handle.parent
