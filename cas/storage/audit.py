"""The audit trail: an append-only, hash-chained log of what read content
from the store or changed it (``.cas/audit/log``, one JSON record a line).

Each record carries ``prev``, the BLAKE3 of the previous record's line, so a
changed byte, a removed line or a reordered pair breaks the chain where it
happened; ``seq`` numbers records from 1 so a gap is named. ``mac`` is null
in a plain store. In an encrypted store a record keeps only ``v``, ``seq``,
``prev`` and ``mac`` in the clear: its fields (who, when, what, outcome)
are one sealed value, and ``mac`` is a keyed BLAKE3 of the line under the
store's audit key, so a record cannot be forged or altered without the
keys (docs/FORMAT.md §18.9).
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hmac
import json
import os
import pwd
import socket
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import blake3

from ..errors import StoreFileInvalid, StoreIsEncrypted
from ..objectid import hash_bytes
from .crypto import PLAIN, PlainSealer, Sealer, SealError
from .keys import KEYS_DIR

AUDIT_DIR = "audit"
LOG_NAME = "log"
FORMAT_VERSION = 1
SEALED_VERSION = 2          # an encrypted store's record: its fields sealed
# A sealed record's fields are padded to a multiple of this, so a line's
# length tells little about the command, refs and paths it names.
SEALED_PAD = 128
_CLEAR = ("v", "seq", "prev", "mac")
GENESIS = "0" * 64
_TAIL_READ = 64 << 10
# No record comes near this (sealed ones are padded to 128 bytes of fields).
MAX_LINE = 1 << 20


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
    """The log of one store. ``sealer`` is the store's: given None, the log
    is read as a plain store's and an append into a store that has key
    slots (an encrypted one) is refused rather than written in the clear."""

    def __init__(self, store_root: str, file_mode: int = 0o600, dir_mode: int = 0o700,
                 sealer: Sealer | PlainSealer | None = None):
        self.root = store_root
        self.directory = os.path.join(store_root, AUDIT_DIR)
        self.path = os.path.join(self.directory, LOG_NAME)
        self._file_mode, self._dir_mode = file_mode, dir_mode
        self._sealer_given = sealer is not None
        self.sealer: Sealer | PlainSealer = sealer if sealer is not None else PLAIN

    @classmethod
    def of(cls, store) -> AuditLog:
        """The log of an open store, with its modes and its sealer."""
        modes = store.layout.modes
        return cls(store.path, modes.file, modes.directory, store.sealer)

    def append(self, fields: dict) -> dict:
        """Number, chain and append one record, fsync'd; OSError when the
        store or the log cannot be written (a read-only store)."""
        self._refuse_plaintext()
        fd = self._open_for_append()
        try:
            # The log's own lock orders appenders: most commands hold the
            # store's lock shared, so it cannot order them.
            fcntl.flock(fd, fcntl.LOCK_EX)
            tail, torn = _last_line(fd)
            seq = _seq_of(tail) + 1 if tail else 1
            prev = line_hash(tail) if tail else GENESIS
            record = self._record(fields, seq, prev)
            line = canonical_line(record)
            # A line torn by a crash stays (verify names it); ours starts anew.
            os.write(fd, b"\n" + line if torn else line)
            os.fsync(fd)
            return {**fields, **{k: record[k] for k in _CLEAR}}
        finally:
            os.close(fd)

    def _refuse_plaintext(self) -> None:
        if self._sealer_given or not os.path.isdir(os.path.join(self.root, KEYS_DIR)):
            return
        raise StoreIsEncrypted(f"the audit record for {self.root}",
                               "the record must be written through the unlocked store")

    def _record(self, fields: dict, seq: int, prev: str) -> dict:
        """The record as written: the fields in the clear, or sealed and MAC'd."""
        sealer = self.sealer
        if not isinstance(sealer, Sealer):
            return {**fields, "v": FORMAT_VERSION, "seq": seq, "prev": prev, "mac": None}
        record = {"v": SEALED_VERSION, "seq": seq, "prev": prev,
                  "sealed": seal_fields(sealer, seq, fields)}
        return {**record, "mac": record_mac(sealer, record)}

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
            return _bounded_lines(f)

    def records(self) -> Iterator[dict]:
        """The records that parse (in an encrypted store: that authenticate,
        unsealed), in order; ``verify`` says what does not."""
        for line in self.lines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if isinstance(self.sealer, Sealer):
                try:
                    record = open_record(self.sealer, record)
                except SealError:
                    continue
            yield record

    def verify(self, heads: Iterable[tuple[str, int, str]] = ()) -> ChainReport:
        """Check the chain, then each (snapshot, count, hash) head recorded
        by a snapshot: a head past the end means records were cut off."""
        lines = self.lines()
        prev, count = GENESIS, 0
        for number, line in enumerate(lines, 1):
            problem = _check_line(line, number, prev) or self._check_seal(line, number)
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


    def _check_seal(self, line: bytes, number: int) -> str | None:
        """In an encrypted store: the record's MAC and sealed fields."""
        if not isinstance(self.sealer, Sealer):
            return None
        try:
            open_record(self.sealer, json.loads(line))
        except SealError as e:
            return f"record {number}: {e}"
        return None


# -- sealed records (encrypted stores) ------------------------------------------


def _context(seq: int) -> bytes:
    # Binds sealed fields to their record number: moved elsewhere, they do not open.
    return b"cas audit record\0" + seq.to_bytes(8, "big")


def seal_fields(sealer: Sealer, seq: int, fields: dict) -> str:
    """A record's fields as one sealed value (base64), padded with spaces."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % SEALED_PAD)
    return base64.b64encode(sealer.seal_value(_context(seq), text)).decode("ascii")


def record_mac(sealer: Sealer, record: dict) -> str:
    """The keyed BLAKE3, under the store's audit key, of the record's
    canonical JSON without its ``mac`` member."""
    body = {k: v for k, v in record.items() if k != "mac"}
    text = canonical_line(body).rstrip(b"\n")
    return blake3.blake3(b"cas audit mac\0" + text, key=sealer.audit_key).hexdigest()


def open_record(sealer: Sealer, record: dict) -> dict:
    """A sealed record's fields with its clear ones; SealError if its MAC
    or its sealed value does not authenticate."""
    mac, seq, sealed = record.get("mac"), record.get("seq"), record.get("sealed")
    if record.get("v") != SEALED_VERSION or not isinstance(mac, str) or \
            not isinstance(sealed, str) or type(seq) is not int or seq < 1:
        raise SealError("not a sealed record (the log of an encrypted store holds only those)")
    if not hmac.compare_digest(mac, record_mac(sealer, record)):
        raise SealError("its MAC does not match (the record was changed or forged)")
    try:
        text = sealer.open_value(_context(seq), base64.b64decode(sealed, validate=True))
        fields = json.loads(text)
    except (ValueError, SealError) as e:
        raise SealError(f"its sealed fields do not open ({e})") from None
    if not isinstance(fields, dict):
        raise SealError("its sealed fields are not a record")
    return {**{k: v for k, v in fields.items() if k not in _CLEAR}, **{k: record.get(k) for k in _CLEAR}}


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


def _bounded_lines(f) -> list[bytes]:
    """The file's lines, each cut at ``MAX_LINE`` bytes: a line longer than
    any record (damage, or planted) is kept cut, without its newline, so
    that verification names it, and the rest of it is skipped unread into
    memory."""
    lines = []
    while line := f.readline(MAX_LINE + 1):
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
        lines.append(line)
    return lines


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
        if span >= MAX_LINE:
            # No record is this long: the tail is damage (verify names it),
            # read no further; the next record starts on a line of its own.
            return body[-MAX_LINE:], True
        span *= 4


def _seq_of(line: bytes) -> int:
    try:
        seq = json.loads(line).get("seq")
    except (ValueError, AttributeError):
        seq = None
    return seq if isinstance(seq, int) and seq > 0 else 0
