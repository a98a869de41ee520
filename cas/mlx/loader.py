"""Tensors straight from the store into MLX arrays.

Each tensor is allocated as an MLX array and its bytes are read from the
store directly into the array's memory: a raw object or raw chunk is one
``preadv`` into place, a compressed one is decoded first. Tensors are read
on both cores, and each is checked against the BLAKE3 its model manifest
recorded at import, so damage is reported by model, file and tensor. No copy
of the file is written anywhere and memory holds only the arrays.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import mlx.core as mx

from ..durable import write_all
from ..errors import CasError, ModelNotFound, PasswordRequired, WeightsDamaged
from ..model.history import History
from ..model.model_manifest import TensorInfo
from ..objectid import ObjectId, hash_bytes
from ..ops.models import ModelVersion, is_checked, mark_checked, model_view, resolve_model
from ..passwords import environment_source
from ..storage.audit import AuditLog, new_record
from ..storage.crypto import SEGMENT
from ..storage.keys import PasswordSource
from ..storage.store import Store, find_store, locate_store
from ..storage.workers import ordered_map

MX_DTYPES = {
    "BOOL": mx.bool_, "U8": mx.uint8, "I8": mx.int8, "U16": mx.uint16, "I16": mx.int16,
    "U32": mx.uint32, "I32": mx.int32, "U64": mx.uint64, "I64": mx.int64,
    "F16": mx.float16, "BF16": mx.bfloat16, "F32": mx.float32, "F64": mx.float64,
}


class _Opened:
    """A store and one resolved model version, closed together."""

    def __init__(self, ref: str, store: str | os.PathLike | Store | None, at_ns: int | None,
                 password: PasswordSource | None = None):
        self._owned = not isinstance(store, Store)
        # A path given names that store (the directory itself, or its .cas/),
        # as --store and 'cas stores add' take one; only the default looks
        # upwards from the current directory, as the CLI does.
        self.store = store if isinstance(store, Store) else \
            _open_store(locate_store(os.fspath(store)) if store is not None
                        else find_store(os.getcwd()), password)
        try:
            self.history = History(self.store)
            self.version: ModelVersion = resolve_model(self.history, ref, at_ns)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._owned:
            self.store.close()

    def __enter__(self) -> _Opened:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_store(path: str, password: PasswordSource | None) -> Store:
    """The store at ``path``; an encrypted one unlocked with ``password``,
    else the process's password source (``cas.storage.keys.set_password_source``),
    else the environment's (CAS_PASSWORD, CAS_PASSWORD_FILE, CAS_PASSWORD_COMMAND),
    asked only when the store needs one."""
    try:
        return Store.open(path, password=password)
    except PasswordRequired:
        from_environment = environment_source() if password is None else None
        if from_environment is None:
            raise
    return Store.open(path, password=from_environment)


def open_model(ref: str, store: str | Store | None = None, at_ns: int | None = None,
               password: PasswordSource | None = None) -> _Opened:
    return _Opened(ref, store, at_ns, password)


def load_weights(ref: str, *, store: str | Store | None = None, keys: Iterable[str] | None = None,
                 at_ns: int | None = None, verify: bool | None = None,
                 password: PasswordSource | None = None) -> dict[str, mx.array]:
    """Every tensor (or only ``keys``) of a stored model's safetensors files.

    ``ref`` is ``NAME``, ``NAME@N`` or ``NAME@<snapshot id>``; ``at_ns`` picks
    the version current at that moment. ``store`` is an open ``Store`` or a
    path: a store directory, or a directory holding one as ``.cas/`` (default:
    the nearest store in or above the current directory).

    An encrypted store is unlocked with ``password`` (bytes, or a function
    returning them), else with the process's password source. Its tensors
    are decrypted into the arrays' memory as they are read; the weights of
    a model imported with ``--public`` are kept raw and read by ``mx.load``.

    Checking: by default, tensors are hashed and compared with the BLAKE3
    recorded at import whenever one of the files holding them changed
    (size, mtime, ctime or inode) since they were last checked; a mismatch
    raises ``WeightsDamaged`` naming the model, file and tensor. Silent
    media errors leave file stats alone: ``verify=True`` hashes every
    tensor, as ``cas verify --full`` does for the whole store;
    ``verify=False`` hashes none.
    """
    with open_model(ref, store, at_ns, password) as opened:
        try:
            arrays = _load(opened, keys, verify)
        except CasError as e:
            _record_read(opened, ref, e.exit_code, str(e))
            raise
        _record_read(opened, ref, 0, None)
        return arrays


def _record_read(opened: _Opened, ref: str, exit_code: int, message: str | None) -> None:
    """The audit trail's record of this read. A store that cannot be written
    warns (a Python warning: the library prints nothing) and the read goes on."""
    record = new_record(["cas.mlx.load_weights", ref], refs=[opened.version.label],
                        paths=[f.path for f in opened.version.manifest.files],
                        created=[], removed=[], exit_code=exit_code, message=message)
    try:
        AuditLog.of(opened.store).append(record)
    except (OSError, CasError) as e:
        warnings.warn(f"the audit log of {opened.store.path} cannot be written ({e}): "
                      "reads are not being logged", RuntimeWarning, stacklevel=3)


def _load(opened: _Opened, keys: Iterable[str] | None, verify: bool | None) -> dict[str, mx.array]:
    version, store = opened.version, opened.store
    tensors = _selected(version, keys)
    files = {f.path: f.id for f in version.manifest.files}
    by_file: dict[str, list[TensorInfo]] = {}
    for t in tensors:
        by_file.setdefault(t.file, []).append(t)
    check = {path: verify is True or (verify is None and not is_checked(store, files[path]))
             for path in by_file}

    arrays: dict[str, mx.array] = {}
    direct: list[TensorInfo] = []
    loaded: list[TensorInfo] = []
    plain_order: dict[str, list[str]] = {}
    for path, ts in by_file.items():
        plain = store.plain_path(files[path]) if keys is None else None
        if plain is not None:
            # A plain object file is the safetensors file itself: MLX's own
            # parallel reader takes it as fast as the original.
            try:
                got = mx.load(plain, format="safetensors")
            except (RuntimeError, ValueError, OSError) as e:
                raise WeightsDamaged(version.label, path, "(header)",
                                     f"MLX cannot read the stored file ({e})") from None
            if not isinstance(got, dict) or sorted(got) != sorted(t.name for t in ts):
                raise WeightsDamaged(version.label, path, "(header)",
                                     "its tensors differ from those recorded at import")
            arrays.update(got)
            plain_order[path] = list(got)
            loaded.extend(ts)
        else:
            direct.extend(ts)
    mx.eval(list(arrays.values()))
    if store.sealer.encrypted:
        arrays.update(_read_sealed(_Reading(version.label, store, files, check), direct))
        direct = []

    def fill(t: TensorInfo) -> tuple[str, mx.array]:
        # Each worker allocates on its own stream: the first touch of fresh
        # memory (page faults) is a large share of the cost, and this way it
        # runs on both cores instead of MLX's one.
        with mx.stream(_worker_stream()):
            array = mx.zeros(t.shape, dtype=MX_DTYPES[t.dtype])
            mx.eval(array)
        view = _writable_bytes(array, t)
        try:
            store.read_into(files[t.file], t.start, view)
        except CasError as e:
            raise WeightsDamaged(version.label, t.file, t.name, str(e)) from None
        if check[t.file]:
            _check(version.label, t, view)
        return t.name, array

    def check_loaded(t: TensorInfo) -> tuple[str, mx.array]:
        _check(version.label, t, _readable_bytes(arrays[t.name], t))
        return t.name, arrays[t.name]

    # Largest first, so the two cores finish together.
    work = [(fill, t) for t in direct] + [(check_loaded, t) for t in loaded if check[t.file]]
    work.sort(key=lambda job: -job[1].nbytes)
    for name, array in ordered_map(lambda job: job[0](job[1]), work, ahead=8):
        arrays[name] = array
    if keys is None:
        checked = [files[p] for p, c in check.items() if c]
        if checked:
            try:
                mark_checked(store, checked)
            except (CasError, OSError):
                pass  # a read-only store: the next load checks again
    # mx.load's own order for whole files: the order arrays are released in
    # decides how well MLX's allocator reuses them on the next load (measured:
    # a reordered dict made repeated loads 1.7x slower).
    out: dict[str, mx.array] = {}
    for path, ts in by_file.items():
        for name in plain_order.get(path) or [t.name for t in ts]:
            out[name] = arrays[name]
    return out


def _selected(version: ModelVersion, keys: Iterable[str] | None) -> list[TensorInfo]:
    """The tensors to load: all, or those ``keys`` names, each one MLX can hold."""
    tensors = list(version.manifest.tensors)
    if keys is not None:
        wanted = list(dict.fromkeys(keys))
        by_name = {t.name: t for t in tensors}
        missing = [k for k in wanted if k not in by_name]
        if missing:
            raise ModelNotFound(version.label, f"has no tensor {missing[0]!r}")
        tensors = [by_name[k] for k in wanted]
    unsupported = [t for t in tensors if t.dtype not in MX_DTYPES]
    if unsupported:
        raise CasError(f"model {version.label}: tensor {unsupported[0].name!r} has dtype "
                       f"{unsupported[0].dtype}, which MLX cannot hold")
    return tensors


# -- an encrypted store: reading in spans of whole sealed segments ----------------

# A multiple of the sealed segment: spans start and end on segment bounds,
# so each segment is opened once, never for a part of it.
_SPAN = 8 * SEGMENT


@dataclass(frozen=True)
class _Reading:
    label: str
    store: Store
    files: dict[str, ObjectId]
    check: dict[str, bool]


@dataclass
class _Span:
    """A segment-aligned byte range of one file and the tensors it overlaps."""
    path: str
    start: int
    stop: int
    tensors: list[TensorInfo] = field(default_factory=list)


def _read_sealed(reading: _Reading, tensors: list[TensorInfo]) -> dict[str, mx.array]:
    """Tensors of an encrypted store, decrypted into their arrays.

    Reading tensor by tensor would open every segment that two tensors share
    twice, and open a part of a segment through a copy. So the arrays are
    made first, then the files are read in spans of whole segments on both
    cores: a span inside one tensor straight into its array, any other
    through a buffer copied out to the tensors it holds parts of."""
    by_file: dict[str, list[TensorInfo]] = {}
    for t in tensors:
        by_file.setdefault(t.file, []).append(t)
    arrays = {}
    for ts in by_file.values():
        arrays.update(_allocated_by_load(ts) or dict(ordered_map(_allocated, ts, ahead=8)))
    spans = _spans(tensors, {f: reading.store.entry(oid).size for f, oid in reading.files.items()
                             if any(t.file == f for t in tensors)})
    spans.sort(key=lambda span: -(span.stop - span.start))
    for _ in ordered_map(lambda span: _read_span(reading, span, arrays), spans, ahead=8):
        pass
    checked = [t for t in tensors if reading.check[t.file]]
    checked.sort(key=lambda t: -t.nbytes)
    for _ in ordered_map(lambda t: _check(reading.label, t, _readable_bytes(arrays[t.name], t)),
                         checked, ahead=8):
        pass
    return arrays


def _allocated_by_load(tensors: list[TensorInfo]) -> dict[str, mx.array] | None:
    """Arrays for the tensors as ``mx.load`` allocates them, from a
    safetensors file in memory (a memfd) whose data is one hole: no bytes
    are written, and reading a hole is the kernel's zero fill.

    Why: MLX has no uninitialized allocation, and on Linux an ``mx.zeros``
    is made on a stream's thread, in a malloc arena that returns large
    blocks to the system when freed, so every load pays a page fault for
    every 4 KiB again (measured: 0.33 s of system time per 570 MB).
    ``mx.load`` allocates on the calling thread, whose arena keeps them:
    repeated loads reuse the memory. None where there is no memfd (macOS,
    whose MLX allocator keeps its own cache) or it fails: then mx.zeros."""
    if not hasattr(os, "memfd_create"):
        return None
    header, end = {}, 0
    for t in tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [end, end + t.nbytes]}
        end += t.nbytes
    head = json.dumps(header).encode()
    try:
        fd = os.memfd_create("cas-tensors", os.MFD_CLOEXEC)
    except OSError:
        return None
    try:
        write_all(fd, struct.pack("<Q", len(head)) + head)
        os.ftruncate(fd, 8 + len(head) + end)
        arrays = mx.load(f"/proc/self/fd/{fd}", format="safetensors")
        if not isinstance(arrays, dict) or sorted(arrays) != sorted(header):
            return None
        mx.eval(list(arrays.values()))
    except (OSError, RuntimeError, ValueError):
        return None
    finally:
        os.close(fd)
    return arrays


def _allocated(t: TensorInfo) -> tuple[str, mx.array]:
    # On the worker's own stream: the first touch of fresh memory (page
    # faults) is a large share of a load, and this spreads it on both cores.
    with mx.stream(_worker_stream()):
        array = mx.zeros(t.shape, dtype=MX_DTYPES[t.dtype])
        mx.eval(array)
    return t.name, array


def _spans(tensors: list[TensorInfo], sizes: dict[str, int]) -> list[_Span]:
    """The spans that hold the tensors' bytes: fixed ``_SPAN`` windows of each
    file, cut to the segments the tensors in them reach."""
    spans: dict[tuple[str, int], _Span] = {}
    for t in tensors:
        for k in range(t.start // _SPAN, (t.stop - 1) // _SPAN + 1):
            span = spans.get((t.file, k))
            if span is None:
                span = spans[(t.file, k)] = _Span(t.file, (k + 1) * _SPAN, k * _SPAN)
            span.tensors.append(t)
            span.start = min(span.start, max(k * _SPAN, t.start // SEGMENT * SEGMENT))
            span.stop = max(span.stop, min((k + 1) * _SPAN, -(-t.stop // SEGMENT) * SEGMENT,
                                           sizes[t.file]))
    return list(spans.values())


def _read_span(reading: _Reading, span: _Span, arrays: dict[str, mx.array]) -> None:
    oid = reading.files[span.path]
    if len(span.tensors) == 1 and span.tensors[0].start <= span.start \
            and span.stop <= span.tensors[0].stop:
        t = span.tensors[0]   # inside one tensor: straight into its array
        target = _writable_bytes(arrays[t.name], t)[span.start - t.start:span.stop - t.start]
        _read_or_name(reading, span, oid, span.start, target)
        return
    buffer = _span_buffer()[:span.stop - span.start]
    _read_or_name(reading, span, oid, span.start, buffer)
    for t in span.tensors:
        lo, hi = max(t.start, span.start), min(t.stop, span.stop)
        _writable_bytes(arrays[t.name], t)[lo - t.start:hi - t.start] = \
            buffer[lo - span.start:hi - span.start]


def _read_or_name(reading: _Reading, span: _Span, oid: ObjectId, offset: int,
                  target: memoryview) -> None:
    """Read, or name the tensor whose bytes do not read (damage is named by
    model, file and tensor, whatever the reading was grouped by)."""
    try:
        reading.store.read_into(oid, offset, target)
        return
    except CasError as e:
        first = e
    for t in span.tensors:
        lo, hi = max(t.start, span.start), min(t.stop, span.stop)
        try:
            reading.store.read_into(oid, lo, bytearray(hi - lo))
        except CasError as e:
            raise WeightsDamaged(reading.label, span.path, t.name, str(e)) from None
    raise WeightsDamaged(reading.label, span.path, span.tensors[0].name, str(first)) from None


def _span_buffer() -> memoryview:
    """This worker's buffer for spans that hold parts of several tensors."""
    buffer = getattr(_local, "span_buffer", None)
    if buffer is None:
        buffer = _local.span_buffer = memoryview(bytearray(_SPAN))
    return buffer


_local = threading.local()


def _worker_stream():
    stream = getattr(_local, "stream", None)
    if stream is None:
        stream = _local.stream = mx.new_stream(mx.cpu)
    return stream


def _check(label: str, t: TensorInfo, view: memoryview) -> None:
    if t.blake3 and hash_bytes(view).hex != t.blake3:
        raise WeightsDamaged(label, t.file, t.name,
                             "its bytes do not match the BLAKE3 recorded at import")


def _readable_bytes(array: mx.array, t: TensorInfo) -> memoryview:
    view = memoryview(array)  # type: ignore[arg-type]  # mx.array has the buffer protocol; its stubs omit it
    if not view.c_contiguous or view.nbytes != t.nbytes:
        raise CasError(f"tensor {t.name!r}: MLX gave a buffer of an unexpected layout")
    return view.cast("B") if view.nbytes else memoryview(b"")


def _writable_bytes(array: mx.array, t: TensorInfo) -> memoryview:
    view = memoryview(array)  # type: ignore[arg-type]  # as in _readable_bytes
    if view.readonly or not view.c_contiguous or view.nbytes != t.nbytes:
        raise CasError(f"tensor {t.name!r}: MLX gave a buffer that cannot be filled in place")
    return view.cast("B") if view.nbytes else memoryview(bytearray())


def load_config(ref: str, *, store: str | Store | None = None, at_ns: int | None = None,
                password: PasswordSource | None = None) -> dict:
    """A stored model's config.json, exactly as imported."""
    with open_model(ref, store, at_ns, password) as opened:
        f = opened.version.manifest.file("config.json")
        if f is None:
            raise ModelNotFound(opened.version.label, "has no config.json")
        try:
            return json.loads(opened.store.read_object(f.id))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise CasError(f"{opened.version.label}: its config.json is not JSON") from None


def model_path(ref: str, *, store: str | Store | None = None, at_ns: int | None = None,
               password: PasswordSource | None = None) -> str:
    """A read-only directory of the model that ``mlx_lm.load`` and other tools
    accept: links into the store for files kept as plain objects, a copy made
    once for the others (``cas model path`` reports its size). In an
    encrypted store only a model imported with ``--public`` has one
    (``StoreIsEncrypted`` otherwise: a view would be plaintext on disk)."""
    with open_model(ref, store, at_ns, password) as opened:
        return model_view(opened.history, opened.version).path

