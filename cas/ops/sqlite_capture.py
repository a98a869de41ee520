"""Consistent copies of live SQLite databases.

A database being written by another process can be torn if its file is
read with plain reads: pages from before and after a commit, or a main file
whose latest commits still sit in its ``-wal``. SQLite's online backup API
copies the database under a read transaction, so the copy is one committed
state, WAL content included. The copy goes to a temp file in the store and
is stored in place of the file; writers are held up only for as long as a
read transaction lasts (WAL mode: not at all). An encrypted store must hold
no plaintext, temp files included, so there the copy is made in memory
(an in-memory database, then an anonymous memory file to read it from):
no copy of the database reaches a disk.

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

import contextlib
import errno
import os
import sqlite3
import stat
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator

from ..durable import remove_quietly
from ..errors import CasError, SourceError, StoreIsEncrypted, StoreWriteError
from ..objectid import ObjectId
from ..storage.chunking import SQLITE_MAGIC
from ..storage.config import StoreConfig
from ..storage.writer import ObjectWriter, identify_file

BUSY_TIMEOUT_S = 10         # a lock held this long without progress: the file is skipped
STEP_BUSY_S = 0.05          # SQLite's own wait per step, so a stop is seen between steps
STEP_SLEEP_S = 0.05         # the pause between steps that found the database locked
# The whole database in one step, under one read transaction: a copy made
# in several steps starts over whenever another process commits between
# them, and under a steady writer might never finish.
BACKUP_STEP_PAGES = -1
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
    bases: dict[bytes, list[bytes]] = {}
    for name in names:
        base = side_file_base(name)
        if base is not None and base in names:
            bases.setdefault(base, []).append(name)
    if not bases:
        return set()
    own_fd = dir_fd is None
    if dir_fd is None:
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
    journal = path + b"-journal" if isinstance(path, bytes) else path + "-journal"
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


def backup_to(path: str, dest: str, expect: tuple[int, int] | None = None,
              interrupted: Callable[[], bool] | None = None,
              on_copied: Callable[[sqlite3.Connection], None] | None = None) -> None:
    """Copy one committed state of the database at ``path`` into a new file ``dest``.

    SQLite opens the database by its path, which someone who can write in a
    directory on the way can point elsewhere for that moment. With
    ``expect`` (the listed device and inode), the file SQLite opened must be
    that one: one of this process's descriptors must be it once the
    connection is open, or nothing is copied.

    The copy is retried with a short busy timeout, so a lock held by
    another process is waited on in slices: the wait ends once
    ``interrupted()`` says so (a watcher stopping) or after
    ``BUSY_TIMEOUT_S`` without progress, and the file is reported as locked.
    ``on_copied`` is given the copy's connection before it is closed (for
    ``dest`` ":memory:", the only time the copy exists).
    """
    # Quoted from the bytes: a name that is not UTF-8 (surrogate escapes) is
    # still a name on disk, and quote() of the str would fail to encode it.
    uri = "file:" + urllib.parse.quote(os.fsencode(os.path.abspath(path))) + "?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True, timeout=STEP_BUSY_S)
    except sqlite3.Error as e:
        raise SourceError(path, f"cannot be opened as a SQLite database ({e})") from None
    waiting = _LockWait(interrupted)
    try:
        if expect is not None and not _holds_open(expect):
            raise SourceError(path, "was replaced while it was opened (a directory on the way "
                                    "changed); skipped")
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst, pages=BACKUP_STEP_PAGES, progress=waiting.step, sleep=STEP_SLEEP_S)
            if on_copied is not None:
                on_copied(dst)
        finally:
            dst.close()
    except BackupGaveUp as e:
        raise SourceError(path, str(e)) from None
    except sqlite3.Error as e:
        if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            # The copy's side (the source is opened read-only): the disk
            # under the store is full, which no retry of this file will fix.
            raise StoreWriteError(os.path.dirname(dest), os.strerror(errno.ENOSPC)) from None
        raise SourceError(path, f"SQLite backup failed ({e})") from None
    finally:
        src.close()


class BackupGaveUp(Exception):
    """Raised from the backup's progress callback: SQLite then abandons the copy."""


class _LockWait:
    """The progress callback of a stepped backup: counts time spent on a
    lock held by another process, and ends the wait when told to stop."""

    def __init__(self, interrupted: Callable[[], bool] | None):
        self._interrupted = interrupted
        self._since: float | None = None

    def step(self, status: int, remaining: int, total: int) -> None:
        if status not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            self._since = None  # progress: the next wait starts afresh
            return
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if self._interrupted is not None and self._interrupted():
            raise BackupGaveUp("locked by another process while stopping; not copied")
        if now - self._since >= BUSY_TIMEOUT_S:
            raise BackupGaveUp(f"locked by another process for {BUSY_TIMEOUT_S} s; not copied")


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
                opener: Callable[[int], int] | None = None,
                interrupted: Callable[[], bool] | None = None) -> tuple[ObjectId, os.stat_result, int]:
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
    with _scratch_copy(tmp_dir, _in_memory(tmp_dir)) as scratch:
        scratch.backup(path, expect, interrupted)
        oid, copied = writer.put_file(scratch.path, opener=scratch.opener)
        return oid, st, copied.st_size


def identify_sqlite(writer: None, path: str, tmp_dir: str,
                    expect: tuple[int, int] | None = None,
                    opener: Callable[[int], int] | None = None,
                    interrupted: Callable[[], bool] | None = None) -> tuple[ObjectId, os.stat_result, int]:
    """What ``read_sqlite`` would store, without storing it (status, diff):
    the id of a consistent copy, which is what a snapshot of a live database
    records, where the id of its raw bytes is not (they differ in the header,
    and by the commits still in its ``-wal``). The copy is made in
    ``tmp_dir`` if it can be written there (a read-only store: in a private
    directory of the system's), and removed."""
    st = _listed_database(path, expect, opener)
    if st is None:
        oid, st = identify_file(path, expect, opener)
        return oid, st, st.st_size
    in_memory = _in_memory(tmp_dir)
    with _scratch_copy(tmp_dir if os.access(tmp_dir, os.W_OK) else None, in_memory) as scratch:
        scratch.backup(path, expect, interrupted)
        oid, copied = identify_file(scratch.path, opener=scratch.opener)
        return oid, st, copied.st_size


def _in_memory(tmp_dir: str) -> bool:
    """Whether copies for the store whose temp directory this is must stay
    in memory: it is encrypted, or its config cannot tell (then the safe way)."""
    try:
        return StoreConfig.load(os.path.dirname(os.path.abspath(tmp_dir))).encryption is not None
    except (CasError, OSError):
        return True


class _Scratch:
    """Where a backup copy is made and read back: a file path, or memory.
    ``opener`` opens the copy for reading (None: open ``path`` as any file)."""

    def __init__(self, path: str, memory_fd: int = -1):
        self.path, self._memory_fd = path, memory_fd
        self.opener: Callable[[int], int] | None = None if memory_fd < 0 else self._open_memory
        self._copy = b""

    def backup(self, source: str, expect: tuple[int, int] | None,
               interrupted: Callable[[], bool] | None) -> None:
        if self._memory_fd < 0:
            backup_to(source, self.path, expect, interrupted)
            return
        backup_to(source, ":memory:", expect, interrupted, on_copied=self._serialize)
        # The in-memory database is closed by now: at most two copies at once.
        view, self._copy = memoryview(self._copy), b""
        while view:
            view = view[os.write(self._memory_fd, view):]

    def _serialize(self, copy: sqlite3.Connection) -> None:
        self._copy = copy.serialize()

    def _open_memory(self, flags: int) -> int:
        # A new open file of the memory file (its own offset), through its
        # /proc link: the one link that is followed, to a file of our own.
        return os.open(self.path, flags & ~os.O_NOFOLLOW)


@contextlib.contextmanager
def _scratch_copy(tmp_dir: str | None, in_memory: bool = False) -> Iterator[_Scratch]:
    """Where a backup copy goes. In memory for an encrypted store (an
    anonymous memory file, never on a disk). Else a new empty file, created
    here (not by SQLite, which would follow a link planted under its name)
    with a random name: in ``tmp_dir``, or in a private temporary directory
    if None; removed afterwards, with any side file SQLite made beside it."""
    if in_memory:
        with _memory_scratch() as scratch:
            yield scratch
        return
    directory = tempfile.mkdtemp(prefix="cas-sqlite-") if tmp_dir is None else tmp_dir
    private = directory if tmp_dir is None else None
    dest = os.path.join(directory, f"sqlite-{os.getpid()}-{os.urandom(6).hex()}")
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as e:
        if private:
            os.rmdir(private)
        raise StoreWriteError(directory, e.strerror or str(e)) from e
    os.close(fd)
    try:
        yield _Scratch(dest)
    finally:
        for name in ("", "-journal", "-wal", "-shm"):
            remove_quietly(dest + name)
        if private:
            os.rmdir(private)


@contextlib.contextmanager
def _memory_scratch() -> Iterator[_Scratch]:
    if not hasattr(os, "memfd_create"):
        raise StoreIsEncrypted("a consistent copy of a SQLite database",
                               "this system has no memory files; snapshot without --sqlite-backup")
    fd = os.memfd_create("cas-sqlite-copy", os.MFD_CLOEXEC)
    try:
        yield _Scratch(f"/proc/self/fd/{fd}", fd)
    finally:
        os.close(fd)


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
