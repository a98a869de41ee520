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

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from ..durable import read_bounded, write_all
from ..errors import (
    CasError,
    ModelNotFound,
    NotAModel,
    ObjectNotFound,
    SourceError,
    StoreIsEncrypted,
    TargetRefused,
)
from ..model.history import History
from ..model.model_manifest import (
    WEIGHT_SUFFIXES,
    ModelFile,
    ModelManifest,
    TensorInfo,
    parse_safetensors,
)
from ..model.refs import MODELS, check_ref_name
from ..model.snapshot import Snapshot, new_snapshot
from ..model.tree import DIR, FILE, Tree, TreeEntry
from ..objectid import Hasher, ObjectId
from ..problems import Problem
from ..storage.store import Store
from ..storage.workers import ordered_map
from ..storage.writer import ObjectWriter, Placement
from .restore import RestoreReport, restore
from .usage import VIEWS, Reach, ReachWalker

HF_PREFIX = "models--"
_HASH_WINDOW = 8 << 20
_SPEC = re.compile(r"^(?P<name>[^@]+)(?:@(?P<version>[0-9]+|[0-9a-f]{6,64}))?\Z")


@dataclass(frozen=True)
class ModelSource:
    directory: str               # where the files are read
    kind: str                    # "directory" or "hf-cache"
    repo: str | None = None      # "org/name" for a Hugging Face repo
    revision: str | None = None
    root: str = ""               # links are followed only where they lead inside it

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
    """One line of the inventory: a model version and its sizes."""
    version: ModelVersion
    # ON DISK: the stored bytes (compressed) of the objects holding the
    # version's files (whole files, or their chunks), each once. Its tree,
    # manifest and record (a few KiB) are left out.
    stored_bytes: int
    # SHARED: of those, the bytes another recorded snapshot reaches too:
    # another version of this model, another model, or any snapshot.
    # ON DISK - SHARED is what forgetting this version alone and gc free.
    shared_bytes: int
    store: str | None = None     # the store's label in a merged inventory

    def to_doc(self) -> dict:
        """The row as ``cas model ls --json`` prints it."""
        v, m = self.version, self.version.manifest
        doc = {
            "name": m.source.get("repo") or v.name, "ref": v.name, "version": v.number,
            "snapshot": v.snapshot.stored_id.hex, "architecture": m.architecture,
            "parameters": params_text(m.parameters), "parameter_count": m.parameters,
            "framework": m.framework, "type": m.kind,
            "revision": m.source.get("revision") or v.snapshot.stored_id.hex[:40],
            "dtype": m.dtype, "quantization": m.quantization, "size_bytes": m.bytes,
            "stored_bytes": self.stored_bytes, "shared_bytes": self.shared_bytes,
            "modified": v.snapshot.time_iso[:19] + "Z", "note": v.snapshot.message,
            "files": [{"path": f.path, "size_bytes": f.size} for f in m.files],
        }
        if self.store is not None:
            doc["store"] = self.store
        return doc


def params_text(n: int) -> str:
    """A parameter count as model cards write it: 1.54B, 0.494B, 12.345M."""
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e9:.3f}B" if n >= 1e6 else f"{n / 1e6:.3f}M"


@dataclass
class ModelInventory:
    """The models of one store, or of several merged (``cas model ls``)."""
    store_paths: list[str]
    rows: list[ModelRow]
    merged: bool = False
    offline: list[dict] = field(default_factory=list)   # stores that could not be opened

    def to_doc(self) -> dict:
        """The inventory as ``cas model ls --json`` prints it."""
        one = len(self.store_paths) == 1 and not self.merged
        docs = [r.to_doc() for r in self.rows]
        doc = {
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "generator": "cas model ls",
            "store": self.store_paths[0] if one else self.store_paths,
            "device": store_device(self.store_paths[0]) if one else {"kind": "merged"},
            "model_count": len(docs),
            "total_size_bytes": sum(d["size_bytes"] for d in docs),
            "models": docs,
        }
        if self.merged:
            doc["offline_stores"] = self.offline
        return doc


def model_inventory(stores: list[tuple[str | None, str]], versions: bool = False,
                    on_skip: Callable[[str, CasError], None] | None = None) -> ModelInventory:
    """The inventory of the stores given as (label, path): one with label
    None, or several registered ones merged, where one that cannot be opened
    (an unplugged disk) is listed as offline instead of failing the rest.
    ``on_skip(what, error)`` hears of each version or store left out."""
    merged = len(stores) != 1 or stores[0][0] is not None
    inventory = ModelInventory([path for _, path in stores], [], merged)
    for label, path in stores:
        where = f"store '{label}': " if label else ""
        try:
            store = Store.open(path)
        except (CasError, OSError) as e:
            if not merged:
                raise
            inventory.offline.append({"store": label, "path": path, "error": str(e)})
            if on_skip is not None:
                on_skip(f"store '{label}' ({path}, offline)", CasError(str(e)))
            continue
        skip = None if on_skip is None else \
            (lambda what, e, where=where: on_skip(f"{where}model {what}", e))
        with store:
            inventory.rows.extend(list_models(History(store), skip, versions, label))
    return inventory


_REMOVABLE_ROOTS = ("/Volumes/", "/media/", "/run/media/", "/mnt/")


def store_device(path: str) -> dict:
    """Where a store lives, in the inventory's terms: the mount point, and
    whether it is the system disk or an external one."""
    mount = os.path.realpath(path)
    while not os.path.ismount(mount):
        mount = os.path.dirname(mount)
    device = {"kind": "external" if mount.startswith(_REMOVABLE_ROOTS) else "internal",
              "mount": mount, "volume": os.path.basename(mount) or socket.gethostname()}
    fs = _filesystem(mount)
    if fs:
        device["filesystem"] = fs
    return device


def _filesystem(mount: str) -> str | None:
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[1] == mount:
                    return parts[2]
    except OSError:
        pass
    return None


# -- reading inside one directory -------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO met where a file was expected must not hang the import.
_ANY_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_LINKS = 40          # as the kernel's own limit on links followed in one lookup
_MAX_REF = 255           # bytes of refs/main: one file name


class _Beneath:
    """Opens paths inside one directory, the root, as openat2's
    RESOLVE_BENEATH does: one component at a time from a directory fd,
    every link read and followed by hand, never a step out of the root (by
    ``..`` or by an absolute link that is not under it). What is opened is
    what was checked: the kernel never resolves a link on its own."""

    def __init__(self, root: str):
        self.root = root
        self._real = os.path.realpath(root)
        try:
            self._fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise SourceError(root, f"cannot be read ({e.strerror})") from None

    def close(self) -> None:
        os.close(self._fd)

    def path(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.root, *parts)

    def open(self, here: tuple[str, ...], rel: str, shown: str
             ) -> tuple[int, os.stat_result, tuple[str, ...]]:
        """Open ``rel``, relative to the directory ``here`` (components below
        the root, no links among them); returns the fd, its stat and where it
        is below the root."""
        parts, pending, links = list(here), _reversed_parts(rel), 0
        while pending:
            name = pending.pop()
            if name == "..":
                if not parts:
                    raise SourceError(shown, f"leads out of {self.root} (through '..'); "
                                             "links must stay inside it; not imported")
                parts.pop()
                continue
            dir_fd = self._open_dir(parts, shown)
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > _MAX_LINKS:
                        raise SourceError(shown, "too many levels of links; not imported")
                    target = os.readlink(name, dir_fd=dir_fd)
                    if target.startswith("/"):
                        parts, target = [], self._below_root(target, shown)
                    pending.extend(_reversed_parts(target))
                elif pending:
                    parts.append(name)
                else:
                    return self._open_last(dir_fd, name, st, shown) + (tuple(parts + [name]),)
            except OSError as e:
                raise SourceError(shown, f"cannot be read ({e.strerror})") from None
            finally:
                os.close(dir_fd)
        fd = self._open_dir(parts, shown)
        return fd, os.fstat(fd), tuple(parts)

    def _open_dir(self, parts: list[str], shown: str) -> int:
        fd = os.dup(self._fd)
        try:
            for name in parts:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except OSError as e:
            os.close(fd)
            raise SourceError(shown, f"cannot be read ({e.strerror}; a directory on the "
                                     "way is not one, or changed while it was read)") from None
        return fd

    @staticmethod
    def _open_last(dir_fd: int, name: str, listed: os.stat_result, shown: str
                   ) -> tuple[int, os.stat_result]:
        fd = os.open(name, _ANY_FLAGS, dir_fd=dir_fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (listed.st_dev, listed.st_ino):
            os.close(fd)
            raise SourceError(shown, "changed while it was read; not imported")
        return fd, st

    def _below_root(self, target: str, shown: str) -> str:
        for root in (self._real, os.path.abspath(self.root)):
            if target == root or target.startswith(root.rstrip("/") + "/"):
                return target[len(root):]
        raise SourceError(shown, f"is a link to {target}, outside {self.root}; "
                                 "links must stay inside it; not imported")


def _reversed_parts(text: str) -> list[str]:
    """The components of a relative path, last first (a stack to pop)."""
    return [p for p in reversed(text.split("/")) if p not in ("", ".")]


def _is_one_component(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name \
        and len(name.encode("utf-8", "surrogateescape")) <= _MAX_REF


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
        return ModelSource(os.path.join(snapshots, revision), "hf-cache", repo, revision,
                           root=path)
    names = os.listdir(path)
    if "config.json" not in names and not any(n.endswith((".safetensors", ".npz", ".gguf"))
                                              for n in names):
        raise NotAModel(src, "no config.json and no .safetensors, .npz or .gguf file")
    return ModelSource(path, "directory", root=path)


def _hf_revision(repo_dir: str, snapshots: str) -> str | None:
    """The revision ``refs/main`` names, if its snapshot exists; else the newest
    snapshot directory."""
    rev = _read_ref_main(repo_dir)
    if rev is not None and os.path.isdir(os.path.join(snapshots, rev)):
        return rev
    newest: tuple[int, str] | None = None
    with os.scandir(snapshots) as listing:
        for d in listing:
            if d.is_dir(follow_symlinks=False):
                mtime = d.stat(follow_symlinks=False).st_mtime_ns
                newest = max(newest or (mtime, d.name), (mtime, d.name))
    return newest[1] if newest else None


def _read_ref_main(repo_dir: str) -> str | None:
    """``refs/main``: one file name (a commit hash, as the Hub writes it), read
    from a regular file that is not a link; None when there is none."""
    shown = os.path.join(repo_dir, "refs", "main")
    try:
        refs_fd = os.open(os.path.join(repo_dir, "refs"), _DIR_FLAGS)
    except FileNotFoundError:
        return None
    except OSError:
        raise SourceError(os.path.dirname(shown), "is a link or not a directory; "
                                                  "not imported") from None
    try:
        fd = os.open("main", _ANY_FLAGS, dir_fd=refs_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        why = "is a link" if e.errno == errno.ELOOP else f"cannot be read ({e.strerror})"
        raise SourceError(shown, f"{why}; not imported") from None
    finally:
        os.close(refs_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(shown, "is not a regular file; not imported")
        data = os.read(fd, _MAX_REF + 1)
    finally:
        os.close(fd)
    rev = data.decode("utf-8", "replace").strip()
    if not rev:
        return None
    if len(data) > _MAX_REF or not _is_one_component(rev):
        raise SourceError(shown, f"holds {rev[:80]!r}, which is not a revision (one file "
                                 "name under snapshots/); not imported")
    return rev


def default_name(source: ModelSource) -> str:
    raw = source.repo.split("/")[-1] if source.repo else os.path.basename(source.directory)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.") or "model"
    return name


# -- import -------------------------------------------------------------------

def import_model(history: History, src: str, name: str | None = None, chunked: bool = False,
                 message: str = "", on_file: Callable[[int], None] | None = None,
                 public: bool = False) -> ImportResult:
    """Import a model directory or Hugging Face cache repo as a new version of
    ``name``; ``on_file(size)`` is called as each file is stored.

    ``public``: a public model, whose weights an encrypted store keeps raw
    (unsealed) so that MLX and views read them in place; recorded in the
    manifest. In a plain store it changes nothing else."""
    source = find_model_source(src)
    name = check_ref_name(name or default_name(source))
    store = history.store
    chain = _version_chain(history, name)
    parent, number = (chain[0][1], chain[0][0] + 1) if chain else (None, 1)
    placement = Placement(raw=True, whole=not chunked)
    with store.writer(placement=placement) as writer, \
            _weights_writer(store, writer, placement, public) as weights:
        files: list[ModelFile] = []
        root = _store_source(_Writers(writer, weights), source, files, on_file)
        weights.flush()  # the weights indexed before anything that names them
        writer.flush()
        files.sort(key=lambda f: f.path)
        unchanged = _unchanged(history, name, chain, root, public)
        if unchanged is not None:
            return ImportResult(unchanged, 0, 0, 0, unchanged=True)
        if public:
            _unseal_weights(store, placement, source, files)
        manifest = ModelManifest(name, tuple(files), _tensors(store, files),
                                 _config(store, files), source.to_doc(), public)
        model_id = writer.put_bytes(manifest.to_json())
        mark_checked(store, [f.id for f in files if f.path.endswith(".safetensors")])
        snapshot = new_snapshot(
            root, parent, message=message or f"import {source.repo or source.directory}",
            branch=MODELS[len("refs/"):] + name, source=source.directory,
            counts={"files": len(files), "bytes": manifest.bytes},
            written=_Written(*_counts(writer, weights)), model=model_id, model_version=number)
        recorded = history.record(snapshot, writer, ref=MODELS + name)
        counts = _counts(writer, weights)
    version = ModelVersion(name, number, recorded,
                           ModelManifest.from_json(manifest.to_json(), model_id))
    return ImportResult(version, *counts, unchanged=False)


def _unchanged(history: History, name: str, chain: list[tuple[int, Snapshot]],
               root: ObjectId, public: bool) -> ModelVersion | None:
    """The newest version, if it holds exactly ``root``, was imported as
    public or not alike, and its manifest reads; a damaged manifest is
    replaced by importing a new version."""
    if not chain or chain[0][1].tree != root:
        return None
    number, snap = chain[0]
    try:
        version = ModelVersion(name, number, snap, load_manifest(history, snap))
    except CasError:
        return None
    return version if version.manifest.public == public else None


class _Writers(NamedTuple):
    """Where an import stores a file: weights apart from the rest (the same
    writer, except for a public model in an encrypted store)."""
    rest: ObjectWriter
    weights: ObjectWriter

    def put_bytes(self, data: bytes) -> ObjectId:
        return self.rest.put_bytes(data)

    def for_path(self, rel: str) -> ObjectWriter:
        return self.weights if rel.endswith(WEIGHT_SUFFIXES) else self.rest


@contextlib.contextmanager
def _weights_writer(store: Store, writer: ObjectWriter, placement: Placement,
                    public: bool) -> Iterator[ObjectWriter]:
    """The writer of a model's weights: for a public model in an encrypted
    store, one whose loose objects are raw and unsealed (FORMAT §18.8)."""
    if not (public and store.sealer.encrypted):
        yield writer
        return
    with store.writer(placement=placement, public=True) as weights:
        yield weights


@dataclass
class _Written:
    """What an import's writers stored, as a snapshot's stats take it."""
    new_objects: int
    new_bytes: int
    stored_bytes: int


def _counts(writer: ObjectWriter, weights: ObjectWriter) -> tuple[int, int, int]:
    """New objects, their bytes, and the bytes they take stored, of both writers."""
    both = (writer,) if weights is writer else (writer, weights)
    return (sum(w.new_objects for w in both), sum(w.new_bytes for w in both),
            sum(w.stored_bytes for w in both))


def _unseal_weights(store: Store, placement: Placement, source: ModelSource,
                    files: list[ModelFile]) -> None:
    """Store again, raw, the weights of a public import that were already in
    an encrypted store sealed (from an earlier import that was not public):
    content already stored keeps its form unless it is named for replacing."""
    if not store.sealer.encrypted or not placement.whole:
        return  # chunked weights are never one plain file: nothing to gain
    sealed = [f for f in files if f.path.endswith(WEIGHT_SUFFIXES) and store.plain_path(f.id) is None]
    if not sealed:
        return
    with store.writer(placement=placement, replace=[f.id for f in sealed], public=True) as writer:
        beneath = _Beneath(source.root)
        try:
            start = os.path.relpath(source.directory, source.root)
            for f in sealed:
                fd, st, real = beneath.open((), f"{start}/{f.path}", f.path)
                os.close(fd)
                oid, _st = writer.put_file(beneath.path(real), expect=(st.st_dev, st.st_ino))
                if oid != f.id:
                    raise SourceError(os.path.join(source.directory, f.path),
                                      "changed while it was imported; not imported")
        finally:
            beneath.close()


@dataclass
class _Walk:
    """What an import's walk of the source shares."""
    writer: _Writers
    beneath: _Beneath
    shown: str                   # the source directory, for messages
    files: list[ModelFile]
    on_file: Callable[[int], None] | None


def _store_source(writer: _Writers, source: ModelSource, files: list[ModelFile],
                  on_file: Callable[[int], None] | None) -> ObjectId:
    """Store the source's files, reading nothing outside ``source.root``:
    links are followed only where they lead inside it (a Hugging Face
    snapshot is links into the repo's blobs/)."""
    beneath = _Beneath(source.root)
    try:
        start = os.path.relpath(source.directory, source.root)
        fd, st, here = beneath.open((), start, source.directory)
        try:
            if not stat.S_ISDIR(st.st_mode):
                raise NotAModel(source.directory, "not a directory")
            return _store_dir(_Walk(writer, beneath, source.directory, files, on_file),
                              fd, here, "", frozenset())
        finally:
            os.close(fd)
    finally:
        beneath.close()


def _store_dir(walk: _Walk, dir_fd: int, here: tuple[str, ...], prefix: str,
               seen: frozenset) -> ObjectId:
    """Store the directory open at ``dir_fd`` (``here`` below the root);
    returns its tree id."""
    st = os.fstat(dir_fd)
    if (st.st_dev, st.st_ino) in seen:
        raise SourceError(os.path.join(walk.shown, prefix),
                          "a directory link leads back into itself; not imported")
    seen = seen | {(st.st_dev, st.st_ino)}
    entries = []
    for name in sorted(os.listdir(dir_fd)):
        shown = os.path.join(walk.shown, prefix + name)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise SourceError(os.fsencode(shown).decode("utf-8", "backslashreplace"),
                              "a model's file names must be UTF-8; not imported") from None
        if name.startswith(".") and stat.S_ISDIR(
                os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            continue  # .git, .cache/huggingface: tool state, not the model
        fd, st, real = walk.beneath.open(here, name, shown)
        try:
            entries.extend(_store_entry(walk, fd, st, real, prefix + name, seen, shown))
        finally:
            os.close(fd)
    return walk.writer.put_bytes(Tree.build(entries).to_json())


def _store_entry(walk: _Walk, fd: int, st: os.stat_result, real: tuple[str, ...], rel: str,
                 seen: frozenset, shown: str) -> list[TreeEntry]:
    """The tree entry for one name of a model directory, its content stored."""
    name = os.fsencode(rel.rpartition("/")[2])
    if stat.S_ISDIR(st.st_mode):
        if name.startswith(b"."):
            return []  # a link to a directory, named as tool state
        sub = _store_dir(walk, fd, real, rel + "/", seen)
        return [TreeEntry(name, DIR, 0o755, st.st_mtime_ns, 0, sub)]
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(shown, "not a regular file or directory; not imported")
    # Read by path, but only if that path still reaches the very file
    # checked to be inside the root.
    oid, st = walk.writer.for_path(rel).put_file(walk.beneath.path(real),
                                                 expect=(st.st_dev, st.st_ino))
    walk.files.append(ModelFile(rel, oid, st.st_size))
    if walk.on_file is not None:
        walk.on_file(st.st_size)
    return [TreeEntry(name, FILE, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_size, oid)]


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
    """Remember the check, where the store can be written: a read-only store
    (a write-protected disk) is checked again next time instead of failing."""
    if store.read_only:
        return
    store.index.update(VERIFIED_TABLE, put=[(f.digest, _mark(store, f)) for f in file_ids])


def _config(store: Store, files: list[ModelFile]) -> dict | None:
    for f in files:
        if f.path == "config.json":
            try:
                doc = json.loads(store.read_object(f.id))
            except (ValueError, UnicodeDecodeError, RecursionError):
                return None
            return doc if isinstance(doc, dict) else None
    return None


# -- checking -----------------------------------------------------------------

@dataclass
class ModelCheck:
    files: int = 0
    bytes: int = 0
    # One per damaged file, then one per tensor of it that does not match:
    # path is the file's path in the model, oid its content's id.
    problems: list[Problem] = field(default_factory=list)
    damaged: list[ModelFile] = field(default_factory=list)

    def to_doc(self, label: str) -> dict:
        """The verdict as ``cas model verify --json`` prints it."""
        return {"model": label, "ok": not self.problems, "files": self.files,
                "bytes": self.bytes, "problems": [problem_text(p) for p in self.problems],
                "damage": [{"path": p.path, "message": p.message, "kind": p.kind,
                            "id": p.oid.hex if p.oid else None} for p in self.problems]}


def problem_text(p: Problem) -> str:
    """One problem of a model check as a line: 'file[: tensor ...]: what is wrong'."""
    return f"{p.path}: {p.message}"


def check_model(history: History, version: ModelVersion,
                on_file: Callable[[int], None] | None = None) -> ModelCheck:
    """Read every file of a version back: each must hash to its id, and each
    tensor to the BLAKE3 recorded at import."""
    store = history.store
    report = ModelCheck()
    tensors_of: dict[str, list[TensorInfo]] = {}
    for t in version.manifest.tensors:
        tensors_of.setdefault(t.file, []).append(t)

    def check(f: ModelFile) -> tuple[ModelFile, list[Problem]]:
        found: list[Problem] = []
        try:
            for _ in store.iter_content(f.id, check_chunks=True):
                pass
        except CasError as e:
            found.append(Problem(f.path, str(e), oid=f.id, kind="file"))
            found.extend(Problem(f.path, f"tensor '{t.name}' does not match its recorded BLAKE3",
                                 oid=f.id, kind="tensor")
                         for t in tensors_of.get(f.path, []) if not _tensor_ok(store, f.id, t))
        return f, found

    for f, found in ordered_map(check, version.manifest.files, ahead=2):
        report.files += 1
        report.bytes += f.size
        report.problems.extend(found)
        if found:
            report.damaged.append(f)
        if on_file is not None:
            on_file(f.size)
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
    chain = _version_chain(history, name)
    return _with_manifest(history, name, *chain[0]) if chain else None


def model_versions(history: History, name: str) -> list[ModelVersion]:
    """Every recorded version of a model, newest first."""
    return [_with_manifest(history, name, n, snap) for n, snap in _version_chain(history, name)]


def readable_versions(history: History, name: str,
                      on_skip: Callable[[str, CasError], None]) -> list[ModelVersion]:
    """The versions of a model whose manifests read; ``on_skip(label, error)``
    hears of each one that does not."""
    out = []
    for number, snap in _version_chain(history, name):
        try:
            out.append(_with_manifest(history, name, number, snap))
        except CasError as e:
            on_skip(f"{name}@{number}", e)
    return out


def _with_manifest(history: History, name: str, number: int, snap: Snapshot) -> ModelVersion:
    return ModelVersion(name, number, snap, load_manifest(history, snap))


def _version_chain(history: History, name: str,
                   tolerant: bool = False) -> list[tuple[int, Snapshot]]:
    """The recorded versions of a model with their numbers, newest first,
    from snapshots alone (no manifest is read, so one damaged manifest hides
    nothing else). ``tolerant``: a snapshot that cannot be read ends the
    walk instead of raising."""
    oid = history.refs.get(MODELS + name)
    if oid is None:
        return []
    # First parents, stepping over forgotten versions while their manifests
    # are still in the store (until gc), so that forgetting one version
    # does not hide the older ones.
    chain: list[Snapshot] = []
    seen: set[ObjectId] = set()
    next_id: ObjectId | None = oid
    while next_id is not None and next_id not in seen:
        seen.add(next_id)
        try:
            snap = history.load_snapshot(next_id)
        except ObjectNotFound:
            if next_id == oid:
                raise
            break  # gc removed the forgotten versions past here
        except CasError:
            if tolerant and next_id != oid:
                break
            raise
        if history.is_recorded(snap.stored_id):
            chain.append(snap)
        next_id = snap.parent
    # Numbers are stored at import; versions imported before they were
    # count from the oldest one reached.
    return [(snap.model_version or len(chain) - i, snap) for i, snap in enumerate(chain)]


def load_manifest(history: History, snap: Snapshot) -> ModelManifest:
    if snap.model is None:
        raise ModelNotFound(snap.stored_id.hex, "this snapshot is not a model version")
    return ModelManifest.from_json(history.store.read_object(snap.model), snap.model)


def resolve_model(history: History, spec: str, at_ns: int | None = None) -> ModelVersion:
    """NAME (newest), NAME@N (the Nth import), NAME@<snapshot id prefix>; with
    ``at_ns``, the newest version imported at or before that moment. Only the
    chosen version's manifest is read."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise ModelNotFound(spec, "not a model name")
    name, which = m.group("name"), m.group("version")
    versions = _version_chain(history, name)
    if not versions:
        raise ModelNotFound(spec)
    if at_ns is not None:
        versions = [(n, s) for n, s in versions if s.time_ns <= at_ns]
        if not versions:
            raise ModelNotFound(spec, "no version was imported by then")
    if which is None:
        return _with_manifest(history, name, *versions[0])
    if len(which) < 6 and which.isdigit():
        for n, snap in versions:
            if n == int(which):
                return _with_manifest(history, name, n, snap)
        numbers = sorted(n for n, _ in versions)
        known = f"1 to {numbers[-1]}" if numbers == list(range(1, len(numbers) + 1)) \
            else ", ".join(map(str, numbers))
        raise ModelNotFound(spec, f"has versions {known}")
    hits = [(n, s) for n, s in versions if s.stored_id.hex.startswith(which)]
    if len(hits) != 1:
        raise ModelNotFound(spec, "no version has that id" if not hits else "ambiguous id prefix")
    return _with_manifest(history, name, *hits[0])


# -- inventory ----------------------------------------------------------------

def list_models(history: History, on_skip: Callable[[str, CasError], None] | None = None,
                versions: bool = False, label: str | None = None) -> list[ModelRow]:
    """The newest version of every model (every version with ``versions``),
    with what it takes on disk and how much of that is shared (see
    ModelRow). With ``on_skip(name, error)``, a version that cannot be read
    is reported there and left out, instead of failing the whole listing."""
    listed: list[ModelVersion] = []
    for name in sorted(history.refs.models()):
        try:
            if versions:
                skip = on_skip or _raise
                listed.extend(readable_versions(history, name, skip))
            else:
                head = model_head(history, name)
                listed.extend([head] if head is not None else [])
        except CasError as e:
            if on_skip is None:
                raise
            on_skip(name, e)
    sizes = _SharedSizes(history)
    return [ModelRow(v, *sizes.of(v.snapshot), store=label) for v in listed]


def model_log(history: History, name: str,
              on_skip: Callable[[str, CasError], None] | None = None) -> list[ModelRow]:
    """Every version of one model, newest first, with its sizes (``cas model
    log``); ``on_skip(label, error)`` hears of a version whose manifest does
    not read, else the error is raised."""
    if history.refs.get(MODELS + name) is None:
        raise ModelNotFound(name)
    versions = readable_versions(history, name, on_skip or _raise)
    sizes = _SharedSizes(history)
    return [ModelRow(v, *sizes.of(v.snapshot)) for v in versions]


def _raise(_what: str, error: CasError) -> None:
    raise error


class _SharedSizes:
    """ON DISK and SHARED of model versions: the file content each version
    reaches, and which of it another recorded snapshot (another version, another model's,
    or any other snapshot) reaches too."""

    def __init__(self, history: History):
        self.store = history.store
        self.reach_of: dict[ObjectId, set[bytes]] = {}
        self.users: dict[bytes, int] = {}          # digest: model versions reaching it
        self.snapshots = Reach()                    # what every other snapshot reaches
        walker = ReachWalker(history)
        for snap in history.snapshots():
            try:
                if snap.model is None:
                    walker.add(self.snapshots, snap)
                    continue
                mine = Reach()
                ReachWalker(history).add(mine, snap)  # its own walk: shared trees count too
            except CasError:
                continue   # a damaged snapshot shares nothing; verify names it
            self.reach_of[snap.stored_id] = mine.content
            for digest in mine.content:
                self.users[digest] = self.users.get(digest, 0) + 1
        history.tree_links.flush()
        self.others = self.snapshots.all()

    def of(self, snap: Snapshot) -> tuple[int, int]:
        on_disk = shared = 0
        others = self.others
        for digest in self.reach_of.get(snap.stored_id, ()):
            entry = self.store.index.lookup(ObjectId(digest))
            if entry is None:
                continue  # missing: verify reports it
            on_disk += entry.stored_length
            if self.users.get(digest, 0) > 1 or digest in others:
                shared += entry.stored_length
        return on_disk, shared


def remove_model(history: History, name: str,
                 on_link_left: Callable[[str, str], None] | None = None) -> int:
    """Drop a model and all its versions; gc reclaims what nothing else uses.
    Returns how many versions were dropped. Works on damaged versions: no
    manifest is read, and a snapshot that cannot be read ends the walk.
    Removes the links ``link_hf_cache`` made that are still as made;
    ``on_link_left(path, why)`` hears of each it could not remove."""
    head = history.refs.get(MODELS + name)
    if head is None:
        raise ModelNotFound(name)
    try:
        ids = [snap.stored_id for _, snap in _version_chain(history, name, tolerant=True)] \
            or [head]
    except CasError:
        ids = [head]  # the newest snapshot itself is unreadable
    history.refs.delete(MODELS + name)
    for oid in ids:
        history.forget(oid)
    _remove_views(history.store, [view_name(history.store, oid) for oid in ids])
    _remove_links(history.store, name, on_link_left or (lambda path, why: None))
    return len(ids)


def export_model(history: History, version: ModelVersion, target: str,
                 on_file: Callable[[int], None] | None = None) -> RestoreReport:
    """Write the version out as a plain model directory; ``on_file(size)``
    is called as each file is written (the total is ``manifest.bytes``)."""
    return restore(history, version.snapshot, target, on_file=on_file)


# -- views: a model as a plain directory, for tools that want a path ----------

@dataclass(frozen=True)
class ModelView:
    path: str
    linked_bytes: int            # files that share the store's bytes (a clone or a link)
    copied_bytes: int            # files written out because their object is not plain


def model_view(history: History, version: ModelVersion) -> ModelView:
    """A read-only directory of the model. A file stored as one raw object is
    a copy-on-write clone of it where the filesystem has clones (APFS, btrfs,
    XFS), else a link to it, the object file made read-only; any other file is
    written out once, kept beside it, and counted in ``copied_bytes``. Views
    are derived: deleting one loses nothing."""
    store = history.store
    refuse_plaintext(store, version, "a view of")
    name = view_name(store, version.snapshot.stored_id)
    final = os.path.join(store.path, VIEWS, name)
    plain = {f.path: store.plain_path(f.id) for f in version.manifest.files}
    linked = sum(f.size for f in version.manifest.files if plain[f.path])
    view = ModelView(final, linked, version.manifest.bytes - linked)
    views_fd = _open_views(store)
    try:
        try:
            st = os.stat(name, dir_fd=views_fd, follow_symlinks=False)
        except FileNotFoundError:
            _build_view(store, version, plain, views_fd, final)
            return view
        if not stat.S_ISDIR(st.st_mode):
            raise TargetRefused(final, "is not a directory (delete it; views are derived)")
        return view
    finally:
        os.close(views_fd)


def refuse_plaintext(store: Store, version: ModelVersion, what: str) -> None:
    """In an encrypted store, only a public model may be laid out in plain
    files (a view, links to it): anything else would put its content on
    disk unsealed (FORMAT §18.8)."""
    if store.sealer.encrypted and not version.manifest.public:
        raise StoreIsEncrypted(
            f"{what} {version.label}",
            f"write it out with 'cas model export {version.label} DIR' to a directory of "
            "your choice, or import it with --public if it is a public model")


def view_name(store: Store, snapshot_id: ObjectId) -> str:
    """The directory name under views/ of a version's view: its snapshot id,
    as the store names ids on disk."""
    return store.sealer.name(snapshot_id).hex


def view_snapshot(store: Store, name: str) -> ObjectId | None:
    """The snapshot id a directory under views/ is the view of; None for a
    name that is not one."""
    try:
        return store.sealer.unname(ObjectId.parse(name))
    except ValueError:
        return None


def _open_views(store: Store) -> int:
    return _open_store_dir(store, VIEWS)


def _build_view(store: Store, version: ModelVersion, plain: dict[str, str | None],
                views_fd: int, final: str) -> None:
    """Build the view in a fresh directory beside ``final``, then rename it in."""
    name = os.path.basename(final)
    building = f"{name}.building-{secrets.token_hex(4)}"
    os.mkdir(building, 0o755, dir_fd=views_fd)
    try:
        top = os.open(building, _DIR_FLAGS, dir_fd=views_fd)
        try:
            _fill_view(store, version.manifest.files, plain, top, final)
        finally:
            os.close(top)
        try:
            os.rename(building, name, src_dir_fd=views_fd, dst_dir_fd=views_fd)
        except OSError:
            if not _is_dir_at(views_fd, name):
                raise
            shutil.rmtree(building, dir_fd=views_fd, ignore_errors=True)  # built meanwhile
        os.fsync(views_fd)
    except BaseException:
        shutil.rmtree(building, dir_fd=views_fd, ignore_errors=True)
        raise


def _fill_view(store: Store, files: tuple[ModelFile, ...], plain: dict[str, str | None],
               top: int, shown: str) -> None:
    dirs = _DirCache(top, shown)
    clones = True                # until the filesystem says it has none
    try:
        for f in files:
            dir_fd, leaf = dirs.parent_of(f.path)
            source = plain[f.path]
            if source is not None:
                clones = clones and _clone(source, dir_fd, leaf)
                if not clones:
                    _make_read_only(source)
                    os.symlink(source, leaf, dir_fd=dir_fd)
                continue
            fd = os.open(leaf, _NEW_FILE, 0o444, dir_fd=dir_fd)
            try:
                store.write_content(f.id, fd)
                os.fsync(fd)
            finally:
                os.close(fd)
        dirs.fsync()
    finally:
        dirs.close()


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _DirCache:
    """Directories under one open directory, made and opened once each, never
    through a link. Closes ``top`` too when ``owns_top``."""

    def __init__(self, top: int, shown: str, owns_top: bool = False):
        self.fds: dict[str, int] = {"": top}
        self.shown = shown
        self._owned: list[int] = [top] if owns_top else []
        self.made: list[str] = []    # directories made, as paths below top

    def parent_of(self, path: str) -> tuple[int, str]:
        """The fd of the directory holding ``path`` (made as needed) and its last name."""
        parent, _, leaf = path.rpartition("/")
        if parent not in self.fds:
            above_fd, name = self.parent_of(parent)
            if not _is_dir_at(above_fd, name):
                self.made.append(parent)
            fd = _subdir(above_fd, name, os.path.join(self.shown, parent))
            self.fds[parent] = fd
            self._owned.append(fd)
        return self.fds[parent], leaf

    def fsync(self) -> None:
        for fd in self.fds.values():
            os.fsync(fd)

    def close(self) -> None:
        for fd in self._owned:
            os.close(fd)
        self._owned.clear()


def _is_dir_at(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _make_read_only(path: str) -> None:
    """Drop every write bit of an object file a view links to, so that a tool
    writing into the view fails instead of changing the store's only copy
    (root is not stopped by modes: see README, Models)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o222:
            os.fchmod(fd, mode & ~0o222)
    finally:
        os.close(fd)


_FICLONE = 0x40049409        # linux/fs.h: _IOW(0x94, 9, int)


def _clone(source: str, dir_fd: int, name: str) -> bool:
    """Make ``name`` a copy-on-write clone of ``source``, mode 0444: the same
    blocks on disk until one of them is written, so a write into the view
    never reaches the store. False where the filesystem has no clones (ext4,
    or another filesystem than the store's)."""
    if sys.platform == "darwin":
        return _clonefileat(source, dir_fd, name)
    if not sys.platform.startswith("linux"):
        return False
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(name, _NEW_FILE, 0o444, dir_fd=dir_fd)
        try:
            fcntl.ioctl(fd, _FICLONE, src)
            os.fsync(fd)
            return True
        except OSError:
            os.unlink(name, dir_fd=dir_fd)
            return False
        finally:
            os.close(fd)
    finally:
        os.close(src)


def _clonefileat(source: str, dir_fd: int, name: str) -> bool:
    """macOS clonefileat(2), without following a link at either end."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.clonefileat
    except (OSError, AttributeError):
        return False
    fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
    fn.restype = ctypes.c_int
    at_fdcwd, clone_nofollow = -2, 0x0001
    if fn(at_fdcwd, os.fsencode(source), dir_fd, os.fsencode(name), clone_nofollow) != 0:
        return False
    os.chmod(name, 0o444, dir_fd=dir_fd)
    return True


def _remove_views(store: Store, names: list[str]) -> None:
    try:
        views_fd = _open_views(store)
    except (CasError, OSError):
        return  # no views, or none we may touch
    try:
        for name in names:
            shutil.rmtree(name, dir_fd=views_fd, ignore_errors=True)
    finally:
        os.close(views_fd)


# -- the Hugging Face cache layout ---------------------------------------------

def link_hf_cache(history: History, version: ModelVersion, hub: str) -> str:
    """Lay the model's view out as a Hugging Face cache repo under ``hub``:
    ``models--org--name/{blobs,snapshots/<rev>,refs/main}``, every file a link.
    Returns the snapshot directory (what ``mlx_lm.load`` would resolve to).

    A version imported from a Hub cache keeps its revision, and a file the
    cache already names (a link in ``snapshots/<rev>/``) keeps its blob
    name; a blob that is a regular file of the file's size is the cache's
    own copy and is left as it is. So linking into the cache the model came
    from adds no second blob for the Hub's scanner to count. Every link
    made is recorded in the store (``links/``) for ``model rm`` to remove.

    ``hub`` itself is taken as given; below it nothing is written through a
    link: directories are opened with O_NOFOLLOW from their parent's fd, and
    links and ``refs/main`` are made under fresh random names and renamed."""
    refuse_plaintext(history.store, version, "a Hugging Face cache link of")
    view = model_view(history, version)
    repo = version.manifest.source.get("repo") or f"cas/{version.name}"
    repo_name = HF_PREFIX + str(repo).replace("/", "--")
    if not _is_one_component(repo_name):
        repo_name = HF_PREFIX + f"cas--{version.name}"
    repo_dir = os.path.join(hub, repo_name)
    rev = _hub_revision(version)
    try:
        os.makedirs(hub, exist_ok=True)
        hub_fd = os.open(hub, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise TargetRefused(hub, f"cannot be used as the cache ({e.strerror})") from None
    made: list[dict] = []      # what this link wrote
    kept: list[str] = []       # what was already as it would have written it
    try:
        _link_repo(_LinkTarget(hub_fd, repo_name, repo_dir, rev), view, version, made, kept)
    finally:
        os.close(hub_fd)
        if made or kept:
            _record_links(history.store, version.name, os.path.abspath(hub),
                          version.snapshot.stored_id.hex, made, kept)
    return os.path.join(repo_dir, "snapshots", rev)


def _hub_revision(version: ModelVersion) -> str:
    """The Hub's revision for a version imported from its cache; else the
    first 40 hex digits of the snapshot id (a git commit id's length)."""
    rev = version.manifest.source.get("revision")
    if isinstance(rev, str) and _is_one_component(rev) and not rev.startswith("."):
        return rev
    return version.snapshot.stored_id.hex[:40]


@dataclass(frozen=True)
class _LinkTarget:
    hub_fd: int
    repo_name: str
    repo_dir: str
    rev: str


def _link_repo(to: _LinkTarget, view: ModelView, version: ModelVersion,
               made: list[dict], kept: list[str]) -> None:
    new_repo = not _is_dir_at(to.hub_fd, to.repo_name)
    repo = _DirCache(_subdir(to.hub_fd, to.repo_name, to.repo_dir), to.repo_dir, owns_top=True)
    made.extend([{"path": to.repo_name, "dir": True}] if new_repo else [])
    try:
        blobs, _ = repo.parent_of("blobs/x")
        for f in version.manifest.files:
            where = f"snapshots/{to.rev}/{f.path}"
            dir_fd, leaf = repo.parent_of(where)
            up = "../" * where.count("/")
            blob = _named_blob(dir_fd, leaf, up) or f.id.hex
            if not _is_cache_copy(blobs, blob, f.size):
                target = os.path.realpath(os.path.join(view.path, *f.path.split("/")))
                _linked(made, kept, f"{to.repo_name}/blobs/{blob}", target,
                        _replace_link(blobs, blob, target,
                                      os.path.join(to.repo_dir, "blobs", blob)))
            _linked(made, kept, f"{to.repo_name}/{where}", f"{up}blobs/{blob}",
                    _replace_link(dir_fd, leaf, f"{up}blobs/{blob}",
                                  os.path.join(to.repo_dir, where)))
        _link_ref_main(repo, to, made, kept)
        repo.fsync()
    except OSError as e:
        raise TargetRefused(to.repo_dir, f"cannot be written ({e.strerror})") from None
    finally:
        made.extend({"path": f"{to.repo_name}/{d}", "dir": True} for d in repo.made)
        kept.extend(f"{to.repo_name}/{d}".rstrip("/") for d in repo.fds)
        repo.close()


def _linked(made: list[dict], kept: list[str], path: str, target: str, replaced: bool) -> None:
    if replaced:
        made.append({"path": path, "target": target})
    else:
        kept.append(path)


def _link_ref_main(repo: _DirCache, to: _LinkTarget, made: list[dict], kept: list[str]) -> None:
    """Point ``refs/main`` at the revision linked, unless it already names a
    snapshot directory of the cache: the Hub may have a newer revision than
    the one imported, and its ``refs/main`` is the Hub's, not ours."""
    top = repo.fds[""]
    current = None
    if _is_dir_at(top, "refs"):
        refs_fd = os.open("refs", _DIR_FLAGS, dir_fd=top)
        try:
            current = _read_at(refs_fd, "main")
        finally:
            os.close(refs_fd)
    rev = current.decode("utf-8", "replace").strip() if current else ""
    if rev == to.rev:
        kept.append(f"{to.repo_name}/refs/main")
    if rev and _is_one_component(rev) and _is_dir_at(repo.parent_of("snapshots/x")[0], rev):
        return
    refs, _ = repo.parent_of("refs/main")
    _replace_file(refs, "main", to.rev.encode(), os.path.join(to.repo_dir, "refs", "main"))
    made.append({"path": f"{to.repo_name}/refs/main", "content": to.rev})


def _named_blob(dir_fd: int, leaf: str, up: str) -> str | None:
    """The blob a snapshot link already names (``<up>blobs/<name>``), if any."""
    try:
        target = os.readlink(leaf, dir_fd=dir_fd)
    except OSError:
        return None  # none, or not a link
    name = target[len(up) + len("blobs/"):] if target.startswith(up + "blobs/") else ""
    return name if _is_one_component(name) and not name.startswith(".") else None


def _is_cache_copy(blobs_fd: int, name: str, size: int) -> bool:
    """Whether the blob is a regular file of the file's size: the copy the
    Hub downloaded, left as it is (not hashed: a model is gigabytes)."""
    try:
        st = os.stat(name, dir_fd=blobs_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def _read_at(dir_fd: int, name: str) -> bytes | None:
    """A small regular file's bytes, never through a link; None if it is not one."""
    try:
        fd = os.open(name, _ANY_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, _MAX_REF + 1)
    finally:
        os.close(fd)


# -- what `model link` made: links/<name>.json ---------------------------------
#
# One record per model: {"model": name, "links": [{"hub", "path", one of
# "target" (a link), "content" (refs/main) or "dir", "versions"}]}, where
# "versions" lists the snapshot ids of the versions whose link made or
# kept the entry. The record is read from the store and so is not trusted:
# an entry is acted on only if it has a shape ``model link`` writes (see
# _shape), and a link only while it still points into this store.

LINKS = "links"


_MAX_RECORD = 64 << 20


def _links_file(store: Store, name: str) -> str:
    """The record's file name: the model name as the store labels names (in
    an encrypted store, 32 hex digits), with every byte that is not a
    letter, digit, '.', '_' or '-' written %XX, so any ref name makes one file name."""
    label = store.sealer.label(name)
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else
                   "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
                   for c in label) + ".json"


def _read_record(store: Store, links_fd: int, file_name: str) -> dict | None:
    """A record's JSON object, opened without following a link and unsealed
    in an encrypted store; None when it is missing, not a regular file, or
    damaged (one that does not parse or authenticate)."""
    try:
        data = read_bounded(file_name, _MAX_RECORD, dir_fd=links_fd)
        doc = json.loads(store.sealer.open_file(f"{LINKS}/{file_name}", data))
    except (ValueError, RecursionError, OSError):
        return None  # SealError is a ValueError: damaged alike
    return doc if isinstance(doc, dict) else None


def _load_links(store: Store, links_fd: int, file_name: str) -> list[dict]:
    """The entries of one record that have a shape ``model link`` writes; none
    of a damaged record: what it named is not removed, never anything else."""
    doc = _read_record(store, links_fd, file_name) or {}
    links = doc.get("links")
    return [d for d in links if _shape(d) is not None] if isinstance(links, list) else []


def _shape(d: object) -> str | None:
    """What an entry names, if it is a shape ``model link`` writes, below an
    absolute ``hub``: ``models--*`` or its blobs/, snapshots/<rev>/... and
    refs/ directories ("dir"), a blob link to an absolute path ("blob"), a
    snapshot link to ``../``s and ``blobs/<name>`` ("file"), or ``refs/main``
    ("ref"). None for anything else, which is never touched."""
    if not isinstance(d, dict) or not isinstance(d.get("hub"), str) \
            or not d["hub"].startswith("/") or not isinstance(d.get("path"), str):
        return None
    parts = d["path"].split("/")
    if not all(_is_one_component(p) for p in parts) or not parts[0].startswith(HF_PREFIX):
        return None
    rest, target = parts[1:], d.get("target")
    if d.get("dir") is True:
        ok = rest in ([], ["blobs"], ["snapshots"], ["refs"]) \
            or (len(rest) >= 2 and rest[0] == "snapshots")
        return "dir" if ok else None
    if rest == ["refs", "main"] and isinstance(d.get("content"), str):
        return "ref" if _is_one_component(d["content"]) else None
    if not isinstance(target, str):
        return None
    if len(rest) == 2 and rest[0] == "blobs":
        return "blob" if target.startswith("/") and os.path.normpath(target) == target else None
    up = "../" * (len(rest) - 1) + "blobs/"
    blob = target[len(up):] if target.startswith(up) else ""
    return "file" if len(rest) >= 3 and rest[0] == "snapshots" and _is_one_component(blob) \
        else None


def _versions(d: dict) -> list[str] | None:
    """The versions an entry belongs to; None for an entry that names none
    (recorded before entries named them)."""
    v = d.get("versions")
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else None


def _record_links(store: Store, name: str, hub: str, version: str, made: list[dict],
                  kept: list[str]) -> None:
    """Add what was made to the model's record, and ``version`` to the
    entries of what was kept as an earlier link made it: temp file, fsync, rename."""
    links_fd = _open_store_dir(store, LINKS)
    try:
        fresh = {d["path"]: d for d in made}
        entries = []
        for d in _load_links(store, links_fd, _links_file(store, name)):
            if d["hub"] == hub and d["path"] in fresh:
                continue  # written again now: the new entry stands
            if d["hub"] == hub and d["path"] in kept:
                d = {**d, "versions": sorted(set((_versions(d) or []) + [version]))}
            entries.append(d)
        entries.extend({"hub": hub, **d, "versions": [version]} for d in made)
        _write_record(store, links_fd, name, entries)
    finally:
        os.close(links_fd)


def _write_record(store: Store, links_fd: int, name: str, entries: list[dict]) -> None:
    file_name = _links_file(store, name)
    if not entries:
        try:
            os.unlink(file_name, dir_fd=links_fd)
        except FileNotFoundError:
            pass
    else:
        data = json.dumps({"model": name, "links": entries}, indent=2, sort_keys=True).encode()
        _replace_file(links_fd, file_name, store.sealer.seal_file(f"{LINKS}/{file_name}", data + b"\n"),
                      os.path.join(store.path, LINKS, file_name))
    os.fsync(links_fd)


def _remove_links(store: Store, name: str, on_left: Callable[[str, str], None]) -> int:
    """Remove what ``model link`` made for the model and its record; tell
    ``on_left(path, why)`` of each one left. Returns how many were removed."""
    try:
        links_fd = _open_store_dir(store, LINKS, make=False)
    except (CasError, OSError):
        return 0
    try:
        removed = remove_linked(store, _load_links(store, links_fd, _links_file(store, name)), on_left)
        _write_record(store, links_fd, name, [])
    finally:
        os.close(links_fd)
    return removed


def forget_links(store: Store, is_recorded: Callable[[str], bool],
                 on_left: Callable[[str, str], None]) -> int:
    """Remove the links of versions no longer recorded (gc, after ``cas
    forget``): an entry goes when none of its versions is recorded; an
    entry that names no versions is left, and ``on_left`` hears of it if
    its link dangles. Returns how many were removed."""
    try:
        links_fd = _open_store_dir(store, LINKS, make=False)
    except (CasError, OSError):
        return 0
    removed = 0
    try:
        for file_name in sorted(os.listdir(links_fd)):
            model = _record_model(store, links_fd, file_name)
            if model is None:
                continue  # not a record of ours
            gone, kept = _split_by_versions(_load_links(store, links_fd, file_name), is_recorded)
            for d in kept:
                if _versions(d) is None and _dangles(d, store):
                    on_left(os.path.join(d["hub"], d["path"]), "names no version of "
                            f"{model} and now dangles (link the model again to record it)")
            if gone:
                removed += remove_linked(store, gone, on_left)
                _write_record(store, links_fd, model, kept)
    finally:
        os.close(links_fd)
    return removed


def _record_model(store: Store, links_fd: int, file_name: str) -> str | None:
    """The model a record file is for, when its name is the one ``_links_file`` gives."""
    model = (_read_record(store, links_fd, file_name) or {}).get("model")
    return model if isinstance(model, str) and _links_file(store, model) == file_name else None


def _split_by_versions(entries: list[dict], is_recorded: Callable[[str], bool]
                       ) -> tuple[list[dict], list[dict]]:
    gone, kept = [], []
    for d in entries:
        versions = _versions(d)
        if versions is None:
            kept.append(d)
            continue
        live = [v for v in versions if is_recorded(v)]
        if live:
            kept.append({**d, "versions": live})
        else:
            gone.append(d)
    return gone, kept


def _dangles(d: dict, store: Store) -> bool:
    """Whether a blob link of ours (as recorded, into the store) names nothing."""
    if _shape(d) != "blob":
        return False
    parts = d["path"].split("/")
    try:
        dir_fd = _open_below(d["hub"], parts[:-1])
    except OSError:
        return False
    try:
        return _link_is(dir_fd, parts[-1], d, _store_prefix(store)) \
            and not os.path.exists(d["target"])
    finally:
        os.close(dir_fd)


def remove_linked(store: Store, entries: list[dict], on_left: Callable[[str, str], None]) -> int:
    """Remove what the entries name that is still ours, then the directories
    they name that this leaves empty, deepest first. Every path is opened
    from its hub one directory at a time without following a link; a link
    is ours while it reads as recorded and points into this store (a
    snapshot link: while the blob it names does), refs/main while it holds
    what link wrote and names no snapshot directory. Nothing else is removed."""
    inside = _store_prefix(store)
    kinds = [(d, _shape(d)) for d in entries]
    dirs = [d for d, k in kinds if k == "dir"]
    done: list[dict] = []
    # Links, snapshot links before the blobs they name; then the directories
    # that leaves empty, so that refs/main, removed only where its snapshot
    # directory went, can go last.
    for group in (("file",), ("blob",), ("ref",)):
        if group == ("ref",):
            _remove_dirs(dirs, done)
        for d, kind in kinds:
            if kind in group:
                why = _remove_one(d, kind, inside)
                if why is None:
                    done.append(d)
                elif why:
                    on_left(os.path.join(d["hub"], d["path"]), why)
    _remove_dirs(dirs, done)
    return len(done)


def _store_prefix(store: Store) -> str:
    return os.path.realpath(store.path).rstrip("/") + "/"


def _remove_one(d: dict, kind: str, inside: str) -> str | None:
    """None when removed; '' when it is gone or no longer ours (left alone,
    silently); else why it could not be removed."""
    parts = d["path"].split("/")
    try:
        dir_fd = _open_below(d["hub"], parts[:-1])
    except OSError:
        return ""   # its directory is gone or is now a link: nothing of ours there
    try:
        leaf = parts[-1]
        if kind == "ref":
            ours = _read_at(dir_fd, leaf) == d["content"].encode() and \
                not _exists_below(d["hub"], parts[:-2] + ["snapshots", d["content"]])
        elif kind == "blob":
            ours = _link_is(dir_fd, leaf, d, inside)
        else:
            ours = _link_is(dir_fd, leaf, d, inside) and _blob_is_ours(d, inside)
        if not ours:
            return ""
        os.unlink(leaf, dir_fd=dir_fd)
        return None
    except OSError as e:
        return f"cannot be removed ({e.strerror})"
    finally:
        os.close(dir_fd)


def _link_is(dir_fd: int, leaf: str, d: dict, inside: str) -> bool:
    """Whether ``leaf`` is a link reading as recorded; a blob link also
    only while that is a path in this store."""
    try:
        target = os.readlink(leaf, dir_fd=dir_fd)
    except OSError:
        return False  # gone, or not a link
    return target == d["target"] and (not target.startswith("/") or target.startswith(inside))


def _blob_is_ours(d: dict, inside: str) -> bool:
    """Whether the blob a snapshot link names is a link into this store."""
    repo = d["path"].split("/")[0]
    blob = d["target"].rpartition("/")[2]
    try:
        blobs_fd = _open_below(d["hub"], [repo, "blobs"])
    except OSError:
        return False
    try:
        target = os.readlink(blob, dir_fd=blobs_fd)
    except OSError:
        return False
    finally:
        os.close(blobs_fd)
    return target.startswith(inside) and os.path.normpath(target) == target


def _open_below(top: str, parts: list[str]) -> int:
    """The directory ``top/parts...``, each step below ``top`` opened with O_NOFOLLOW."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            if not _is_one_component(part):
                raise OSError(errno.EINVAL, "not one path component")
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _exists_below(top: str, parts: list[str]) -> bool:
    try:
        os.close(_open_below(top, parts))
        return True
    except OSError:
        return False


def _remove_dirs(dirs: list[dict], removed: list[dict]) -> None:
    """rmdir the directories ``model link`` made that hold something just
    removed, deepest first; one that is not empty (something else was put
    there) stays."""
    emptied = {(d["hub"], d["path"]) for d in removed}
    held = [d for d in dirs if any(h == d["hub"] and p.startswith(d["path"] + "/")
                                   for h, p in emptied)]
    for d in sorted(held, key=lambda d: -d["path"].count("/")):
        parts = d["path"].split("/")
        try:
            parent = _open_below(d["hub"], parts[:-1])
        except OSError:
            continue
        try:
            os.rmdir(parts[-1], dir_fd=parent)
        except OSError:
            pass   # not empty, or gone
        finally:
            os.close(parent)


def _open_store_dir(store: Store, name: str, make: bool = True) -> int:
    store_fd = os.open(store.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not make:
            return os.open(name, _DIR_FLAGS, dir_fd=store_fd)
        return _subdir(store_fd, name, os.path.join(store.path, name))
    finally:
        os.close(store_fd)


# -- writing inside a directory, never through a link ------------------------

def _subdir(parent_fd: int, name: str, shown: str) -> int:
    """Open the directory ``name`` of ``parent_fd``, made if missing; a link
    or anything else in its place is refused."""
    try:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    except FileExistsError:
        pass
    except OSError as e:
        raise TargetRefused(shown, f"cannot be made ({e.strerror})") from None
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise TargetRefused(shown, "is a symbolic link or not a directory") from None
        raise TargetRefused(shown, f"cannot be opened ({e.strerror})") from None


def _temp_name(name: str) -> str:
    return f".{name}.cas-{secrets.token_hex(8)}.tmp"


def _replace_link(dir_fd: int, name: str, target: str, shown: str) -> bool:
    """Make ``name`` a link to ``target``, atomically; only a link is replaced.
    False when it already was that link."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISLNK(st.st_mode):
            raise TargetRefused(shown, "exists and is not a link; left alone")
        if os.readlink(name, dir_fd=dir_fd) == target:
            return False
    tmp = _temp_name(name)
    os.symlink(target, tmp, dir_fd=dir_fd)  # fails if tmp exists: never follows
    _rename_in(dir_fd, tmp, name, shown)
    return True


def _replace_file(dir_fd: int, name: str, data: bytes, shown: str) -> None:
    """Write ``name`` through a fresh temp file (O_EXCL|O_NOFOLLOW), fsync, rename."""
    tmp = _temp_name(name)
    fd = os.open(tmp, _NEW_FILE, 0o644, dir_fd=dir_fd)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.close(fd)
    _rename_in(dir_fd, tmp, name, shown)


def _rename_in(dir_fd: int, tmp: str, name: str, shown: str) -> None:
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as e:
        os.unlink(tmp, dir_fd=dir_fd)
        raise TargetRefused(shown, f"cannot be replaced ({e.strerror})") from None
