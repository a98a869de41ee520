"""Copy a store's whole history into another store (``cas copy``).

Ids are the plain BLAKE3 of content in every store, plain or encrypted, so
a copy goes by content: each object the target lacks is read from the
source (checked against its id) and written through the target's own
writer, which cuts it into chunks by the target's settings and seals it
when the target is encrypted. A file's id does not depend on how it is
cut, so the trees and manifests naming it stay valid byte for byte, and
every snapshot keeps its id.

Writes go in the order that keeps the target sound at any moment
(docs/FORMAT.md §18.10): every object durable and indexed first, then the
snapshot records, then refs, HEAD and policies. A copy killed anywhere
leaves objects no record names (gc removes them; the next copy skips
them) or records no ref names yet, never a record or ref naming what is
not there.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import CasError, ManifestInvalid, ObjectDamaged, ObjectNotFound, SameStore, StoreIsEncrypted
from ..model.history import History
from ..model.model_manifest import WEIGHT_SUFFIXES, ModelManifest
from ..model.policy import Policies
from ..model.refs import HEADS, MODELS, TAGS
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE, Tree, TreeEntry
from ..objectid import ObjectId, hash_bytes
from ..storage.store import Store
from ..storage.writer import ObjectWriter, Placement

# How far back through first and other parents a branch's new value is
# searched for its old one (a fast-forward).
_ANCESTRY_LIMIT = 1_000_000
_WEIGHT_SUFFIXES = tuple(s.encode() for s in WEIGHT_SUFFIXES)


@dataclass
class CopyReport:
    snapshots: int = 0             # recorded in the target by this copy
    snapshots_present: int = 0     # recorded there already
    objects: int = 0               # objects the target's writers stored
    bytes: int = 0                 # their content bytes
    stored_bytes: int = 0          # what they take on disk there
    objects_present: int = 0       # contents and manifests the target had
    refs: list[str] = field(default_factory=list)       # refs created or moved
    refused: list[tuple[str, str]] = field(default_factory=list)  # (ref or policy, why)
    policies: list[str] = field(default_factory=list)   # branches whose policy was copied
    head: str | None = None        # the branch HEAD was set to, when it was

    @property
    def ok(self) -> bool:
        return not self.refused

    def to_doc(self) -> dict:
        return {"snapshots": self.snapshots, "snapshots_present": self.snapshots_present,
                "objects": self.objects, "bytes": self.bytes, "stored_bytes": self.stored_bytes,
                "skipped": self.objects_present, "refs": self.refs,
                "refused": [{"ref": r, "why": why} for r, why in self.refused],
                "policies": self.policies, "head": self.head}


# How a content is stored, as the command that first stored it stores it:
# a snapshot's files, a model's files (raw, as an import keeps them), or a
# public model's weights (raw and, in an encrypted store, unsealed).
DATA, MODEL, PUBLIC = 0, 1, 2


@dataclass
class _Wanted:
    """One content the target lacks: how big, a name it had (for cutting),
    and how it is stored (the highest kind of any entry holding it)."""
    size: int
    name: str
    kind: int


@dataclass
class CopyPlan:
    """What a copy will write: found by walking the source's trees."""
    snapshots: list[tuple[Snapshot, bytes]] = field(default_factory=list)
    contents: dict[ObjectId, _Wanted] = field(default_factory=dict)
    manifests: list[ObjectId] = field(default_factory=list)   # trees, model manifests
    present: int = 0            # objects the target holds already
    recorded: int = 0           # snapshots the target has recorded already

    @property
    def total_bytes(self) -> int:
        return sum(w.size for w in self.contents.values())


def plan_copy(source: History, target: History) -> CopyPlan:
    """The snapshots the target has not recorded (oldest first) and every
    object they reach that it does not hold. Snapshots it has recorded are
    not walked: a record is written only once its objects are durable."""
    plan = CopyPlan()
    seen: set[ObjectId] = set()
    for snap in source.snapshots():
        oid = snap.stored_id
        if target.is_recorded(oid):
            plan.recorded += 1
            continue
        plan.snapshots.append((snap, _manifest_bytes(source, snap)))
        kind = DATA
        if snap.model is not None:
            _want_manifest(target, plan, seen, snap.model)
            kind = PUBLIC if _is_public(source, snap.model) else MODEL
        _walk_tree(source, target, plan, seen, snap.tree, kind)
    return plan


def _is_public(source: History, manifest: ObjectId) -> bool:
    return ModelManifest.from_json(source.store.read_object(manifest), manifest).public


def _manifest_bytes(source: History, snap: Snapshot) -> bytes:
    """The manifest's exact bytes: its object, or failing that its
    canonical form when that hashes to its id (the record's own bytes)."""
    oid = snap.stored_id
    try:
        return source.store.read_object(oid)
    except ObjectNotFound:
        data = snap.to_json()
        if hash_bytes(data) != oid:
            raise ManifestInvalid(f"snapshot {oid.hex}", "its manifest object is missing from "
                                                         "the source store") from None
        return data


def _want_manifest(target: History, plan: CopyPlan, seen: set[ObjectId], oid: ObjectId) -> bool:
    """Note a tree or model manifest to copy; False if already seen."""
    if oid in seen:
        return False
    seen.add(oid)
    if target.store.has(oid):
        plan.present += 1
    else:
        plan.manifests.append(oid)
    return True


def _walk_tree(source: History, target: History, plan: CopyPlan, seen: set[ObjectId],
               root: ObjectId, kind: int) -> None:
    """Every tree below ``root`` once (no recursion: an explicit stack),
    and every file content the target lacks. A tree is reached by its
    hash, so a loop cannot be written; the seen set bounds reuse."""
    stack = [root]
    _want_manifest(target, plan, seen, root)
    while stack:
        tid = stack.pop()
        tree = Tree.from_json(source.store.read_object(tid), tid)
        for entry in tree.entries:
            if entry.oid is None:
                continue
            if entry.kind == DIR:
                if _want_manifest(target, plan, seen, entry.oid):
                    stack.append(entry.oid)
            elif entry.kind == FILE:
                weights = kind == PUBLIC and entry.name.endswith(_WEIGHT_SUFFIXES)
                _want_content(target, plan, seen, entry, PUBLIC if weights else min(kind, MODEL))


def _want_content(target: History, plan: CopyPlan, seen: set[ObjectId], entry: TreeEntry,
                  kind: int) -> None:
    oid = entry.oid
    assert oid is not None   # a file entry always has one
    wanted = plan.contents.get(oid)
    if wanted is not None:
        wanted.kind = max(wanted.kind, kind)
        return
    if oid in seen:
        return
    seen.add(oid)
    if target.store.has(oid):
        plan.present += 1
        return
    plan.contents[oid] = _Wanted(entry.size, os.fsdecode(entry.name), kind)


# -- copying ---------------------------------------------------------------


def copy_store(source: History, target: History, force: bool = False,
               on_progress: Callable[[int], None] | None = None,
               plan: CopyPlan | None = None) -> CopyReport:
    """Copy every recorded snapshot of ``source`` with everything it
    reaches, then its branches, tags, models, HEAD and policies, into
    ``target``. A ref that exists in the target with another value moves
    only when the new value descends from it (or with ``force``); else it
    is left and named in ``refused``."""
    if _same_store(source.store, target.store):
        raise SameStore(source.store.path)
    plan = plan or plan_copy(source, target)
    report = CopyReport(snapshots_present=plan.recorded, objects_present=plan.present)
    with _Writers(target.store) as writers:
        _copy_contents(source.store, target.store, writers, plan, on_progress)
        for oid in plan.manifests:
            writers.data.put_bytes(source.store.read_object(oid))
        for _snap, data in plan.snapshots:
            writers.data.put_bytes(data)
        writers.flush()
        writers.count(report)
    _record(target, plan.snapshots)
    report.snapshots = len(plan.snapshots)
    _copy_refs(source, target, force, report)
    _copy_head(source, target, report)
    _copy_policies(source, target, force, report)
    return report


def _same_store(a: Store, b: Store) -> bool:
    return same_directory(a.path, b.path)


def same_directory(a: str, b: str) -> bool:
    """Whether two paths reach one directory (by device and inode)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class _Writers:
    """The target's writers, one per way of storing (made when first
    needed): ordinary content as a snapshot stores it, model files raw as
    an import stores them (whole unless the source had them cut, as
    ``model import --chunked`` does), a public model's weights unsealed."""

    def __init__(self, store: Store):
        self._store = store
        self.data = store.writer()
        self._made: dict[tuple[bool, bool], ObjectWriter] = {}

    def for_content(self, wanted: _Wanted, source_chunked: bool) -> ObjectWriter:
        if wanted.kind == DATA:
            return self.data
        key = (not source_chunked, wanted.kind == PUBLIC)
        writer = self._made.get(key)
        if writer is None:
            writer = self._store.writer(placement=Placement(raw=True, whole=key[0]), public=key[1])
            self._made[key] = writer
        return writer

    def _all(self) -> list[ObjectWriter]:
        return [self.data, *self._made.values()]

    def flush(self) -> None:
        for w in self._all():
            w.flush()

    def count(self, report: CopyReport) -> None:
        for w in self._all():
            report.objects += w.new_objects
            report.bytes += w.new_bytes
            report.stored_bytes += w.stored_bytes

    def __enter__(self) -> _Writers:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Each writer makes what it wrote durable, or abandons it on error.
        for w in self._all():
            w.__exit__(exc_type, exc, tb)


def _copy_contents(source: Store, target: Store, writers: _Writers, plan: CopyPlan,
                   on_progress: Callable[[int], None] | None) -> None:
    # Content below this size is never cut, whatever its name: read whole.
    small = min(target.config.live_chunk_min_size, target.config.chunk_min_size,
                target.config.loose_min_size)
    for oid, wanted in plan.contents.items():
        entry = source.entry(oid)
        writer = writers.for_content(wanted, entry.chunked)
        if entry.size < small:
            got = writer.put_bytes(source.read_object(oid))
        else:
            got = _put_large(source, target, writer, oid, wanted.name)
        if got != oid:
            raise ObjectDamaged(oid.hex, f"read from {source.path}, its content does not hash "
                                         "to its id")
        if on_progress is not None:
            on_progress(entry.size)


# Content up to this size is copied through a memory file and cut by NEW's
# rules as a snapshot of the file would be; larger content is streamed,
# keeping OLD's cuts, so memory stays bounded whatever the file's size.
MEMORY_FILE_MAX = 256 << 20


def _put_large(source: Store, target: Store, writer: ObjectWriter, oid: ObjectId,
               name: str) -> ObjectId:
    """Store content through the writer's file path, which cuts it as a
    snapshot of a file of that name would be cut: from the source's own
    file when the content lies there raw, else from an anonymous memory
    file holding it (never a file on disk: the target may be encrypted).
    Content larger than ``MEMORY_FILE_MAX`` is streamed instead: its
    chunks as OLD cut them, or its blocks into one loose object."""
    plain = source.plain_path(oid)
    if plain is not None:
        def opener(flags: int) -> int:
            return os.open(plain, flags | os.O_NOFOLLOW)
        return writer.put_file(name, opener=opener)[0]
    content = source.content(oid)
    if content is not None and content.size > MEMORY_FILE_MAX:
        if content.chunked:
            return writer.put_chunks(source.contents.checked_chunk(c) for c in content.chunks)
        return writer.put_stream(source.iter_content(oid))
    with _content_file(source, target, oid) as fd:
        return writer.put_file(name, opener=lambda _flags: os.dup(fd))[0]


@contextlib.contextmanager
def _content_file(source: Store, target: Store, oid: ObjectId) -> Iterator[int]:
    """A descriptor of a file holding ``oid``'s content (checked against
    its id), at offset 0, gone when the block ends."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("cas-copy", os.MFD_CLOEXEC)
    elif not target.sealer.encrypted:
        fd, temp = tempfile.mkstemp(prefix=".cas-copy-", dir=target.layout.tmp)
        os.unlink(temp)
    else:
        raise StoreIsEncrypted(f"copying {oid.short} through a temp file",
                               "this system has no memory files (memfd_create)")
    try:
        source.write_content(oid, fd)
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)


# -- records, refs, HEAD, policies ------------------------------------------


def _record(target: History, snapshots: list[tuple[Snapshot, bytes]]) -> None:
    """Record copied snapshots (their objects are durable and indexed) with
    their exact manifest bytes, as the history writes any record."""
    target.add_records(snapshots)


def _copy_refs(source: History, target: History, force: bool, report: CopyReport) -> None:
    """Branches, tags and models: new ones created, equal ones left, a
    branch or model moved when its new value descends from its old one;
    any other difference refused by name unless ``force``."""
    with target.refs.locked():
        for prefix in (HEADS, TAGS, MODELS):
            for name, oid in source.refs.list(prefix).items():
                ref = prefix + name
                current = target.refs.get(ref)
                if current == oid:
                    continue
                if current is not None and not force:
                    why = _refusal(source, prefix, current, oid)
                    if why is not None:
                        report.refused.append((ref, why))
                        continue
                target.refs.write_locked(ref, oid)
                report.refs.append(ref)


def _refusal(source: History, prefix: str, current: ObjectId, new: ObjectId) -> str | None:
    """Why moving a ref from ``current`` to ``new`` is refused; None for a
    fast-forward (a branch or model whose new value descends from the old)."""
    if prefix == TAGS:
        return f"names {current.short} in the target, {new.short} in the source"
    if _descends(source, new, current):
        return None
    return f"has diverged: {current.short} in the target is not an ancestor of {new.short}"


def _descends(history: History, start: ObjectId, ancestor: ObjectId) -> bool:
    """Whether ``ancestor`` is reached from ``start`` through parents, read
    from the manifests (forgotten snapshots still stored are stepped over)."""
    stack, seen = [start], set[ObjectId]()
    while stack and len(seen) < _ANCESTRY_LIMIT:
        oid = stack.pop()
        if oid == ancestor:
            return True
        if oid in seen:
            continue
        seen.add(oid)
        try:
            stack.extend(history.load_snapshot(oid).parents)
        except (CasError, OSError):
            continue  # collected or unreadable: the walk ends there
    return False


def _copy_head(source: History, target: History, report: CopyReport) -> None:
    """HEAD names the source's branch when the target has none of its own:
    no HEAD file, or one naming a branch that does not exist (a new store)."""
    branch = source.refs.head_branch()
    if target.refs.get(HEADS + branch) is None:
        return
    current = target.refs.head_branch() if _has_head(target) else None
    if current is not None and target.refs.get(HEADS + current) is not None:
        return
    if current != branch:
        target.refs.set_head_branch(branch)
        report.head = branch


def _has_head(history: History) -> bool:
    try:
        return stat.S_ISREG(os.lstat(os.path.join(history.store.path, "HEAD")).st_mode)
    except OSError:
        return False


def _copy_policies(source: History, target: History, force: bool, report: CopyReport) -> None:
    theirs, ours = Policies(source), Policies(target)
    for branch, policy in theirs.all().items():
        current = ours.get(branch)
        if current is not None and current.to_doc() == policy.to_doc():
            continue
        if current is not None and not force:
            report.refused.append((f"policies/{branch}", "differs in the target"))
            continue
        ours.set(branch, policy)
        report.policies.append(branch)
