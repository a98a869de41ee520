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
thread, and the watcher tells databases apart with stat calls alone.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse

from ..errors import SourceError
from ..objectid import ObjectId
from ..storage.chunking import SQLITE_MAGIC
from ..storage.writer import ObjectWriter
from ..durable import remove_quietly

BUSY_TIMEOUT_S = 10
SQLITE_SIDE_FILES = (b"-wal", b"-shm", b"-journal")


def sqlite_side_files(directory: bytes, names: set[bytes]) -> set[bytes]:
    """The names in ``directory`` that are a SQLite database's side files
    (``X-wal``, ``X-shm``, ``X-journal`` beside a database ``X``): a backup
    of ``X`` already holds what they add."""
    return {name for name in names
            if any(name.endswith(s) and name[:-len(s)] in names for s in SQLITE_SIDE_FILES)}


def is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False  # the plain read reports why


def backup_to(path: str, dest: str) -> None:
    """Copy one committed state of the database at ``path`` into a new file ``dest``."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as e:
        raise SourceError(path, f"cannot be opened as a SQLite database ({e})") from None
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            dst.close()
    except sqlite3.Error as e:
        raise SourceError(path, f"SQLite backup failed ({e})") from None
    finally:
        src.close()


def read_sqlite(writer: ObjectWriter, path: str, tmp_dir: str) -> tuple[ObjectId, os.stat_result, int]:
    """Store a consistent copy of a database: its id, the stat of the live
    file (for the stat cache and the tree's mode and mtime), and the copy's size."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise SourceError(path, f"{e.strerror}; skipped") from None
    dest = os.path.join(tmp_dir, f"sqlite-{os.getpid()}-{os.urandom(6).hex()}")
    try:
        backup_to(path, dest)
        oid, copied = writer.put_file(dest)
        return oid, st, copied.st_size
    finally:
        remove_quietly(dest)
        for side in ("-journal", "-wal", "-shm"):
            remove_quietly(dest + side)
