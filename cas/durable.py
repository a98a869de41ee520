"""Durable, atomic file writes.

Everything cas writes into a store reaches its final name the same way: the
bytes go to a temp file in the store's ``tmp/`` directory, the file is
fsynced, then renamed into place, and the directory that received it is
fsynced before anything (an index entry, a ref) points at it. A crash
therefore leaves either the old state or the new one, plus at worst an
orphaned temp file.

Files are private unless a caller asks otherwise: temp files are created
with the mode they will keep, and a mode with group bits is set with
``fchmod`` because the umask would take them away.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat
import sys
from collections.abc import Iterable, Iterator
from typing import BinaryIO


def write_all(fd: int, data) -> None:
    """``os.write`` until every byte is out: a write may be short."""
    view = memoryview(data)
    try:
        while len(view):
            view = view[os.write(fd, view):]
    finally:
        # A failed write (ENOSPC) must not leave the caller's bytearray
        # exported through the traceback: it could never be cleared again.
        view.release()


def _load_sync_file_range():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range out now, without waiting.

    The fsync that follows then finds most of the file already on its way
    to the disk instead of writing all of it while the caller waits (borg
    does the same). A hint only: where it is missing, nothing happens.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(paths: Iterable[str]) -> None:
    for path in sorted(set(paths)):
        fsync_dir(path)


def temp_name(tmp_dir: str, kind: str) -> str:
    """A fresh temp path; the pid in the name tells cleanup whose it is."""
    return os.path.join(tmp_dir, f"{kind}-{os.getpid()}-{secrets.token_hex(8)}.tmp")


# Objects and packs are never written again once renamed into place.
READ_ONLY_FILE = 0o400
PRIVATE_FILE = 0o600
# Metadata files (config, index meta, lock) are a few hundred bytes.
SMALL_FILE_LIMIT = 1 << 20


def open_temp(tmp_dir: str, kind: str, mode: int = READ_ONLY_FILE) -> tuple[str, int]:
    """A new temp file (random name, never an existing file or a link) and its fd."""
    path = temp_name(tmp_dir, kind)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    if mode & 0o077:
        # Group bits for a shared store: the umask may have removed them.
        try:
            os.fchmod(fd, mode)
        except OSError:
            os.close(fd)
            remove_quietly(path)
            raise
    return path, fd


def read_bounded(path: str, limit: int = SMALL_FILE_LIMIT, dir_fd: int | None = None) -> bytes:
    """The bytes of a small regular file, refusing links, FIFOs, devices and
    anything over ``limit`` bytes (a link to /dev/zero must not eat memory,
    a FIFO must not hang). Raises ``OSError`` whose strerror is a message a
    user can act on (a missing file stays FileNotFoundError).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symbolic link; not followed", path) from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise
        raise OSError(e.errno, f"cannot be opened ({e.strerror})", path) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "is not a regular file", path)
        data = read_upto(fd, limit + 1)
    except OSError as e:
        if e.errno == errno.EINVAL and e.strerror == "is not a regular file":
            raise
        raise OSError(e.errno, f"cannot be read ({e.strerror})", path) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"is larger than {limit} bytes", path)
    return data


def read_upto(fd: int, limit: int) -> bytes:
    """Read until end of file or ``limit`` bytes, whichever comes first."""
    chunks = []
    while limit > 0:
        chunk = os.read(fd, min(limit, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def publish(temp_path: str, final_path: str) -> None:
    """Rename a fsynced temp file to its final name, creating the fan-out dir.

    The caller fsyncs the final directory (batched across many files).
    """
    try:
        os.rename(temp_path, final_path)
    except FileNotFoundError:
        make_dir_like_parent(os.path.dirname(final_path))
        os.rename(temp_path, final_path)


def make_dir(path: str, mode: int) -> None:
    """Create a directory with exactly ``mode`` (the umask does not apply);
    an existing directory is left as it is."""
    try:
        os.mkdir(path, mode & 0o777)
    except FileExistsError:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def make_dir_like_parent(path: str) -> None:
    """Create a directory (a fan-out directory) with its parent's mode, so a
    private store stays private and a shared one shared, whatever the umask."""
    make_dir(path, stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode))


@contextlib.contextmanager
def atomic_output(path: str, tmp_dir: str | None = None, mode: int = PRIVATE_FILE,
                  durable: bool = True) -> Iterator[BinaryIO]:
    """A file that appears at ``path`` only if the block completes.

    The bytes go to a temp file beside ``path`` (or in ``tmp_dir``), which is
    fsynced (when ``durable``) and renamed over ``path``; on any error the
    temp file is removed and ``path`` is untouched. The file gets exactly
    ``mode`` (private by default), set on the open file, never by path.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temp_path, fd = open_temp(tmp_dir or directory, ".cas-out", PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
            if mode != PRIVATE_FILE:
                os.fchmod(f.fileno(), mode)
        os.replace(temp_path, path)
    except BaseException:
        remove_quietly(temp_path)
        raise
    if durable:
        fsync_dir(directory)


def write_atomic(path: str, data: bytes, tmp_dir: str | None = None,
                 mode: int = PRIVATE_FILE) -> None:
    """Replace ``path`` with ``data`` durably (for small metadata files)."""
    with atomic_output(path, tmp_dir, mode) as f:
        f.write(data)
