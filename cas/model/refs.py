"""Branches, tags and HEAD.

Refs are small files in the store (``HEAD``, ``refs/heads/<name>``,
``refs/tags/<name>``, ``refs/models/<name>``), written atomically; the files
are the truth. In an encrypted store each is sealed to its place and named
by the label of its name (docs/FORMAT.md §18.7): the name lives inside, so a
listing opens every file to learn it.

Every ref write happens under ``refs/lock`` (an exclusive ``flock``), so a
writer can compare a ref with the value it started from and move it in one
step: two snapshots of one branch taken at once both land in its history.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import os
import re
import stat
import threading
from collections.abc import Iterator

from ..durable import atomic_output, fsync_dir, make_dir, read_bounded, remove_quietly
from ..errors import InvalidRefName, MetadataUnreadable, RefNameLooksLikeId, RefNotFound
from ..objectid import HEX_LENGTH, MIN_PREFIX, ObjectId, is_hex
from ..storage.crypto import SealError
from ..storage.store import Store

HEADS = "refs/heads/"
TAGS = "refs/tags/"
MODELS = "refs/models/"
NAMESPACES = (HEADS, TAGS, MODELS)
DEFAULT_BRANCH = "main"
LOCK = "refs/lock"
# One path component: no '/', no leading '-' or '.', no '..', no '.lock'
# suffix (git's rules, minus nesting, which keeps refs/ a flat directory).
_NAME = re.compile(r"^(?![-.])(?!.*\.\.)[A-Za-z0-9._-]+(?<!\.lock)\Z")
# A ref is 65 bytes and HEAD about 30: anything much larger is not a ref,
# and reading it whole (a link to /dev/zero) must not eat memory.
MAX_REF_BYTES = 4096


def check_ref_name(name: str) -> str:
    if not _NAME.match(name) or name == "HEAD" or len(name) > 200:
        raise InvalidRefName(name)
    return name


def looks_like_id(name: str) -> bool:
    return MIN_PREFIX <= len(name) <= HEX_LENGTH and is_hex(name.lower())


def check_new_ref_name(name: str) -> str:
    """A name for a ref about to be created: also refused when it would hide a snapshot id."""
    check_ref_name(name)
    if looks_like_id(name):
        raise RefNameLooksLikeId(name)
    return name


def read_small_file(path: str, limit: int) -> bytes | None:
    """A small metadata file's bytes, or None when it does not exist.

    Opened without following a link and without blocking (a FIFO), and
    read only if it is a regular file of at most ``limit`` bytes: anything
    else is damage, reported, never read.
    """
    try:
        return read_bounded(path, limit)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise MetadataUnreadable(path, e.strerror or str(e)) from None


def open_sealed(store: Store, relpath: str, data: bytes | None) -> bytes | None:
    """A small store file's content, opened with the store's keys (as it
    is in a plain store); None when it does not authenticate (damaged, moved
    from another file, or sealed by another store): the caller treats that
    as it treats a damaged file of its kind."""
    if data is None:
        return None
    try:
        return store.sealer.open_file(relpath, data)
    except SealError:
        return None


def _valid_ref(ref: str) -> bool:
    """``HEAD`` or ``refs/<kind>/<name>``: a ref never names a path elsewhere."""
    if ref == "HEAD":
        return True
    return any(ref.startswith(ns) and _NAME.match(ref[len(ns):]) is not None for ns in NAMESPACES)


def _open_lock(path: str, mode: int) -> int:
    """Open the lock file, creating it with the store's mode whatever the umask."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return os.open(path, flags)  # as it is: a read-only store is not changed
    try:
        os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return fd


class Refs:
    def __init__(self, store: Store):
        self._store = store
        self._root = store.path
        self._lock_thread = threading.Lock()
        self._lock_owner: int | None = None

    def _file(self, relpath: str) -> str:
        return os.path.join(self._root, *relpath.split("/"))

    def _relpath(self, ref: str) -> str:
        """Where a ref's file lives, relative to the store: ``refs/<kind>/``
        and its name, which an encrypted store replaces by the name's label."""
        if ref == "HEAD":
            return ref
        kind, _, name = ref.rpartition("/")
        return f"{kind}/{self._store.sealer.label(name)}"

    def _path(self, ref: str) -> str:
        return self._file(self._relpath(ref))

    # -- the lock ----------------------------------------------------------

    def _make_dirs(self, path: str) -> None:
        """refs/ and the directories below it, with the store's directory mode."""
        if os.path.isdir(path):
            return
        self._make_dirs(os.path.dirname(path))
        make_dir(path, self._store.layout.modes.directory)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``refs/lock`` exclusively: refs read inside stay as read until written.

        Re-entrant within a thread: a flock taken twice through two
        descriptors by one process would wait for itself forever.
        """
        me = threading.get_ident()
        if self._lock_owner == me:
            yield
            return
        with self._lock_thread:
            self._lock_owner = me
            try:
                with self._flock():
                    yield
            finally:
                self._lock_owner = None

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        path = self._file(LOCK)
        self._make_dirs(os.path.dirname(path))
        try:
            fd = _open_lock(path, self._store.layout.modes.file)
        except OSError as e:
            why = "is a symbolic link" if e.errno == errno.ELOOP else f"cannot be opened ({e.strerror})"
            raise MetadataUnreadable(path, why) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise MetadataUnreadable(path, "is not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    # -- HEAD --------------------------------------------------------------

    def head_branch(self) -> str:
        raw = read_small_file(self._file("HEAD"), MAX_REF_BYTES)
        if raw is None:
            return DEFAULT_BRANCH
        data = open_sealed(self._store, "HEAD", raw) or b""  # damaged: no branch name
        text = data.decode("utf-8", "replace").strip()
        name = text[len("ref: " + HEADS):] if text.startswith("ref: " + HEADS) else ""
        return check_ref_name(name)

    def set_head_branch(self, branch: str) -> None:
        check_ref_name(branch)
        data = self._store.sealer.seal_file("HEAD", f"ref: {HEADS}{branch}\n".encode())
        with atomic_output(self._file("HEAD"), self._store.layout.tmp,
                           self._store.layout.modes.file) as f:
            f.write(data)

    # -- branches and tags -------------------------------------------------

    def get(self, ref: str) -> ObjectId | None:
        if not _valid_ref(ref) or ref == "HEAD":
            return None
        found = self._read_file(self._relpath(ref))
        return found[1] if found is not None and found[0] == ref else None

    def _read_file(self, relpath: str) -> tuple[str, ObjectId] | None:
        """(ref, id) from the file at ``relpath``; None when there is none
        or it is not a ref (FORMAT §11, §18.7): listings skip it."""
        raw = read_small_file(self._file(relpath), MAX_REF_BYTES)
        data = open_sealed(self._store, relpath, raw)
        if data is None:
            return None
        try:
            text = data.decode("ascii")
            if not self._store.sealer.encrypted:
                return relpath, ObjectId.parse(text.strip())
            value, ref, rest = text.split("\n")
        except (UnicodeDecodeError, ValueError):
            return None
        if rest or not _valid_ref(ref) or ref == "HEAD" or self._relpath(ref) != relpath:
            return None  # the name inside must be the one the file is named for
        try:
            return ref, ObjectId.parse(value)
        except ValueError:
            return None

    def _content(self, ref: str, oid: ObjectId) -> bytes:
        """A ref file's bytes: the id, and in an encrypted store the ref's
        name too (its file name is only a label), sealed to its place."""
        if not self._store.sealer.encrypted:
            return oid.hex.encode() + b"\n"
        return self._store.sealer.seal_file(self._relpath(ref), f"{oid.hex}\n{ref}\n".encode())

    def set(self, ref: str, oid: ObjectId) -> None:
        with self.locked():
            self.write_locked(ref, oid)

    def write_locked(self, ref: str, oid: ObjectId) -> None:
        """Move a ref; the caller holds ``locked()``."""
        check_ref_name(ref.rpartition("/")[2])
        if not _valid_ref(ref):
            raise InvalidRefName(ref)
        path = self._path(ref)
        self._make_dirs(os.path.dirname(path))
        with atomic_output(path, self._store.layout.tmp, self._store.layout.modes.file) as f:
            f.write(self._content(ref, oid))

    def delete(self, ref: str) -> None:
        """Remove a ref; a ref that does not exist is an error the user can act on."""
        with self.locked():
            if self.get(ref) is None:
                raise RefNotFound(ref.rpartition("/")[2])
            remove_quietly(self._path(ref))
            fsync_dir(os.path.dirname(self._path(ref)))

    def _files(self, prefix: str) -> builtins.list[str]:   # the class's ``list`` shadows the type
        """The relative paths of the files under ``prefix`` named as refs are."""
        try:
            names = sorted(os.listdir(self._file(prefix.rstrip("/"))))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [prefix + name for name in names if _NAME.match(name)]

    def list(self, prefix: str) -> dict[str, ObjectId]:
        """Refs under ``prefix`` (e.g. ``refs/heads/``) by short name, read from the files.

        A file that is not a ref (bad content, a link, a FIFO, in an
        encrypted store one that does not open) is left out; ``cas verify``
        reports it.
        """
        found = {}
        for relpath in self._files(prefix):
            try:
                ref = self._read_file(relpath)
            except MetadataUnreadable:
                continue
            if ref is not None and ref[0].startswith(prefix):
                found[ref[0][len(prefix):]] = ref[1]
        return dict(sorted(found.items()))

    def unreadable(self) -> builtins.list[tuple[str, str]]:
        """(ref, why) for every file under refs/ that is not a readable ref."""
        bad = []
        why = "does not open as the ref it is named for (damaged, or moved from another file)" \
            if self._store.sealer.encrypted else "does not hold a snapshot id"
        for prefix in NAMESPACES:
            for relpath in self._files(prefix):
                try:
                    if self._read_file(relpath) is None:
                        bad.append((relpath, why))
                except MetadataUnreadable as e:
                    bad.append((relpath, str(e)))
        return bad

    def branches(self) -> dict[str, ObjectId]:
        return self.list(HEADS)

    def tags(self) -> dict[str, ObjectId]:
        return self.list(TAGS)

    def models(self) -> dict[str, ObjectId]:
        return self.list(MODELS)
