"""Models kept in the store: import, versions, inventory, export, views.

A model is a named history: ``refs/models/<name>`` points at the newest
imported version, a snapshot whose tree is the model directory and whose
``model`` field names a model manifest.

Weights are stored raw: MLX reads them at memory speed, and zstd saves
about a fifth of bf16 at a fifth of that speed. By default each file is one
loose object, a plain file: ``mx.load`` reads it directly, and views and
Hugging Face cache links point at it without a second copy. Identical files
(a model under two names, a new revision that changed only its config) are
stored once. ``chunked=True`` cuts weight files at tensors instead, so a
fine-tune shares every unchanged tensor with its base, at the price of
loads about 2.5x slower (MLX has no uninitialized allocation to read into)
and a copied-out view.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import stat
import time
from dataclasses import dataclass, field
from typing import Callable

from ..durable import fsync_dirs
from ..errors import CasError, ModelNotFound, NotAModel, ObjectNotFound, SourceError
from ..model.history import History
from ..model.model_manifest import ModelFile, ModelManifest, TensorInfo, parse_safetensors
from ..model.refs import MODELS, check_ref_name
from ..model.snapshot import Snapshot
from ..model.tree import DIR, FILE, Tree, TreeEntry
from ..objectid import Hasher, ObjectId
from ..storage.encoding import Encoding
from ..storage.store import Store
from ..storage.workers import ordered_map
from ..storage.writer import ObjectWriter, Placement
from .restore import restore

HF_PREFIX = "models--"
VIEWS = "views"
_HASH_WINDOW = 8 << 20
_SPEC = re.compile(r"^(?P<name>[^@]+)(?:@(?P<version>[0-9]+|[0-9a-f]{6,64}))?\Z")


@dataclass(frozen=True)
class ModelSource:
    directory: str               # where the files are read
    kind: str                    # "directory" or "hf-cache"
    repo: str | None = None      # "org/name" for a Hugging Face repo
    revision: str | None = None

    def to_doc(self) -> dict:
        doc = {"kind": self.kind, "path": self.directory}
        if self.repo:
            doc["repo"] = self.repo
        if self.revision:
            doc["revision"] = self.revision
        return doc


@dataclass(frozen=True)
class ModelVersion:
    name: str
    number: int                  # 1 for the first import of the name
    snapshot: Snapshot
    manifest: ModelManifest

    @property
    def label(self) -> str:
        return f"{self.name}@{self.number}"


@dataclass
class ImportResult:
    version: ModelVersion
    new_objects: int
    new_bytes: int
    stored_bytes: int
    unchanged: bool


@dataclass(frozen=True)
class ModelRow:
    """One line of the inventory."""
    version: ModelVersion
    stored_bytes: int            # what its files take on disk (compressed, each piece once)
    shared_bytes: int            # of those, bytes other models' newest versions use too


# -- finding what to import ---------------------------------------------------

def find_model_source(src: str) -> ModelSource:
    path = os.path.abspath(src)
    if not os.path.exists(path):
        raise SourceError(src, "no such file or directory")
    if not os.path.isdir(path):
        raise NotAModel(src, "not a directory")
    base = os.path.basename(path.rstrip("/"))
    snapshots = os.path.join(path, "snapshots")
    if base.startswith(HF_PREFIX) and os.path.isdir(snapshots):
        repo = base[len(HF_PREFIX):].replace("--", "/", 1)
        revision = _hf_revision(path, snapshots)
        if revision is None:
            raise NotAModel(src, "a Hugging Face cache repo with no snapshot in snapshots/")
        return ModelSource(os.path.join(snapshots, revision), "hf-cache", repo, revision)
    names = os.listdir(path)
    if "config.json" not in names and not any(n.endswith((".safetensors", ".npz", ".gguf"))
                                              for n in names):
        raise NotAModel(src, "no config.json and no .safetensors, .npz or .gguf file")
    return ModelSource(path, "directory")


def _hf_revision(repo_dir: str, snapshots: str) -> str | None:
    try:
        with open(os.path.join(repo_dir, "refs", "main")) as f:
            rev = f.read().strip()
        if rev and os.path.isdir(os.path.join(snapshots, rev)):
            return rev
    except OSError:
        pass
    revs = [d for d in os.listdir(snapshots) if os.path.isdir(os.path.join(snapshots, d))]
    if not revs:
        return None
    return max(revs, key=lambda d: os.stat(os.path.join(snapshots, d)).st_mtime_ns)


def default_name(source: ModelSource) -> str:
    raw = source.repo.split("/")[-1] if source.repo else os.path.basename(source.directory)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.") or "model"
    return name


# -- import -------------------------------------------------------------------

def import_model(history: History, src: str, name: str | None = None, chunked: bool = False,
                 message: str = "", on_file: Callable[[int], None] | None = None) -> ImportResult:
    """Import a model directory or Hugging Face cache repo as a new version of
    ``name``; ``on_file(size)`` is called as each file is stored."""
    source = find_model_source(src)
    name = check_ref_name(name or default_name(source))
    store = history.store
    parent = model_head(history, name)
    number = parent.number + 1 if parent else 1
    with store.writer(placement=Placement(raw=True, whole=not chunked)) as writer:
        files: list[ModelFile] = []
        root = _store_dir(writer, source.directory, "", files, on_file=on_file)
        writer.flush()
        files.sort(key=lambda f: f.path)
        if parent is not None and parent.snapshot.tree == root:
            return ImportResult(parent, 0, 0, 0, unchanged=True)
        manifest = ModelManifest(name, tuple(files), _tensors(store, files),
                                 _config(store, files), source.to_doc())
        model_id = writer.put_bytes(manifest.to_json())
        mark_checked(store, [f.id for f in files if f.path.endswith(".safetensors")])
        stats = {"files": len(files), "bytes": manifest.bytes, "new_objects": writer.new_objects,
                 "new_bytes": writer.new_bytes, "stored_bytes": writer.stored_bytes}
        snapshot = Snapshot(
            tree=root, parents=(parent.snapshot.oid,) if parent else (), time_ns=time.time_ns(),
            message=message or f"import {source.repo or source.directory}",
            branch=MODELS[len("refs/"):] + name, host=socket.gethostname(), user=_user(),
            source=source.directory, stats=stats, model=model_id,
            model_version=number)
        recorded = history.record(snapshot, writer, ref=MODELS + name)
        counts = (writer.new_objects, writer.new_bytes, writer.stored_bytes)
    version = ModelVersion(name, number, recorded,
                           ModelManifest.from_json(manifest.to_json(), model_id))
    return ImportResult(version, *counts, unchanged=False)


def _store_dir(writer: ObjectWriter, directory: str, prefix: str, files: list[ModelFile],
               seen: frozenset = frozenset(),
               on_file: Callable[[int], None] | None = None) -> ObjectId:
    """Store a model directory, following links (a Hugging Face snapshot is
    links into blobs/); returns its tree id."""
    here = os.stat(directory)
    if (here.st_dev, here.st_ino) in seen:
        raise SourceError(directory, "a directory link leads back into itself; not imported")
    seen = seen | {(here.st_dev, here.st_ino)}
    entries = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise SourceError(os.fsencode(path).decode("utf-8", "backslashreplace"),
                              "a model's file names must be UTF-8; not imported") from None
        try:
            st = os.stat(path)
        except OSError as e:
            raise SourceError(path, f"cannot be read ({e.strerror})") from None
        rel = prefix + name
        if stat.S_ISDIR(st.st_mode):
            if name.startswith("."):
                continue  # .git, .cache/huggingface: tool state, not the model
            sub = _store_dir(writer, path, rel + "/", files, seen, on_file)
            entries.append(TreeEntry(os.fsencode(name), DIR, 0o755, st.st_mtime_ns, 0, sub))
        elif stat.S_ISREG(st.st_mode):
            oid, st = writer.put_file(path, follow_symlinks=True)
            entries.append(TreeEntry(os.fsencode(name), FILE, stat.S_IMODE(st.st_mode),
                                     st.st_mtime_ns, st.st_size, oid))
            files.append(ModelFile(rel, oid, st.st_size))
            if on_file is not None:
                on_file(st.st_size)
        else:
            raise SourceError(path, "not a regular file or directory; not imported")
    return writer.put_bytes(Tree.build(entries).to_json())


def _tensors(store: Store, files: list[ModelFile]) -> tuple[TensorInfo, ...]:
    """Every tensor of every safetensors file, hashed from what the store holds."""
    found: list[TensorInfo] = []
    for f in files:
        if not f.path.endswith(".safetensors"):
            continue

        def read_at(offset: int, n: int, oid: ObjectId = f.id, size: int = f.size) -> bytes:
            buf = bytearray(min(n, size - offset))
            store.read_into(oid, offset, buf)
            return bytes(buf)

        try:
            found.extend(parse_safetensors(read_at, f.size, f.path))
        except ValueError as e:
            raise NotAModel(f.path, str(e)) from None
    by_file = {f.path: f.id for f in files}

    def hashed(t: TensorInfo) -> TensorInfo:
        return TensorInfo(t.name, t.dtype, t.shape, t.file, t.start, t.stop,
                          _tensor_blake3(store, by_file[t.file], t))

    return tuple(ordered_map(hashed, found, ahead=4))


# -- checked marks: which model files were hashed, and under what file stats --

VERIFIED_TABLE = b"verified"


def _mark(store: Store, file_id: ObjectId) -> bytes:
    """The stat (size, mtime, ctime, inode) of every file holding ``file_id``.
    Any write to one of them, such as a flipped byte, changes the mark."""
    parts = []
    for path in store.backing_files(file_id):
        st = os.stat(path)
        parts.append(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}")
    return "|".join(parts).encode()


def is_checked(store: Store, file_id: ObjectId) -> bool:
    """Whether the file's tensors were hashed since its object files last changed."""
    try:
        return store.index.get(VERIFIED_TABLE, file_id.digest) == _mark(store, file_id)
    except (OSError, CasError):
        return False


def mark_checked(store: Store, file_ids: list[ObjectId]) -> None:
    store.index.update(VERIFIED_TABLE, put=[(f.digest, _mark(store, f)) for f in file_ids])


def _config(store: Store, files: list[ModelFile]) -> dict | None:
    for f in files:
        if f.path == "config.json":
            try:
                doc = json.loads(store.read_object(f.id))
            except (ValueError, UnicodeDecodeError):
                return None
            return doc if isinstance(doc, dict) else None
    return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


# -- checking -----------------------------------------------------------------

@dataclass
class ModelCheck:
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)  # "file[: tensor]: what is wrong"


def check_model(history: History, version: ModelVersion,
                on_file: Callable[[int], None] | None = None) -> ModelCheck:
    """Read every file of a version back: each must hash to its id, and each
    tensor to the BLAKE3 recorded at import."""
    store = history.store
    report = ModelCheck()
    tensors_of: dict[str, list[TensorInfo]] = {}
    for t in version.manifest.tensors:
        tensors_of.setdefault(t.file, []).append(t)

    def check(f: ModelFile) -> tuple[int, list[str]]:
        found: list[str] = []
        try:
            for _ in store.iter_content(f.id, check_chunks=True):
                pass
        except CasError as e:
            found.append(f"{f.path}: {e}")
            for t in tensors_of.get(f.path, []):
                if not _tensor_ok(store, f.id, t):
                    found.append(f"{f.path}: tensor '{t.name}' does not match its recorded BLAKE3")
        return f.size, found

    for size, found in ordered_map(check, version.manifest.files, ahead=2):
        report.files += 1
        report.bytes += size
        report.problems.extend(found)
        if on_file is not None:
            on_file(size)
    if not report.problems:
        mark_checked(store, [f.id for f in version.manifest.files if f.path in tensors_of])
    return report


def _tensor_ok(store: Store, file_id: ObjectId, t: TensorInfo) -> bool:
    try:
        return not t.blake3 or _tensor_blake3(store, file_id, t) == t.blake3
    except CasError:
        return False


def _tensor_blake3(store: Store, file_id: ObjectId, t: TensorInfo) -> str:
    """The BLAKE3 of a tensor's bytes as the store holds them, read in windows."""
    h = Hasher()
    buf = bytearray(min(_HASH_WINDOW, t.nbytes))
    pos = t.start
    while pos < t.stop:
        view = memoryview(buf)[:min(len(buf), t.stop - pos)]
        store.read_into(file_id, pos, view)
        h.update(view)
        pos += len(view)
    return h.object_id().hex


# -- versions -----------------------------------------------------------------

def model_head(history: History, name: str) -> ModelVersion | None:
    versions = model_versions(history, name)
    return versions[0] if versions else None


def model_versions(history: History, name: str) -> list[ModelVersion]:
    """Every recorded version of a model, newest first."""
    oid = history.refs.get(MODELS + name)
    if oid is None:
        return []
    # First parents, stepping over forgotten versions while their manifests
    # are still in the store (until gc), so that forgetting one version
    # does not hide the older ones.
    chain: list[Snapshot] = []
    seen: set[ObjectId] = set()
    snap: Snapshot | None = history.load_snapshot(oid)
    while snap is not None and snap.oid not in seen:
        seen.add(snap.oid)
        if history.is_recorded(snap.oid):
            chain.append(snap)
        parent = snap.parent
        try:
            snap = history.load_snapshot(parent) if parent is not None else None
        except ObjectNotFound:
            snap = None
    out = []
    for i, snap in enumerate(chain):
        # Numbers are stored at import; versions imported before they were
        # count from the oldest one reached.
        number = snap.model_version or len(chain) - i
        out.append(ModelVersion(name, number, snap, load_manifest(history, snap)))
    return out


def load_manifest(history: History, snap: Snapshot) -> ModelManifest:
    if snap.model is None:
        raise ModelNotFound(snap.oid.hex, "this snapshot is not a model version")
    return ModelManifest.from_json(history.store.read_object(snap.model), snap.model)


def resolve_model(history: History, spec: str, at_ns: int | None = None) -> ModelVersion:
    """NAME (newest), NAME@N (the Nth import), NAME@<snapshot id prefix>; with
    ``at_ns``, the newest version imported at or before that moment."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise ModelNotFound(spec, "not a model name")
    name, which = m.group("name"), m.group("version")
    versions = model_versions(history, name)
    if not versions:
        raise ModelNotFound(spec)
    if at_ns is not None:
        versions = [v for v in versions if v.snapshot.time_ns <= at_ns]
        if not versions:
            raise ModelNotFound(spec, "no version was imported by then")
    if which is None:
        return versions[0]
    if len(which) < 6 and which.isdigit():
        for v in versions:
            if v.number == int(which):
                return v
        numbers = sorted(v.number for v in versions)
        known = f"1 to {numbers[-1]}" if numbers == list(range(1, len(numbers) + 1)) \
            else ", ".join(map(str, numbers))
        raise ModelNotFound(spec, f"has versions {known}")
    hits = [v for v in versions if v.snapshot.oid.hex.startswith(which)]
    if len(hits) != 1:
        raise ModelNotFound(spec, "no version has that id" if not hits else "ambiguous id prefix")
    return hits[0]


# -- inventory ----------------------------------------------------------------

def list_models(history: History) -> list[ModelRow]:
    """The newest version of every model, with what it takes on disk and
    how much of that other models use too."""
    store = history.store
    heads = [v for name in sorted(history.refs.models()) if (v := model_head(history, name))]
    pieces: list[dict[ObjectId, int]] = []
    for v in heads:
        mine: dict[ObjectId, int] = {}
        for f in v.manifest.files:
            entry = store.index.lookup(f.id)
            if entry is None:
                continue  # missing: verify reports it
            if entry.encoding is Encoding.CHUNKED:
                for chunk, _ in store.chunk_list(f.id).chunks:
                    stored = store.index.lookup(chunk)
                    mine[chunk] = stored.stored_length if stored else 0
            else:
                mine[f.id] = entry.stored_length
        pieces.append(mine)
    users: dict[ObjectId, int] = {}
    for mine in pieces:
        for oid in mine:
            users[oid] = users.get(oid, 0) + 1
    return [ModelRow(v, sum(mine.values()), sum(n for oid, n in mine.items() if users[oid] > 1))
            for v, mine in zip(heads, pieces)]


def remove_model(history: History, name: str) -> int:
    """Drop a model and all its versions; gc reclaims what nothing else uses.
    Returns how many versions were dropped."""
    versions = model_versions(history, name)
    if not versions:
        raise ModelNotFound(name)
    history.refs.delete(MODELS + name)
    for v in versions:
        history.forget(v.snapshot.oid)
        shutil.rmtree(os.path.join(history.store.path, VIEWS, v.snapshot.oid.hex),
                      ignore_errors=True)
    return len(versions)


def export_model(history: History, version: ModelVersion, target: str):
    return restore(history, version.snapshot, target)


# -- views: a model as a plain directory, for tools that want a path ----------

@dataclass(frozen=True)
class ModelView:
    path: str
    linked_bytes: int            # files that are links into the store
    copied_bytes: int            # files written out because their object is not plain


def model_view(history: History, version: ModelVersion) -> ModelView:
    """A read-only directory of the model. A file stored as one raw object is a
    link to it; any other file is written out once, kept beside it, and
    counted in ``copied_bytes``. Views are derived: deleting one loses nothing."""
    store = history.store
    final = os.path.join(store.path, VIEWS, version.snapshot.oid.hex)
    linked = copied = 0
    plain = {f.path: store.plain_path(f.id) for f in version.manifest.files}
    for f in version.manifest.files:
        if plain[f.path]:
            linked += f.size
        else:
            copied += f.size
    if os.path.isdir(final):
        return ModelView(final, linked, copied)
    building = final + ".building-" + os.urandom(4).hex()
    os.makedirs(building)
    try:
        for f in version.manifest.files:
            path = os.path.join(building, *f.path.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if plain[f.path]:
                os.symlink(plain[f.path], path)
            else:
                with open(path, "wb") as out:
                    for block in store.iter_content(f.id):
                        out.write(block)
                    os.fchmod(out.fileno(), 0o444)
        fsync_dirs([building])
        try:
            os.rename(building, final)
        except OSError:
            if not os.path.isdir(final):
                raise
            shutil.rmtree(building, ignore_errors=True)  # another process built it first
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return ModelView(final, linked, copied)


def link_hf_cache(history: History, version: ModelVersion, hub: str) -> str:
    """Lay the model's view out as a Hugging Face cache repo under ``hub``:
    ``models--org--name/{blobs,snapshots/<rev>,refs/main}``, every file a link.
    Returns the snapshot directory (what ``mlx_lm.load`` would resolve to)."""
    view = model_view(history, version)
    repo = version.manifest.source.get("repo") or f"cas/{version.name}"
    repo_dir = os.path.join(hub, HF_PREFIX + repo.replace("/", "--"))
    rev = version.snapshot.oid.hex[:40]
    snap_dir = os.path.join(repo_dir, "snapshots", rev)
    blobs = os.path.join(repo_dir, "blobs")
    os.makedirs(blobs, exist_ok=True)
    for f in version.manifest.files:
        blob = os.path.join(blobs, f.id.hex)
        target = os.path.realpath(os.path.join(view.path, *f.path.split("/")))
        _replace_link(blob, target)
        link = os.path.join(snap_dir, *f.path.split("/"))
        os.makedirs(os.path.dirname(link), exist_ok=True)
        _replace_link(link, os.path.relpath(blob, os.path.dirname(link)))
    os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
    tmp = os.path.join(repo_dir, "refs", ".main.tmp")
    with open(tmp, "w") as out:
        out.write(rev)
    os.replace(tmp, os.path.join(repo_dir, "refs", "main"))
    return snap_dir


def _replace_link(path: str, target: str) -> None:
    if os.path.islink(path) and os.readlink(path) == target:
        return
    if os.path.lexists(path) and not os.path.islink(path):
        raise CasError(f"{path} exists and is not a link; not replaced")
    tmp = path + ".cas-tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)
