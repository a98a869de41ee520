"""Consistent copies of live SQLite databases.

A database being written by another process can be torn if its file is
read with plain reads: pages from before and after a commit, or a main file
whose latest commits still sit in its ``-wal``. SQLite's online backup API
copies the database under a read transaction, so the copy is one committed
state, WAL content included. The copy goes to a temp file in the store and
is stored in place of the file; writers are held up only for as long as a
read transaction lasts (WAL mode: not at all).

SQLite's locks in rollback-journal mode are POSIX record locks, which belong
to the process: closing *any* descriptor of the database file drops them.
So while a backup may run, nothing else in the process opens a database
file: ``is_sqlite`` is called only just before the backup, in the same
thread; a scan reads a directory's headers (``sqlite_side_files``) when it
lists the directory, before any of its files is queued for reading; and the
watcher's event thread tells databases apart with stat calls alone, leaving
the header reads to its loop thread between snapshots.

A file is a database only if it is a regular file starting with the SQLite
magic. ``X-wal``, ``X-shm`` and ``X-journal`` are side files only beside
such an ``X``; anything else (a text file ``diary`` beside ``diary-journal``)
is read byte for byte, and is never given to the backup API.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import urllib.parse
from typing import Callable

from ..errors import SourceError
from ..objectid import ObjectId
from ..storage.chunking import SQLITE_MAGIC
from ..storage.writer import ObjectWriter
from ..durable import remove_quietly

BUSY_TIMEOUT_S = 10
SQLITE_SIDE_FILES = (b"-wal", b"-shm", b"-journal")
# A rollback journal's header starts with this once synced, and with zeros before.
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")


def side_file_base(name: bytes) -> bytes | None:
    """``X`` if ``name`` is named like a side file of ``X`` (``X-wal``...), else None."""
    for suffix in SQLITE_SIDE_FILES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return None


def sqlite_side_files(directory: bytes, names: set[bytes], dir_fd: int | None = None) -> set[bytes]:
    """The names in ``directory`` that are a SQLite database's side files
    (``X-wal``, ``X-shm``, ``X-journal`` beside a database ``X``): a backup
    of ``X`` already holds what they add.

    Reads the first bytes of each such ``X`` (relative to ``dir_fd``, or to
    ``directory`` opened here). The scan calls this when it lists a
    directory, before it queues any of the directory's files, so this never
    opens a file whose backup is in progress (see the module docstring).
    Directories without names like side files cost nothing more.
    """
    bases = {}
    for name in names:
        base = side_file_base(name)
        if base is not None and base in names:
            bases.setdefault(base, []).append(name)
    if not bases:
        return set()
    own_fd = dir_fd is None
    if own_fd:
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return set()  # the listing's own error reports the directory
    try:
        return {side for base, sides in bases.items() if is_sqlite(base, dir_fd) for side in sides}
    finally:
        if own_fd:
            os.close(dir_fd)


def is_sqlite(path: str | bytes, dir_fd: int | None = None) -> bool:
    """Whether ``path`` is a SQLite database: a regular file starting with
    the SQLite magic, or an empty one beside a rollback journal that starts
    as SQLite's do (a database in its first transaction: SQLite writes the
    header when it commits, and a text file is never mistaken for this).
    Never follows a symbolic link, never blocks on a FIFO or a device."""
    head = _head(path, len(SQLITE_MAGIC), dir_fd)
    if head != b"":
        return head == SQLITE_MAGIC
    journal = path + (b"-journal" if isinstance(path, bytes) else "-journal")
    return _head(journal, len(JOURNAL_MAGIC), dir_fd) in (JOURNAL_MAGIC, bytes(len(JOURNAL_MAGIC)))


def _head(path: str | bytes, size: int, dir_fd: int | None) -> bytes | None:
    """The first ``size`` bytes of a regular file, or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return None  # the plain read reports why
    try:
        return os.pread(fd, size, 0) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except OSError:
        return None
    finally:
        os.close(fd)


def backup_to(path: str, dest: str, expect: tuple[int, int] | None = None) -> None:
    """Copy one committed state of the database at ``path`` into a new file ``dest``.

    SQLite opens the database by its path, which someone who can write in a
    directory on the way can point elsewhere for that moment. With
    ``expect`` (the listed device and inode), the file SQLite opened must be
    that one: one of this process's descriptors must be it once the
    connection is open, or nothing is copied.
    """
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as e:
        raise SourceError(path, f"cannot be opened as a SQLite database ({e})") from None
    try:
        if expect is not None and not _holds_open(expect):
            raise SourceError(path, "was replaced while it was opened (a directory on the way "
                                    "changed); skipped")
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            dst.close()
    except sqlite3.Error as e:
        raise SourceError(path, f"SQLite backup failed ({e})") from None
    finally:
        src.close()


def _holds_open(identity: tuple[int, int]) -> bool:
    """Whether one of this process's descriptors is the file ``identity`` names."""
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    for name in os.listdir(fd_dir):
        try:
            st = os.fstat(int(name))
        except (OSError, ValueError):
            continue
        if (st.st_dev, st.st_ino) == identity:
            return True
    return False


def read_sqlite(writer: ObjectWriter, path: str, tmp_dir: str,
                expect: tuple[int, int] | None = None,
                opener: Callable[[int], int] | None = None) -> tuple[ObjectId, os.stat_result, int]:
    """Store a consistent copy of a database: its id, the stat of the live
    file (for the stat cache and the tree's mode and mtime), and the copy's size.

    A file that is not a database (whatever lies beside it) is stored byte
    for byte instead: the backup API would fail on it, or worse, succeed on
    something else. ``expect`` and ``opener`` are as for ``ObjectWriter.put_file``.
    """
    st = _listed_database(path, expect, opener)
    if st is None:
        oid, st = writer.put_file(path, expect=expect, opener=opener)
        return oid, st, st.st_size
    dest = os.path.join(tmp_dir, f"sqlite-{os.getpid()}-{os.urandom(6).hex()}")
    try:
        backup_to(path, dest, expect)
        oid, copied = writer.put_file(dest)
        return oid, st, copied.st_size
    finally:
        remove_quietly(dest)
        for side in ("-journal", "-wal", "-shm"):
            remove_quietly(dest + side)


def _listed_database(path: str, expect: tuple[int, int] | None,
                     opener: Callable[[int], int] | None) -> os.stat_result | None:
    """The stat of the file if it is the listed one and a SQLite database, else None."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = opener(flags) if opener is not None else os.open(path, flags)
    except OSError as e:
        raise SourceError(path, f"{e.strerror}; skipped") from None
    try:
        st = os.fstat(fd)
        if expect is not None and (st.st_dev, st.st_ino) != expect:
            raise SourceError(path, "was replaced while the tree was read; skipped")
        if not stat.S_ISREG(st.st_mode) or os.pread(fd, len(SQLITE_MAGIC), 0) != SQLITE_MAGIC:
            return None
        return st
    finally:
        os.close(fd)
