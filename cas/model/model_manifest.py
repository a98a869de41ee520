"""Model manifests: what a stored model is, recorded with each imported version.

A model manifest is canonical JSON beside the model's tree: the config.json
summary (architecture, parameters, dtype, quantization), every file with its
id, and every tensor of every safetensors file with its dtype, shape, byte
range and BLAKE3. Listing models reads manifests only, never the weights; a
loader checks each tensor it reads against its recorded BLAKE3, so damage is
named down to the tensor.
"""

from __future__ import annotations

import builtins
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ManifestInvalid
from ..objectid import HEX_LENGTH, ObjectId, is_hex
from ..storage.chunking import read_safetensors_header
from .canonical import dumps, loads

MODEL_VERSION = 1

# safetensors dtype names, their element sizes, and the names MLX and numpy use.
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
DTYPE_NAMES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
               "F16": "float16", "BF16": "bfloat16", "I32": "int32", "U32": "uint32",
               "F32": "float32", "I64": "int64", "U64": "uint64", "F64": "float64",
               "F8_E4M3": "float8_e4m3", "F8_E5M2": "float8_e5m2"}
WEIGHT_SUFFIXES = (".safetensors", ".npz", ".gguf", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str                  # safetensors name: "BF16", "U32", ...
    shape: tuple[int, ...]
    file: str                   # path of its file inside the model
    start: int                  # byte range in that file
    stop: int
    blake3: str = ""            # of the tensor's bytes

    @property
    def nbytes(self) -> int:
        return self.stop - self.start

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class ModelFile:
    path: str
    id: ObjectId
    size: int


@dataclass(frozen=True)
class ModelManifest:
    name: str
    files: tuple[ModelFile, ...]
    tensors: tuple[TensorInfo, ...]
    config: dict | None = None
    source: dict = field(default_factory=dict)
    # Imported with --public: its weights are kept raw in an encrypted store
    # (readable in place), and views and links of it are allowed.
    public: bool = False

    # -- summary, derived from the config and the tensors ------------------

    @property
    def architecture(self) -> str | None:
        if not self.config:
            return None
        model_type = self.config.get("model_type")
        if isinstance(model_type, str):
            return model_type
        archs = self.config.get("architectures")
        return archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None

    @property
    def quantization(self) -> dict | None:
        q = (self.config or {}).get("quantization") or (self.config or {}).get("quantization_config")
        if isinstance(q, dict) and isinstance(q.get("bits"), int):
            return {"bits": q["bits"], "group_size": q.get("group_size")}
        return None

    @property
    def parameters(self) -> int:
        """Weights counted as the model defines them: a packed 4-bit uint32
        holds eight; quantization scales and biases are not parameters."""
        names = {t.name for t in self.tensors}
        bits = (self.quantization or {}).get("bits")
        total = 0
        for t in self.tensors:
            stem, _, leaf = t.name.rpartition(".")
            if bits and leaf in ("scales", "biases") and f"{stem}.weight" in names:
                continue
            if bits and t.dtype == "U32" and f"{stem}.scales" in names:
                total += t.numel * 32 // bits
            else:
                total += t.numel
        return total

    @property
    def dtype(self) -> str | None:
        """The floating-point dtype holding most of the weight bytes."""
        by_bytes: Counter = Counter()
        for t in self.tensors:
            if t.dtype.startswith(("F", "BF")):
                by_bytes[t.dtype] += t.nbytes
        return DTYPE_NAMES[by_bytes.most_common(1)[0][0]] if by_bytes else None

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def framework(self) -> str:
        paths = [f.path for f in self.files]
        if any(p.endswith(".gguf") for p in paths):
            return "GGUF"
        if any(p.endswith((".safetensors", ".npz")) for p in paths):
            return "MLX" if self.quantization or "mlx" in json.dumps(self.source).lower() \
                or not any(p.endswith((".bin", ".pt", ".pth")) for p in paths) else "PyTorch"
        return "PyTorch" if any(p.endswith((".bin", ".pt", ".pth")) for p in paths) else "unknown"

    @property
    def kind(self) -> str:
        archs = " ".join((self.config or {}).get("architectures") or []) + " " + \
            str((self.config or {}).get("model_type", ""))
        lowered = archs.lower()
        if any(k in lowered for k in ("bert", "embed", "e5", "bge")) and "causallm" not in lowered:
            return "embedding"
        return "chat" if "causallm" in lowered or "conditionalgeneration" in lowered else "other"

    def file(self, path: str) -> ModelFile | None:
        for f in self.files:
            if f.path == path:
                return f
        return None

    # -- storage form -------------------------------------------------------

    def to_json(self) -> builtins.bytes:   # the class's own ``bytes`` shadows the type here
        doc = {
            "type": "model", "version": MODEL_VERSION, "name": self.name,
            "config": self.config, "source": self.source,
            "files": [{"path": f.path, "id": f.id.hex, "size": f.size} for f in self.files],
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "file": t.file,
                         "offsets": [t.start, t.stop], "blake3": t.blake3}
                        for t in self.tensors],
            "summary": {"architecture": self.architecture, "parameters": self.parameters,
                        "dtype": self.dtype, "quantization": self.quantization,
                        "bytes": self.bytes, "framework": self.framework, "kind": self.kind},
        }
        if self.public:
            # Written only when true: a manifest without it has the bytes,
            # and so the id, it always had.
            doc["public"] = True
        return dumps(_without_floats(doc))

    @classmethod
    def from_json(cls, data: builtins.bytes, oid: ObjectId) -> ModelManifest:
        what = f"model manifest {oid.hex}"
        doc = loads(data, what, "model", MODEL_VERSION)
        try:
            files = tuple(ModelFile(_path(f["path"], what), _oid(f["id"], what), _int(f["size"]))
                          for f in doc["files"])
            tensors = tuple(TensorInfo(str(t["name"]), _dtype(t["dtype"], what),
                                       tuple(_int(d) for d in t["shape"]), _path(t["file"], what),
                                       _int(t["offsets"][0]), _int(t["offsets"][1]),
                                       str(t.get("blake3", "")))
                            for t in doc["tensors"])
            name, config, source = doc["name"], doc.get("config"), doc.get("source") or {}
            public = doc.get("public", False)
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise ManifestInvalid(what, f"malformed ({e})") from None
        if not isinstance(name, str) or not (config is None or isinstance(config, dict)):
            raise ManifestInvalid(what, "name must be a string and config an object")
        if type(public) is not bool:
            raise ManifestInvalid(what, "public must be true or false")
        known = {f.path: f.size for f in files}
        for t in tensors:
            if t.file not in known or not 0 <= t.start <= t.stop <= known[t.file] or \
                    t.nbytes != t.numel * DTYPE_SIZES[t.dtype]:
                raise ManifestInvalid(what, f"tensor {t.name!r} does not fit its file or shape")
        return cls(name, files, tensors, config, source, public)


def parse_safetensors(read_at: Callable[[int, int], bytes], file_size: int,
                      path: str) -> list[TensorInfo]:
    """The tensors of a safetensors file, from its header; ``read_at(offset, n)``
    reads the file. Raises ValueError for anything that is not safetensors."""
    header, data_start = read_safetensors_header(read_at, file_size, path)
    return safetensors_tensors(header, data_start, file_size, path)


def safetensors_tensors(header: dict, data_start: int, file_size: int, path: str) -> list[TensorInfo]:
    """The tensors a safetensors header describes, with absolute byte ranges.

    Held to the rules a model manifest is read by (§15.3), and more: a
    header that passed here but not there would be recorded, and then every
    listing of the store's models would trip over it.
    """
    out = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError):
            raise ValueError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise ValueError(f"{path}: tensor {name!r} has a shape that is not a list of "
                             f"non-negative integers: {shape!r}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets)):
            raise ValueError(f"{path}: tensor {name!r} has data_offsets that are not two "
                             f"non-negative integers: {offsets!r}")
        start, stop = offsets
        t = TensorInfo(name, dtype, tuple(shape), path, data_start + start, data_start + stop)
        if not start <= stop or t.stop > file_size or t.nbytes != t.numel * DTYPE_SIZES[dtype]:
            raise ValueError(f"{path}: tensor {name!r} does not fit the file")
        out.append(t)
    out.sort(key=lambda t: (t.file, t.start, t.name))
    _check_no_overlap(out, path)
    return out


def _is_count(value) -> bool:
    """A JSON integer >= 0 (``true`` is not one)."""
    return type(value) is int and value >= 0


def _check_no_overlap(tensors: list[TensorInfo], path: str) -> None:
    """Refuse two tensors sharing bytes: writing one would change the other,
    and no safetensors writer lays a file out that way."""
    end, owner = 0, ""
    for t in sorted(tensors, key=lambda t: (t.start, t.stop)):
        if t.start < end:
            raise ValueError(f"{path}: tensors {owner!r} and {t.name!r} overlap")
        end, owner = t.stop, t.name


def _without_floats(value):
    """Canonical JSON has no floats: config values like 1e-05 become strings."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: _without_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_floats(v) for v in value]
    return value


def _oid(text, what: str) -> ObjectId:
    if not isinstance(text, str) or len(text) != HEX_LENGTH or not is_hex(text):
        raise ManifestInvalid(what, f"bad id {text!r}")
    return ObjectId.parse(text)


def _int(value) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"bad count {value!r}")
    return value


def _dtype(value, what: str) -> str:
    if value not in DTYPE_SIZES:
        raise ManifestInvalid(what, f"unknown dtype {value!r}")
    return value


def _path(value, what: str) -> str:
    if not isinstance(value, str) or not value or value.startswith("/") or \
            any(p in ("", ".", "..") for p in value.split("/")) or "\0" in value:
        raise ManifestInvalid(what, f"unsafe file path {value!r}")
    return value
