"""Which directory a branch tracks, and which branch a directory belongs to.

A store named ``.cas`` tracks the directory it sits in, on the HEAD branch
(``main`` by default). A store elsewhere (an external disk) can hold several
source directories, each on its own branch; a branch's source is recorded in
every snapshot it has. A new source gets its base name as branch name; when
another directory of that base name already has it (``x/models`` and
``y/models``), the first free of ``models-2``, ``models-3``, ...: one branch
never mixes two directories' files.

What the working tree shows: the snapshot a whole-tree checkout last made
it match, recorded in the store's ``WORKTREE`` file (FORMAT §11.2) together
with the branch head it was taken against. A new snapshot moves the head,
and a record taken against another head is ignored: the record resets
itself, so snapshot and the watcher need not know about it. In an encrypted
store the record is sealed (docs/FORMAT.md §18.7).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from ..durable import atomic_output
from ..errors import CasError, MetadataUnreadable, WorktreeNotRecorded
from ..model.history import History
from ..model.refs import (
    HEADS,
    check_new_ref_name,
    check_ref_name,
    looks_like_id,
    open_sealed,
    read_small_file,
)
from ..model.snapshot import Snapshot
from ..model.tree import DIR
from ..objectid import ObjectId
from ..storage.store import STORE_DIR


class NoSource(CasError):
    def __init__(self, branch: str):
        super().__init__(
            f"branch {branch} has no snapshots and this store tracks no directory of its own: "
            "name the directory to snapshot (cas snapshot PATH)")


def own_tree(history: History) -> str | None:
    path = history.store.path
    return os.path.dirname(path) if os.path.basename(path) == STORE_DIR else None


def resolve_source(history: History, path: str | None, branch: str | None) -> tuple[str, str]:
    """(absolute source directory, branch) for a command on ``path``/``branch``."""
    if branch is not None and history.refs.get(HEADS + check_ref_name(branch)) is None:
        check_new_ref_name(branch)
    if path is None:
        branch = branch or history.refs.head_branch()
        head = history.branch_head(branch)
        if head is not None:
            return head.source, branch
        tree = own_tree(history)
        if tree is None:
            raise NoSource(branch)
        return tree, branch
    source = os.path.abspath(path)
    if branch is not None:
        return source, branch
    if source == own_tree(history):
        return source, history.refs.head_branch()
    taken = {}
    for name in history.refs.branches():
        head = history.branch_head(name)
        if head is not None and head.source == source:
            return source, name
        taken[name] = head
    return source, free_branch_name(plain_branch_name(source), taken)


def plain_branch_name(source: str) -> str:
    """The branch name a directory gets when no other directory has it."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", os.path.basename(source.rstrip("/")))
    name = name.strip("-")[:190]
    if looks_like_id(name):
        name += "-tree"  # a name like 'deadbeef' would hide snapshot ids starting so
    return name if name and name != "HEAD" else "tree"


def free_branch_name(name: str, taken) -> str:
    """``name``, or ``name-2``, ``name-3``, ... : the first no branch uses yet."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


# -- what the working tree shows ---------------------------------------------

WORKTREE_FILE = "WORKTREE"
MAX_WORKTREE_BYTES = 4096


@dataclass(frozen=True)
class WorktreeRecord:
    """The snapshot a whole-tree checkout made the tree match (``complete``)
    or was about to (not ``complete``: interrupted before it finished)."""

    snapshot: ObjectId
    branch: str
    branch_head: ObjectId | None   # the branch's head when it was written
    complete: bool

    def to_json(self) -> bytes:
        return json.dumps({"snapshot": self.snapshot.hex, "branch": self.branch,
                           "branch_head": self.branch_head.hex if self.branch_head else None,
                           "complete": self.complete}, sort_keys=True).encode() + b"\n"


def read_worktree_record(history: History) -> WorktreeRecord | None:
    """The record, or None when there is none or it is not one (damage is
    not trusted: status then compares against the branch head)."""
    try:
        raw = read_small_file(os.path.join(history.store.path, WORKTREE_FILE), MAX_WORKTREE_BYTES)
    except MetadataUnreadable:
        return None
    data = open_sealed(history.store, WORKTREE_FILE, raw)
    if data is None:
        return None
    try:
        doc = json.loads(data)
        head = doc["branch_head"]
        return WorktreeRecord(ObjectId.parse(doc["snapshot"]), check_ref_name(doc["branch"]),
                              ObjectId.parse(head) if head is not None else None,
                              doc["complete"] is True)
    except (ValueError, TypeError, KeyError, CasError):
        return None


def write_worktree_record(history: History, record: WorktreeRecord) -> None:
    """Replace the record durably (temp file, fsync, rename)."""
    layout = history.store.layout
    try:
        with atomic_output(os.path.join(history.store.path, WORKTREE_FILE), layout.tmp,
                           layout.modes.file) as f:
            f.write(history.store.sealer.seal_file(WORKTREE_FILE, record.to_json()))
    except OSError as e:
        raise WorktreeNotRecorded(e.strerror or str(e)) from None


@dataclass
class WorktreeState:
    """Which snapshot the working tree of the HEAD branch was last made to match."""

    source: str
    branch: str
    branch_head: Snapshot | None
    shows: Snapshot | None      # the branch head unless a checkout moved the tree
    interrupted: bool = False   # a checkout to ``shows`` stopped before it finished

    @property
    def detached(self) -> bool:
        """True when the tree was checked out to a snapshot other than the branch head."""
        return self.shows is not None and (self.branch_head is None
                                           or self.shows.oid != self.branch_head.oid)

    def to_doc(self) -> dict:
        return {"branch": self.branch, "source": self.source,
                "branch_head": _hex(self.branch_head), "worktree": _hex(self.shows),
                "detached": self.detached, "interrupted": self.interrupted}


def _hex(snapshot: Snapshot | None) -> str | None:
    return snapshot.oid.hex if snapshot is not None and snapshot.oid is not None else None


def worktree_state(history: History) -> WorktreeState:
    """What the working tree shows: the branch head, or the snapshot a
    whole-tree checkout made it match since the head last moved."""
    source, branch = resolve_source(history, None, None)
    head = history.branch_head(branch)
    state = WorktreeState(source, branch, head, head)
    record = read_worktree_record(history)
    if record is None or record.branch != branch or record.branch_head != _oid(head):
        return state  # none, or taken before the branch moved on: the head is what counts
    try:
        state.shows = history.load_snapshot(record.snapshot)
    except CasError:
        return state  # forgotten since: nothing better to compare with than the head
    state.interrupted = not record.complete
    return state


def _oid(snapshot: Snapshot | None) -> ObjectId | None:
    return snapshot.oid if snapshot is not None else None


def entry_in(load_tree, root, path: bytes):
    """The entry at ``path`` below tree ``root``, or None."""
    entry, current = None, root
    for part in (p for p in path.split(b"/") if p):
        if entry is not None and entry.kind != DIR:
            return None
        entry = load_tree(current).get(part)
        if entry is None:
            return None
        current = entry.oid
    return entry



def tracked_trees(history: History) -> dict[str, str]:
    """The directories the store's branches track, each with its branch:
    HEAD's first, then the store's own, then every other branch's (a
    store on another disk)."""
    found: dict[str, str] = {}
    try:
        source, branch = resolve_source(history, None, None)
        found[source] = branch
    except CasError:
        pass  # no snapshot yet, and no tree of its own
    own = own_tree(history)
    if own is not None:
        found.setdefault(own, history.refs.head_branch())
    for name in sorted(history.refs.branches()):
        try:
            head = history.branch_head(name)
        except CasError:
            continue  # a damaged head: verify reports it
        if head is not None:
            found.setdefault(head.source, name)
    return found


def inside(tree: str, path: str) -> str | None:
    """An absolute ``path`` relative to ``tree`` if it lies there, else None.

    Compared as written first, then with links resolved: the current
    directory and paths typed from ``pwd -P`` come with links resolved,
    a tree recorded through a link does not.
    """
    path = os.path.normpath(path)
    real_tree = os.path.realpath(tree)
    resolved = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    for root, candidate in ((tree, path), (real_tree, path), (real_tree, resolved)):
        root = os.path.normpath(root)
        candidate = os.path.normpath(candidate)
        if candidate == root:
            return ""
        prefix = root if root.endswith("/") else root + "/"
        if candidate.startswith(prefix):
            return candidate[len(prefix):]
    return None


def tracked_tree_of(history: History, target: str) -> tuple[str, str, bytes] | None:
    """(tree, its branch, the target's path inside it) when ``target`` is a
    directory this store tracks, or inside one; the innermost such tree."""
    best, depth = None, -1
    target = os.path.abspath(target)
    for tree, branch in tracked_trees(history).items():
        rel = inside(tree, target)
        if rel is not None and len(os.path.realpath(tree)) > depth:
            best, depth = (tree, branch, os.fsencode(rel)), len(os.path.realpath(tree))
    return best
