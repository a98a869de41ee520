"""Reading a working tree into trees, using the stat cache.

A scan walks a source directory and produces, in memory, the tree manifest
of every directory, with the tree ids they would have. Files whose stat
(size, mtime, ctime, inode) matches the stat cache (cas/ops/statcache.py)
keep their recorded id without being read, as git's index does; others are
stored (for a snapshot) or only hashed (for status and diff), on all cores.

A targeted scan (a watcher's, which knows what changed) gives each
directory on the way to a change its tree in the base snapshot, as restic
passes a parent tree down: an entry the events did not touch is taken from
that tree without a stat call.
"""

from __future__ import annotations

import builtins
import grp
import operator
import os
import pwd
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..dirfd import DirHandle, open_beneath, open_dir_at
from ..errors import SourceError
from ..model.tree import DIR, FILE, SYMLINK, Owner, Tree, TreeEntry
from ..objectid import ObjectId, hash_bytes
from ..problems import ERROR, WARNING, Problem
from ..storage.chunking import SQLITE_MAGIC
from ..storage.config import CONFIG_FILE
from ..storage.store import Store, dir_holds_store
from ..storage.workers import FileBatches
from ..storage.writer import ObjectWriter, identify_file
from .ignore import load_ignore
from .sqlite_capture import SQLITE_SIDE_FILES, identify_sqlite, read_sqlite, sqlite_side_files
from .statcache import StatCache

STORE_MARKERS = {CONFIG_FILE.encode(), b"objects", b"packs", b"refs"}
COUNTS = ("files", "dirs", "symlinks", "bytes")
_NAME = operator.attrgetter("name")


@dataclass
class ScanResult:
    root: ObjectId
    trees: dict[ObjectId, Tree]
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    read_files: int = 0
    # Stat cache records to put and keys to delete (full keys of STAT_TABLE),
    # written by the snapshot once the contents they name are durable.
    # builtins.bytes: the field ``bytes`` above shadows the type in this class body
    cache_updates: dict[builtins.bytes, builtins.bytes] = field(default_factory=dict)
    cache_deletes: list[builtins.bytes] = field(default_factory=list)


@dataclass
class ScanPolicy:
    """How a watcher reads a live tree; a plain snapshot uses the defaults.

    ``held`` names files still being written: each keeps the entry it had in
    the previous snapshot (or stays out, for None), so a half-written file
    never enters history. With ``sqlite_backup``, SQLite databases are read
    through SQLite's online backup API, which copies one committed state
    even while another process writes, and their ``-wal``, ``-shm`` and
    ``-journal`` side files are left out: the copy already holds what they
    add.
    """

    held: dict[bytes, TreeEntry | None] = field(default_factory=dict)
    sqlite_backup: bool = False
    # A file that cannot be read keeps the entry this gives for its path
    # (the previous snapshot's), rather than vanishing from the snapshot
    # as if deleted; None, or no entry: it is left out.
    previous: Callable[[bytes], TreeEntry | None] | None = None
    targets: ScanTargets | None = None
    # True once a backup waiting on another process's lock should give up
    # (a watcher stopping): the file is then reported, and keeps its
    # previous entry where ``previous`` has one.
    interrupted: Callable[[], bool] | None = None


@dataclass
class ScanTargets:
    """What changed since a base snapshot, as a watcher saw it happen.

    With targets, a scan looks only at what changed: directories on the way
    to a change are listed again, changed paths are looked at afresh (a
    changed directory is scanned whole: it may have been moved in), and
    every other entry is taken from the base tree without a stat call. The
    result is the tree a full scan would give, as long as the events were
    complete; callers fall back to a full scan whenever they may not be
    (start-up, a queue overflow, a changed ignore file).
    """

    base: ObjectId                  # root tree of the previous snapshot of this source
    counts: dict                    # its files, dirs, symlinks and bytes
    changed: set[bytes]             # paths whose entry may differ
    relist: set[bytes]              # directories whose listing may differ

    def ancestors(self) -> set[bytes]:
        """Every directory that must be listed again (b"" is the root)."""
        out = {b""}
        for path in (*self.changed, *self.relist):
            parts = path.split(b"/")
            for i in range(1, len(parts)):
                out.add(b"/".join(parts[:i]))
        out.update(self.relist)
        return out


@dataclass
class _Dir:
    rel: bytes
    st: os.stat_result | None
    entries: list = field(default_factory=list)   # TreeEntry | _PendingFile | _Dir
    # This directory's tree in the base snapshot, in a targeted scan: its
    # entries the events did not touch are taken from it. None: read it all.
    base: Tree | None = None
    # The parent's open fd while directories under it wait to be listed.
    handle: DirHandle | None = None
    left_out: bool = False   # a store, or a directory that could not be opened


@dataclass
class _PendingFile:
    name: bytes
    rel: bytes
    ticket: tuple    # from FileBatches.add
    owner: Owner | None = None


@dataclass
class _Listing:
    """One directory while its listing is turned into entries."""

    node: _Dir
    fd: int
    side_files: set[bytes]          # SQLite side files left out (sqlite_backup)
    pushed: list[_Dir] = field(default_factory=list)   # subdirectories to list next


def scan(store: Store, source: str, branch: str, writer: ObjectWriter | None,
         on_file: Callable[[int], None] | None = None,
         policy: ScanPolicy | None = None, source_fd: int | None = None,
         on_total: Callable[[int, int], None] | None = None) -> ScanResult:
    """Scan ``source``; with a writer, new file contents and trees are stored.

    ``on_file(size)`` is called as each file is read; ``on_total(bytes,
    files)`` once, when the listing knows what is to be read (reads start
    during the listing, so some may be done by then). ``source_fd``, an
    open descriptor of ``source``, is used instead of opening it by path
    (checkout scans and writes through one descriptor).
    """
    source_b = os.fsencode(os.path.abspath(source))
    own_fd = source_fd is None
    if source_fd is None:
        try:
            # The source itself is named by the user: a link to it is followed.
            source_fd = os.open(source_b, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            # An unmounted or vanished source must not become an empty snapshot.
            raise SourceError(source, f"cannot be listed ({e.strerror})") from None
    try:
        found = _Scan(store, source_b, source_fd, branch, writer, on_file, policy or ScanPolicy())
        return found.run(on_total)
    finally:
        if own_fd:
            os.close(source_fd)


class _Scan:
    """One scan's state: what it reads from, what it knows, what it found."""

    def __init__(self, store: Store, source_b: bytes, source_fd: int, branch: str,
                 writer: ObjectWriter | None, on_file: Callable[[int], None] | None,
                 policy: ScanPolicy):
        self.store, self.source_b, self.source_fd = store, source_b, source_fd
        self.writer, self.on_file, self.policy = writer, on_file, policy
        self.targets = targets = policy.targets
        # A full scan looks at every file, so it reads the branch's whole
        # cache at once; a targeted one looks up the few it reads.
        self.cache = StatCache(store.index, branch, time.time_ns(), preload=targets is None)
        # Damage is rare: while any is recorded, every file is read once.
        self.reread = writer is not None and writer.replacing()
        # With targets: paths to look at afresh, and directories to list again.
        self.changed: set[bytes] = targets.changed if targets else set()
        self.ancestors: set[bytes] = targets.ancestors() if targets else set()
        self.ignore = load_ignore(os.fsdecode(source_b), dir_fd=source_fd)
        own = os.stat(store.path)
        self.own = (own.st_dev, own.st_ino)
        self.result = ScanResult(root=ObjectId(bytes(32)), trees={},
                                 problems=list(self.ignore.problems))
        # What the listing queued to be read: a progress bar's total.
        self.queued_bytes = self.queued_files = 0

    def problem(self, rel: bytes, message: str, severity: str = ERROR) -> None:
        self.result.problems.append(Problem(_shown(self.source_b, rel), message, severity))

    def run(self, on_total: Callable[[int, int], None] | None = None) -> ScanResult:
        targets, result = self.targets, self.result
        with FileBatches(lambda item: self.read_file(*item), self.store.config.chunk_min_size,
                         "cas-scan", catch=(SourceError,)) as self.batches:
            base = _load_tree(self.store, targets.base) if targets else None
            root = _Dir(b"", None, base=base)
            self.walk(root)
            if on_total is not None:
                on_total(self.queued_bytes, self.queued_files)
            self.batches.flush()
            result.root = self.finish(root)
        # A targeted scan only knows that the changed paths it did not see are gone.
        result.cache_updates, result.cache_deletes = \
            self.cache.changes(self.changed if targets else None)
        if targets is not None:
            self.count_from_base(targets)
        return result

    def count_from_base(self, targets: ScanTargets) -> None:
        """Counts of the whole tree: the base's, plus what differs between the
        two trees (shared subtrees are skipped by id)."""
        result = self.result
        delta = count_delta(lambda oid: result.trees.get(oid) or _load_tree(self.store, oid),
                            targets.base, result.root)
        for key, d in zip(COUNTS, delta, strict=True):
            setattr(result, key, targets.counts.get(key, 0) + d)

    def walk(self, root: _Dir) -> None:
        """List every directory, depth first, each through its parent's descriptor."""
        stack = [root]
        try:
            while stack:
                node = stack.pop()
                listed = _list_dir(self.source_b, self.source_fd, node, root, self.result)
                if listed is None:
                    continue
                dir_fd, items = listed
                here = _Listing(node, dir_fd, set())
                try:
                    self.visit(here, items)
                finally:
                    _share(dir_fd, here.pushed)
                stack.extend(reversed(here.pushed))
        finally:
            for node in stack:
                if node.handle is not None:
                    node.handle.release()

    def visit(self, here: _Listing, items: list[tuple[bytes, os.DirEntry]]) -> None:
        """Turn one directory's listing into entries, subdirectories and files to read."""
        node = here.node
        if _is_store(here.fd, items):
            node.left_out = True
            self.problem(node.rel, "is a cas store; not recorded", WARNING)
            return
        if self.policy.sqlite_backup:
            here.side_files = sqlite_side_files(_joined(self.source_b, node.rel),
                                                {name for name, _ in items}, dir_fd=here.fd)
        side_files = here.side_files
        for name, item in items:
            rel = node.rel + b"/" + name if node.rel else name
            if name in side_files or (node.base is not None and
                                      self.reuse_base(here, name, rel, item)):
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as e:
                self.problem(rel, f"{e.strerror}; skipped")
                continue
            self.add_entry(here, name, rel, st)

    def add_entry(self, here: _Listing, name: bytes, rel: bytes, st: os.stat_result) -> None:
        """One entry looked at afresh, by its kind."""
        mode = st.st_mode
        is_dir = stat.S_ISDIR(mode)
        if self.ignore.matches(os.fsdecode(rel), is_dir):
            return
        if is_dir:
            if (st.st_dev, st.st_ino) != self.own:
                self.add_dir(here, rel, st, None)
        elif stat.S_ISLNK(mode):
            self.add_symlink(here, name, rel, st)
        elif stat.S_ISREG(mode):
            self.add_file(here, name, rel, st)
        else:
            self.problem(rel, "is a special file; skipped", WARNING)

    def reuse_base(self, here: _Listing, name: bytes, rel: bytes, item: os.DirEntry) -> bool:
        """Take an entry the events did not touch from the directory's base tree
        (a directory on the way to a change is listed with its own base tree);
        False: look at it afresh."""
        assert here.node.base is not None
        if rel in self.changed:
            return False
        old = here.node.base.get(name)
        kind = _kind_of(item)
        if old is None or old.kind != kind:
            return False  # new here, or of another kind now: looked at as a full scan would
        if kind == DIR and rel in self.ancestors:
            assert old.oid is not None   # a directory always has its tree's id
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as e:
                self.problem(rel, f"{e.strerror}; skipped")
                return True
            self.add_dir(here, rel, st, _load_tree(self.store, old.oid))
            return True
        if kind == DIR or rel not in self.ancestors:
            here.node.entries.append(old)  # untouched since the base: no stat call
            return True
        return False

    def add_dir(self, here: _Listing, rel: bytes, st: os.stat_result, base: Tree | None) -> None:
        child = _Dir(rel, st, base=base)
        here.node.entries.append(child)
        here.pushed.append(child)

    def add_symlink(self, here: _Listing, name: bytes, rel: bytes, st: os.stat_result) -> None:
        try:
            target = os.readlink(name, dir_fd=here.fd)
        except OSError as e:
            self.problem(rel, f"{e.strerror}; skipped")
            return
        here.node.entries.append(TreeEntry(name, SYMLINK, stat.S_IMODE(st.st_mode),
                                           st.st_mtime_ns, len(target), None, target,
                                           owner_of(st)))
        self.result.symlinks += 1

    def add_file(self, here: _Listing, name: bytes, rel: bytes, st: os.stat_result) -> None:
        """A regular file: held, known by its stat, or queued to be read."""
        if rel in self.policy.held:
            self.add_held(here.node, rel)
            return
        side_files = here.side_files
        oid = self.cache.lookup(rel, st)
        if oid is not None and self.reread:
            oid = None  # damage is recorded: the file may hold it (ObjectWriter.replacing)
        if oid is not None and name + b"-wal" in side_files:
            oid = None  # committed pages may sit in the WAL, beyond the main file's stat
        if oid is not None and self.writer is not None and not self.store.has(oid):
            oid = None  # the cache outlived its object (gc, rebuild): read again
        if oid is not None:
            here.node.entries.append(TreeEntry(name, FILE, stat.S_IMODE(st.st_mode),
                                               st.st_mtime_ns, st.st_size, oid, None,
                                               owner_of(st)))
            self.result.files += 1
            self.result.bytes += st.st_size
            return
        sides = bool(side_files) and any(name + side in side_files for side in SQLITE_SIDE_FILES)
        self.queued_bytes += st.st_size
        self.queued_files += 1
        ticket = self.batches.add((rel, (st.st_dev, st.st_ino), sides), st.st_size)
        here.node.entries.append(_PendingFile(name, rel, ticket, owner_of(st)))

    def add_held(self, node: _Dir, rel: bytes) -> None:
        """A file still being written keeps its previous entry, or stays out."""
        kept = self.policy.held[rel]
        if kept is not None and kept.kind == FILE:
            self.keep(node.entries, kept)

    def keep(self, entries: list[TreeEntry], kept: TreeEntry) -> None:
        entries.append(kept)
        self.result.files += 1
        self.result.bytes += kept.size

    def read_file(self, rel: bytes, expect: tuple[int, int],
                  sqlite_sides: bool) -> tuple[ObjectId, os.stat_result, int]:
        # Opened beneath the source's descriptor following no link, and it
        # must be the very file the listing found: a directory on the way
        # swapped since it was listed makes the open or the check fail.
        path = _shown(self.source_b, rel)

        def opener(flags: int) -> int:
            return open_beneath(self.source_fd, rel, flags)

        writer, policy = self.writer, self.policy
        # A database being created has its journal or WAL before its header.
        if policy.sqlite_backup and (sqlite_sides or _is_listed_sqlite(opener, expect)):
            # Without a writer (status, diff) the copy is only hashed: it is
            # what a snapshot would store, where the raw bytes are not.
            capture: Callable[..., tuple[ObjectId, os.stat_result, int]] = \
                read_sqlite if writer is not None else identify_sqlite
            oid, st, size = capture(writer, path, self.store.layout.tmp, expect, opener,
                                    policy.interrupted)
        else:
            oid, st = identify_file(path, expect, opener) if writer is None else \
                writer.put_file(path, expect=expect, opener=opener)
            size = st.st_size
        if self.on_file is not None:
            self.on_file(size)
        return oid, st, size

    def finish(self, root: _Dir) -> ObjectId:
        """Resolve pending files and build trees bottom-up; returns the root's tree id.

        Without recursion: a tree may be deeper than Python's stack.
        """
        built: dict[int, ObjectId] = {}
        stack: list[tuple[_Dir, bool]] = [(root, False)]
        while stack:
            node, children_built = stack.pop()
            if not children_built:
                stack.append((node, True))
                # First subdirectory first, the order the walk listed them in:
                # its files were queued first, so trees get built as their files
                # come back, and the last trees are not left to build against
                # the readers of the last (largest) files for the GIL.
                stack.extend((d, False) for d in reversed(node.entries)
                             if isinstance(d, _Dir) and not d.left_out)
                continue
            built[id(node)] = self.build_tree(node, built)
        return built[id(root)]

    def build_tree(self, node: _Dir, built: dict[int, ObjectId]) -> ObjectId:
        entries: list[TreeEntry] = []
        for item in node.entries:
            if isinstance(item, TreeEntry):
                entries.append(item)
            elif isinstance(item, _Dir):
                if not item.left_out:
                    entries.append(self.dir_entry(item, built[id(item)]))
            else:
                self.add_read(entries, item)
        tree = Tree.build(entries)
        data = tree.to_json()
        oid = self.writer.put_bytes(data) if self.writer is not None else hash_bytes(data)
        self.result.trees[oid] = tree
        return oid

    def dir_entry(self, item: _Dir, oid: ObjectId) -> TreeEntry:
        assert item.st is not None   # only the root has none, and it is no entry
        self.result.dirs += 1
        return TreeEntry(item.rel.rsplit(b"/", 1)[-1], DIR, stat.S_IMODE(item.st.st_mode),
                         item.st.st_mtime_ns, 0, oid, None, owner_of(item.st))

    def add_read(self, entries: list[TreeEntry], item: _PendingFile) -> None:
        """The entry of a file read in the background, once its read is done."""
        try:
            oid, st, size = self.batches.result(item.ticket)
        except SourceError as e:
            self.unreadable(entries, item, e)
            return
        entries.append(TreeEntry(item.name, FILE, stat.S_IMODE(st.st_mode), st.st_mtime_ns,
                                 size, oid, None, item.owner))
        result = self.result
        result.files += 1
        result.bytes += size
        result.read_files += 1
        self.cache.record(item.rel, st, oid)

    def unreadable(self, entries: list[TreeEntry], item: _PendingFile, e: SourceError) -> None:
        """A file that could not be read keeps its previous entry where there is one."""
        previous = self.policy.previous
        # A file that is gone was deleted, not unreadable.
        kept = previous(item.rel) if previous is not None and os.path.lexists(e.path) else None
        if kept is None or kept.kind != FILE:
            self.result.problems.append(Problem(e.path, e.why, ERROR))
            return
        self.result.problems.append(Problem(e.path, f"{e.why}; the previous snapshot's "
                                                    "version is kept", ERROR))
        self.keep(entries, kept)


def _list_dir(source_b: bytes, source_fd: int, node: _Dir, root: _Dir,
              result: ScanResult) -> tuple[int, list[tuple[bytes, os.DirEntry]]] | None:
    """Open a directory (through its parent's fd, checked against the
    listing) and list it sorted by name; None, with a problem, if it cannot be."""
    try:
        if node is root:
            fd = os.dup(source_fd)
        else:
            assert node.handle is not None   # every directory below the root has its parent's
            try:
                fd = open_dir_at(node.handle.fd, node.rel.rpartition(b"/")[2], node.st)
            finally:
                node.handle.release()
                node.handle = None
    except OSError as e:
        result.problems.append(Problem(_shown(source_b, node.rel), f"{e.strerror}; skipped"))
        node.left_out = True  # recorded as nothing, like a directory that vanished
        return None
    try:
        os.lseek(fd, 0, os.SEEK_SET)  # a dup shares its offset: list from the start
        with os.scandir(fd) as it:
            # Sorted for a steady reading order; trees sort their entries by bytes themselves.
            items = [(os.fsencode(e.name), e) for e in sorted(it, key=_NAME)]
    except OSError as e:
        os.close(fd)
        if node is root:
            # An unmounted or vanished source must not become an empty snapshot.
            raise SourceError(os.fsdecode(source_b), f"cannot be listed ({e.strerror})") from None
        result.problems.append(Problem(_shown(source_b, node.rel), f"{e.strerror}; skipped"))
        return None
    return fd, items


def _share(dir_fd: int, children: list[_Dir]) -> None:
    """Keep a listed directory open for as long as subdirectories wait to be opened from it."""
    if not children:
        os.close(dir_fd)
        return
    handle = DirHandle(dir_fd)
    for child in children:
        handle.hold()
        child.handle = handle
    handle.release()


def _joined(source_b: bytes, rel: bytes) -> bytes:
    return source_b + b"/" + rel if rel else source_b


def _shown(source_b: bytes, rel: bytes) -> str:
    return os.fsdecode(_joined(source_b, rel))


def _is_store(dir_fd: int, items: list[tuple[bytes, os.DirEntry]]) -> bool:
    """Whether a listed directory is a cas store (its own config says so).

    A store inside a tree is never recorded as data, whichever store it
    is (restic's and borg's --exclude-caches do the same for their caches).
    """
    names = {name for name, _ in items if name in STORE_MARKERS}
    return names == STORE_MARKERS and dir_holds_store(dir_fd)


def _is_listed_sqlite(opener: Callable[[int], int], expect: tuple[int, int]) -> bool:
    """Whether the listed file is there and starts with SQLite's magic."""
    try:
        fd = opener(os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != expect:
            return False
        return os.pread(fd, len(SQLITE_MAGIC), 0) == SQLITE_MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def owner_of(st: os.stat_result) -> Owner:
    """The owner to record for a stat: ids, and names where the system has them."""
    key = (st.st_uid, st.st_gid)
    owner = _OWNERS.get(key)
    if owner is None:
        owner = _OWNERS[key] = Owner(st.st_uid, st.st_gid, _user_name(st.st_uid),
                                     _group_name(st.st_gid))
    return owner


_OWNERS: dict[tuple[int, int], Owner] = {}


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def _kind_of(item: os.DirEntry) -> str | None:
    """An entry's kind from the directory listing alone (no stat call)."""
    if item.is_symlink():
        return SYMLINK
    if item.is_dir(follow_symlinks=False):
        return DIR
    if item.is_file(follow_symlinks=False):
        return FILE
    return None


def _load_tree(store: Store, oid: ObjectId) -> Tree:
    return Tree.from_json(store.read_object(oid), oid)


def count_delta(load: Callable[[ObjectId], Tree], old: ObjectId | None,
                 new: ObjectId | None) -> list[int]:
    """[files, dirs, symlinks, bytes] of tree ``new`` minus those of ``old``.

    Without recursion: a tree may be deeper than Python's stack.
    """
    delta = [0, 0, 0, 0]
    pairs = [(old, new)]
    while pairs:
        old, new = pairs.pop()
        if old == new:
            continue
        before = {e.name: e for e in load(old).entries} if old is not None else {}
        after = {e.name: e for e in load(new).entries} if new is not None else {}
        for name in before.keys() | after.keys():
            o, n = before.get(name), after.get(name)
            if o == n:
                continue
            if o is not None and n is not None and o.kind == DIR and n.kind == DIR:
                pairs.append((o.oid, n.oid))
                continue
            for entry, sign in ((o, -1), (n, 1)):
                if entry is None:
                    continue
                if entry.kind == FILE:
                    delta[0] += sign
                    delta[3] += sign * entry.size
                elif entry.kind == SYMLINK:
                    delta[2] += sign
                else:
                    delta[1] += sign
                    pairs.append((entry.oid, None) if sign < 0 else (None, entry.oid))
    return delta
