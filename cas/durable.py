"""Durable, atomic file writes.

Everything cas writes into a store reaches its final name the same way: the
bytes go to a temp file in the store's ``tmp/`` directory, the file is
fsynced, then renamed into place, and the directory that received it is
fsynced before anything (an index entry, a ref) points at it. A crash
therefore leaves either the old state or the new one, plus at worst an
orphaned temp file.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import sys
from typing import BinaryIO, Iterable, Iterator


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


def open_temp(tmp_dir: str, kind: str) -> tuple[str, int]:
    path = temp_name(tmp_dir, kind)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    return path, fd


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
        os.makedirs(os.path.dirname(final_path), exist_ok=True)
        os.rename(temp_path, final_path)


@contextlib.contextmanager
def atomic_output(path: str, tmp_dir: str | None = None, mode: int = 0o644,
                  durable: bool = True) -> Iterator[BinaryIO]:
    """A file that appears at ``path`` only if the block completes.

    The bytes go to a temp file beside ``path`` (or in ``tmp_dir``), which is
    fsynced (when ``durable``) and renamed over ``path``; on any error the
    temp file is removed and ``path`` is untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temp_path, fd = open_temp(tmp_dir or directory, ".cas-out")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(temp_path, mode)
        os.replace(temp_path, path)
    except BaseException:
        remove_quietly(temp_path)
        raise
    if durable:
        fsync_dir(directory)


def write_atomic(path: str, data: bytes, tmp_dir: str | None = None) -> None:
    """Replace ``path`` with ``data`` durably (for small metadata files)."""
    with atomic_output(path, tmp_dir) as f:
        f.write(data)
