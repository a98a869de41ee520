"""The audit trail: an append-only, hash-chained log of what read content
from the store or changed it (``.cas/audit/log``, one JSON record a line).

Each record carries ``prev``, the BLAKE3 of the previous record's line, so a
changed byte, a removed line or a reordered pair breaks the chain where it
happened; ``seq`` numbers records from 1 so a gap is named. ``mac`` is kept
for encrypted stores (a MAC under a store key) and is null in plain ones.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pwd
import socket
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import StoreFileInvalid
from ..objectid import hash_bytes

AUDIT_DIR = "audit"
LOG_NAME = "log"
FORMAT_VERSION = 1
GENESIS = "0" * 64
_TAIL_READ = 64 << 10


def canonical_line(record: dict) -> bytes:
    """A record as its line: sorted keys, no spaces, UTF-8, one newline."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode() + b"\n"


def line_hash(line: bytes) -> str:
    """What the next record's ``prev`` holds: BLAKE3 of the line without its newline."""
    return hash_bytes(line.rstrip(b"\n")).hex


def iso_time(time_ns: int) -> str:
    seconds, ns = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns:09d}Z"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _texts(words: list[str]) -> list[str]:
    # Names that are not UTF-8 (kept by Python as lone surrogates) are
    # written with their bytes escaped: a record is always valid UTF-8.
    return [w.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            for w in words]


def new_record(command: list[str], *, refs: list[str], paths: list[str],
               created: list[str], removed: list[str], exit_code: int,
               message: str | None) -> dict:
    """The fields of one record, before the log numbers and chains it."""
    now, uid = time.time_ns(), os.getuid()
    return {
        "time": iso_time(now), "time_ns": now, "user": _user_name(uid), "uid": uid,
        "host": socket.gethostname(), "pid": os.getpid(), "command": _texts(command),
        "refs": _texts(refs), "paths": _texts(paths),
        "snapshots_created": created, "snapshots_removed": removed,
        "outcome": {"status": "ok" if exit_code == 0 else "error",
                    "exit_code": exit_code,
                    "message": None if message is None else _texts([message])[0]},
    }


@dataclass(frozen=True)
class ChainReport:
    records: int
    problem: str | None     # the first bad or missing record, in words


class AuditLog:
    def __init__(self, store_root: str, file_mode: int = 0o600, dir_mode: int = 0o700):
        self.directory = os.path.join(store_root, AUDIT_DIR)
        self.path = os.path.join(self.directory, LOG_NAME)
        self._file_mode, self._dir_mode = file_mode, dir_mode

    def append(self, fields: dict) -> dict:
        """Number, chain and append one record, fsync'd; OSError when the
        store or the log cannot be written (a read-only store)."""
        fd = self._open_for_append()
        try:
            # The log's own lock orders appenders: most commands hold the
            # store's lock shared, so it cannot order them.
            fcntl.flock(fd, fcntl.LOCK_EX)
            tail, torn = _last_line(fd)
            seq = _seq_of(tail) + 1 if tail else 1
            record = {**fields, "v": FORMAT_VERSION, "seq": seq,
                      "prev": line_hash(tail) if tail else GENESIS, "mac": None}
            line = canonical_line(record)
            # A line torn by a crash stays (verify names it); ours starts anew.
            os.write(fd, b"\n" + line if torn else line)
            os.fsync(fd)
            return record
        finally:
            os.close(fd)

    def _open_for_append(self) -> int:
        try:
            os.mkdir(self.directory, self._dir_mode)
            _set_mode(self.directory, os.O_RDONLY | os.O_DIRECTORY, self._dir_mode)
        except FileExistsError:
            pass
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(self.path, flags, self._file_mode)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise StoreFileInvalid(self.path, "is not a regular file")
        if st.st_size == 0 and stat.S_IMODE(st.st_mode) != self._file_mode:
            os.fchmod(fd, self._file_mode)  # new: the umask must not narrow a shared store's mode
        return fd

    def head(self) -> tuple[int, str] | None:
        """(record count, hash of the last line) now, or None for an empty
        or unreadable log (a snapshot then records no head)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            tail, torn = _last_line(fd)
        finally:
            os.close(fd)
        seq = _seq_of(tail) if tail and not torn else 0
        return (seq, line_hash(tail)) if seq else None

    def lines(self) -> list[bytes]:
        """Every line as written (each with its newline, a torn last one without)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return []
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StoreFileInvalid(self.path, "is a symbolic link") from None
            raise
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreFileInvalid(self.path, "is not a regular file")
            return f.read().splitlines(keepends=True)

    def records(self) -> Iterator[dict]:
        """The records that parse, in order (``verify`` says what does not)."""
        for line in self.lines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record

    def verify(self, heads: Iterable[tuple[str, int, str]] = ()) -> ChainReport:
        """Check the chain, then each (snapshot, count, hash) head recorded
        by a snapshot: a head past the end means records were cut off."""
        lines = self.lines()
        prev, count = GENESIS, 0
        for number, line in enumerate(lines, 1):
            problem = _check_line(line, number, prev)
            if problem:
                return ChainReport(count, problem)
            prev, count = line_hash(line), number
        for snapshot, records, digest in sorted(heads, key=lambda h: -h[1]):
            if records > count:
                return ChainReport(count, f"record {count + 1}: missing (snapshot {snapshot[:12]} "
                                          f"saw {records} records: the log was cut short)")
            if line_hash(lines[records - 1]) != digest:
                return ChainReport(count, f"record {records}: not the one snapshot "
                                          f"{snapshot[:12]} saw (the log was replaced)")
        return ChainReport(count, None)


def _set_mode(path: str, flags: int, mode: int) -> None:
    """chmod on a descriptor opened without following links (umask aside)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _check_line(line: bytes, number: int, prev: str) -> str | None:
    if not line.endswith(b"\n"):
        return f"record {number}: torn (no end of line)"
    try:
        record = json.loads(line)
    except ValueError:
        return f"record {number}: changed (not a valid record)"
    if not isinstance(record, dict) or canonical_line(record) != line:
        return f"record {number}: changed (not in canonical form)"
    seq = record.get("seq")
    if seq != number:
        if isinstance(seq, int) and seq > number:
            return f"record {number}: missing (found record {seq} in its place)"
        return f"record {number}: out of order or changed (it says it is record {seq})"
    if record.get("prev") != prev:
        what = "the start of the log" if number == 1 else f"record {number - 1}"
        return f"record {number}: does not follow {what} (one of them was changed or replaced)"
    return None


def _last_line(fd: int) -> tuple[bytes, bool]:
    """The file's last line and whether it lacks its newline (torn)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return b"", False
    span = _TAIL_READ
    while True:
        start = max(0, size - span)
        data = os.pread(fd, size - start, start)
        torn = not data.endswith(b"\n")
        body = data if torn else data[:-1]
        cut = body.rfind(b"\n")
        if cut >= 0 or start == 0:
            return body[cut + 1:] + (b"" if torn else b"\n"), torn
        span *= 4


def _seq_of(line: bytes) -> int:
    try:
        seq = json.loads(line).get("seq")
    except (ValueError, AttributeError):
        seq = None
    return seq if isinstance(seq, int) and seq > 0 else 0
