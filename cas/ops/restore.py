"""Writing a snapshot (or some paths of it) back to a directory.

Every name has already been checked by ``Tree.from_json`` (no ``..``, ``/``,
NUL, duplicates), so a crafted manifest cannot name a path outside the
target. What is checked here is the target itself, which someone else may
be changing while we write: the target is walked with directory file
descriptors (``cas.dirfd``), so a directory swapped for a symbolic link
mid-run is an error for that entry and is never followed. Files are written
to a temp name (O_EXCL, O_NOFOLLOW) in their verified directory, given their
owner, mode and mtime on the fd, then renamed over the old name, so an
interrupted restore leaves each file either old or new, never torn. A
directory gets its owner, mode and mtimes on its fd once everything inside
it is done.

Owners are restored when running as root (by name where the name exists
here, else by number; by number alone with ``numeric_owner``). Where the
owner is not restored, set-user-ID and set-group-ID bits are cleared, as tar
does: a user's setuid file must not become root's.

A conflict (a file where the snapshot has a directory, a link where a
directory should be) is reported for that entry and the rest is restored.

What happens to a file or link that is already there is the ``Overwrite``
mode, as restic's ``--overwrite``: always replaced, replaced only if it
differs, or kept.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import secrets
import stat
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum

from ..dirfd import DirHandle, lstat_at, make_dir_at, open_dir_at
from ..errors import CasError, ManifestInvalid, PathNotInSnapshot, SourceError, TargetInStore
from ..model.history import History
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE, Owner, TreeEntry
from ..model.treewalk import TreeWalk
from ..objectid import hash_fd
from ..storage.store import STORE_DIR, dir_holds_store
from ..storage.workers import FILE_WORKERS
from .walk import Problem

# Tasks in flight at most, and what one task of small files holds.
WINDOW = 16
BATCH_FILES = 64
BATCH_BYTES = 4 << 20
SET_ID_BITS = stat.S_ISUID | stat.S_ISGID
# A store's config.json is a few hundred bytes; more is not one.
_MAX_CONFIG_BYTES = 64 << 10


class Overwrite(Enum):
    """What a restore does with a file or link already at a path it writes."""

    ALWAYS = "always"          # replace it
    IF_CHANGED = "if-changed"  # keep it when it is as recorded (size, mtime, mode; else content)
    NEVER = "never"            # keep it


@dataclass
class RestoreReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # existing files kept (Overwrite)

    def figures(self) -> dict:
        """The counts, as ``cas restore --json`` prints them (problems apart)."""
        return {"files": self.files, "dirs": self.dirs, "symlinks": self.symlinks,
                "bytes": self.bytes, "skipped": len(self.skipped)}


@dataclass(frozen=True)
class OwnerPolicy:
    """Whether recorded owners are applied, and how names map to ids."""

    restore: bool = False
    numeric: bool = False

    @classmethod
    def default(cls, numeric: bool = False) -> OwnerPolicy:
        return cls(restore=os.geteuid() == 0, numeric=numeric)

    def ids(self, owner: Owner | None) -> tuple[int, int] | None:
        if not self.restore or owner is None:
            return None
        if self.numeric:
            return owner.uid, owner.gid
        return _uid_for(owner.user, owner.uid), _gid_for(owner.group, owner.gid)


# A name lookup reads /etc/passwd (or asks NSS) each time: once per name is enough.
@functools.lru_cache(maxsize=4096)
def _uid_for(name: str | None, uid: int) -> int:
    try:
        return pwd.getpwnam(name).pw_uid if name else uid
    except KeyError:
        return uid


@functools.lru_cache(maxsize=4096)
def _gid_for(name: str | None, gid: int) -> int:
    try:
        return grp.getgrnam(name).gr_gid if name else gid
    except KeyError:
        return gid


def restore(history: History, snapshot: Snapshot, target: str, paths: list[bytes] | None = None,
            on_file: Callable[[int], None] | None = None,
            owners: OwnerPolicy | None = None, target_fd: int | None = None,
            overwrite: Overwrite = Overwrite.ALWAYS) -> RestoreReport:
    """Restore into ``target`` (or the open directory ``target_fd``, whose
    path ``target`` is then only used in messages).

    Nothing here checks whether a file replaced holds unsaved work: into a
    tracked tree, ``worktree.restore_to`` does that first."""
    report = RestoreReport()
    target_b = os.fsencode(os.path.abspath(target))
    store_st = os.stat(history.store.path)
    if target_fd is None:
        refuse_store_target(history, target)   # before any directory is made there
        os.makedirs(os.path.dirname(target_b), exist_ok=True)
        try:
            os.mkdir(target_b, 0o777)  # the target is not in the snapshot: umask decides
        except FileExistsError:
            pass
        # The target itself is named by the user, so a link to it is followed.
        root_fd = os.open(target_b, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        root_fd = os.dup(target_fd)
    try:
        _refuse_store_fd(root_fd, target, history.store.path, store_st)
    except BaseException:
        os.close(root_fd)
        raise
    restorer = _Restorer(history, report, on_file, owners or OwnerPolicy.default(),
                         store_st, overwrite)
    root = DirHandle(root_fd)
    try:
        with ThreadPoolExecutor(FILE_WORKERS, "cas-restore") as pool:
            restorer.pool = pool
            try:
                for rel in (paths or [b""]):
                    restorer.restore_path(snapshot, root, target_b, rel)
            finally:
                restorer.drain(0)  # every file in flight gives its directory back
    finally:
        root.release()
    return report


def refuse_store_target(history: History, target: str) -> None:
    """Refuse (``TargetInStore``) a target at or below a store directory:
    this store, or any directory holding a store's config. The nearest
    existing directory on the way to ``target`` is opened and compared by
    device and inode, so a link or ``..`` in the name changes nothing."""
    existing = os.path.abspath(target)
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    fd = os.open(existing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _refuse_store_fd(fd, target, history.store.path, os.stat(history.store.path))
    finally:
        os.close(fd)


def _refuse_store_fd(fd: int, target: str, store_path: str, store_st: os.stat_result) -> None:
    """Walk from the open directory ``fd`` up to the root through '..': a
    few calls per level, once per restore."""
    store_id = (store_st.st_dev, store_st.st_ino)
    here = os.dup(fd)
    try:
        while True:
            st = os.fstat(here)
            if (st.st_dev, st.st_ino) == store_id or dir_holds_store(here):
                raise TargetInStore(target, store_path)
            parent = os.open(b"..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=here)
            os.close(here)
            here = parent
            up = os.fstat(here)
            if (up.st_dev, up.st_ino) == (st.st_dev, st.st_ino):
                return   # the root is its own parent
    finally:
        os.close(here)


class _Restorer:
    def __init__(self, history: History, report: RestoreReport,
                 on_file: Callable[[int], None] | None, owners: OwnerPolicy,
                 store_st: os.stat_result, overwrite: Overwrite = Overwrite.ALWAYS):
        self.history = history
        self.overwrite = overwrite
        self.report = report
        self.on_file = on_file
        self.owners = owners
        self.store_id = (store_st.st_dev, store_st.st_ino)
        self.pool: ThreadPoolExecutor | None = None
        self.in_flight: deque[tuple[list, Future]] = deque()
        self.batch: list = []
        self.batch_bytes = 0

    def problem(self, path: bytes, message: str) -> None:
        self.report.problems.append(Problem(os.fsdecode(path), message))

    def restore_path(self, snapshot: Snapshot, root: DirHandle, target_b: bytes, rel: bytes) -> None:
        """Restore the entry at ``rel`` (b"": everything), creating the directories on the way."""
        parts = [p for p in rel.split(b"/") if p and p != b"."]
        label = snapshot.oid.short if snapshot.oid else "snapshot"
        parent, where, tree_id = root, target_b, snapshot.tree
        parent.hold()
        try:
            for i, part in enumerate(parts):
                entry = self.history.load_tree(tree_id).get(part)
                if entry is None:
                    raise PathNotInSnapshot(os.fsdecode(rel), label)
                if i == len(parts) - 1:
                    self.place_tree([entry], parent, where)
                    return
                if entry.kind != DIR:
                    raise SourceError(os.fsdecode(b"/".join(parts[:i + 1])),
                                      f"is a {entry.kind} in snapshot {label}, not a directory")
                handle = self.open_dir(parent, part, where + b"/" + part, entry)
                parent.release()
                assert entry.oid is not None   # a directory entry names its tree
                parent, where, tree_id = handle, where + b"/" + part, entry.oid
            self.place_tree(self.history.load_tree(tree_id).entries, parent, where)
        except ManifestInvalid:
            raise
        except (CasError, OSError) as e:
            self.problem(rel, _message(e))
        finally:
            parent.release()

    def place_tree(self, entries: Sequence[TreeEntry], parent: DirHandle, where: bytes) -> None:
        """Place entries (in the directory ``parent``, at ``where``) and
        everything below them, in the order of a ``TreeWalk``.

        A directory's own hold on its handle is given back once the walk
        has left it (all its children queued); each file still in flight
        holds it too.
        """
        handles = [parent]   # the directories the walk is in, ``parent`` first
        walk = TreeWalk(self.history.load_tree, entries=entries, prefix=where + b"/",
                        on_error=self.unreadable_tree)
        try:
            for path, entry, depth in walk:
                while len(handles) > depth + 1:
                    handles.pop().release()
                if not self.place(entry, handles[-1], path, handles):
                    walk.prune()
        finally:
            while len(handles) > 1:
                handles.pop().release()

    def place(self, entry: TreeEntry, parent: DirHandle, path: bytes,
              handles: list[DirHandle]) -> bool:
        """Place one entry; whether the walk goes on into it."""
        try:
            if entry.kind == DIR:
                handles.append(self.open_dir(parent, entry.name, path, entry))
                self.report.dirs += 1
                return True
            if entry.kind == FILE:
                self.submit(entry, parent, path)
            elif _keeps(self.overwrite, entry, parent.fd):
                self.report.skipped.append(os.fsdecode(path))
            else:
                _write_symlink(entry, parent.fd, self.owners.ids(entry.owner))
                self.report.symlinks += 1
        except ManifestInvalid:
            raise
        except (CasError, OSError) as e:
            self.problem(path, _message(e))
        return False

    def unreadable_tree(self, path: bytes, entry: TreeEntry, error: Exception) -> None:
        if isinstance(error, ManifestInvalid):
            raise error
        self.problem(path, _message(error))

    def open_dir(self, parent: DirHandle, name: bytes, path: bytes, entry: TreeEntry) -> DirHandle:
        if parent.parent is None and name == STORE_DIR.encode():
            raise SourceError(os.fsdecode(path), "a store directory is never written by a restore")
        fd, created = make_dir_at(parent.fd, name)
        if not created:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == self.store_id:
                os.close(fd)
                raise SourceError(os.fsdecode(path), "is the store itself; not written")
        return DirHandle(fd, parent, lambda dir_fd: self.apply_dir_meta(dir_fd, entry, path))

    def apply_dir_meta(self, fd: int, entry: TreeEntry, path: bytes) -> None:
        try:
            _apply_meta(fd, entry, self.owners.ids(entry.owner))
        except OSError as e:
            self.problem(path, e.strerror or str(e))

    def submit(self, entry: TreeEntry, parent: DirHandle, path: bytes) -> None:
        """Queue a file; small ones go to the workers many to a task.

        A task per small file cost more in hand-offs between threads (a
        future, wake-ups, the GIL passed back and forth) than most small
        files take to write, as with the scan's ``FileBatches``.
        """
        parent.hold()
        item = (path, parent, entry, self.owners.ids(entry.owner))
        if entry.size >= BATCH_BYTES:
            self._send([item])
            return
        self.batch.append(item)
        self.batch_bytes += entry.size
        if len(self.batch) >= BATCH_FILES or self.batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self._send(self.batch)
            self.batch, self.batch_bytes = [], 0

    def _send(self, items: list) -> None:
        work = [(entry, parent.fd, ids) for _, parent, entry, ids in items]
        assert self.pool is not None   # set by restore() before anything is placed
        self.in_flight.append((items, self.pool.submit(_write_files, self.history, work,
                                                       self.overwrite)))
        self.drain(WINDOW)

    def drain(self, keep: int) -> None:
        if keep == 0:
            self.flush()
        while len(self.in_flight) > keep:
            items, future = self.in_flight.popleft()
            try:
                results = future.result()
            except BaseException:
                for _, parent, _, _ in items:
                    parent.release()
                raise
            for (path, parent, _, _), result in zip(items, results, strict=True):
                self._collect(path, parent, result)

    def _collect(self, path: bytes, parent: DirHandle, result: int | Exception | None) -> None:
        if isinstance(result, Exception):
            self.problem(path, _message(result))
        elif result is None:
            self.report.skipped.append(os.fsdecode(path))
        else:
            self.report.files += 1
            self.report.bytes += result
            if self.on_file is not None:
                self.on_file(result)
        parent.release()


def _write_files(history: History, work: list, overwrite: Overwrite) -> list[int | Exception | None]:
    """Write a batch of files; each one's size, None if the file there was
    kept, or the error that stopped it."""
    results: list[int | Exception | None] = []
    for entry, dir_fd, ids in work:
        try:
            if _keeps(overwrite, entry, dir_fd, ids):
                results.append(None)
                continue
            results.append(_write_file(history, entry, dir_fd, ids))
        except (CasError, OSError) as e:
            results.append(e)
    return results


def _keeps(overwrite: Overwrite, entry: TreeEntry, dir_fd: int,
           ids: tuple[int, int] | None = None) -> bool:
    """Whether the file or link already at ``entry``'s name is kept.

    Only asked when the mode is not ``always``, so a restore into an empty
    directory makes no extra call per file.
    """
    if overwrite is Overwrite.ALWAYS:
        return False
    existing = lstat_at(dir_fd, entry.name)
    if existing is None or stat.S_ISDIR(existing.st_mode):
        return False  # nothing to keep (a directory is a conflict, reported by the write)
    if overwrite is Overwrite.NEVER:
        return True
    if entry.kind != FILE:
        return stat.S_ISLNK(existing.st_mode) and \
            os.readlink(entry.name, dir_fd=dir_fd) == entry.target
    if not stat.S_ISREG(existing.st_mode) or existing.st_size != entry.size:
        return False
    if existing.st_mtime_ns == entry.mtime_ns and stat.S_IMODE(existing.st_mode) == entry.mode:
        return True  # as restic's if-changed: size and mtime (and mode) as recorded
    return _same_content_kept(entry, dir_fd, ids)


def _same_content_kept(entry: TreeEntry, dir_fd: int, ids: tuple[int, int] | None) -> bool:
    """Hash the file there; when its content is the recorded one, only its
    owner, mode and mtime are set as recorded (on the open file)."""
    try:
        fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or hash_fd(fd) != entry.oid:
            return False
        _apply_meta(fd, entry, ids)
        return True
    finally:
        os.close(fd)


def _message(e: Exception) -> str:
    if isinstance(e, SourceError):
        return e.why
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


def _apply_meta(fd: int, entry: TreeEntry, ids: tuple[int, int] | None) -> None:
    """Owner, then mode (chown clears set-ID bits), then times, all on the fd."""
    mode = entry.mode
    if ids is not None:
        try:
            os.fchown(fd, *ids)
        except OSError:
            ids = None  # not permitted here (no CAP_CHOWN, an unmapped id)
    if ids is None:
        mode &= ~SET_ID_BITS
    os.fchmod(fd, mode)
    os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))


def _temp_name() -> bytes:
    return b".cas-restore-" + secrets.token_hex(8).encode()


def _write_file(history: History, entry: TreeEntry, dir_fd: int, ids: tuple[int, int] | None) -> int:
    existing = lstat_at(dir_fd, entry.name)
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise SourceError(os.fsdecode(entry.name), "exists as a directory; not replaced")
    temp = _temp_name()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)
    try:
        try:
            assert entry.oid is not None   # a file entry names its content
            history.store.write_content(entry.oid, fd)
            _apply_meta(fd, entry, ids)
        finally:
            os.close(fd)
        os.rename(temp, entry.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink_quietly(temp, dir_fd)
        raise
    return entry.size


def _write_symlink(entry: TreeEntry, dir_fd: int, ids: tuple[int, int] | None) -> None:
    """Make the link in a private directory of our own, give it its owner and
    times there, then rename it into place.

    A link has no descriptor to chown or utime through, only its name; in a
    directory someone else can write, that name could be swapped (for a hard
    link to a file of theirs) between creating it and changing it. Nobody
    but us can write in the private directory.
    """
    existing = lstat_at(dir_fd, entry.name)
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise SourceError(os.fsdecode(entry.name), "exists as a directory; not replaced")
    private = _temp_name()
    os.mkdir(private, 0o700, dir_fd=dir_fd)
    try:
        private_fd = open_dir_at(dir_fd, private)
        try:
            _check_private(private_fd)
            assert entry.target is not None   # a symlink entry has its target
            os.symlink(entry.target, b"link", dir_fd=private_fd)
            if ids is not None:
                os.chown(b"link", *ids, dir_fd=private_fd, follow_symlinks=False)
            os.utime(b"link", ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=private_fd,
                     follow_symlinks=False)
            os.rename(b"link", entry.name, src_dir_fd=private_fd, dst_dir_fd=dir_fd)
        except BaseException:
            _unlink_quietly(b"link", private_fd)
            raise
        finally:
            os.close(private_fd)
    finally:
        try:
            os.rmdir(private, dir_fd=dir_fd)
        except OSError:
            pass  # renamed away by someone else: theirs to remove


def _check_private(fd: int) -> None:
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise SourceError("", "a private directory of the restore was replaced; not used")


def _unlink_quietly(name: bytes, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
