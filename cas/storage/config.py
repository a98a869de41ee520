"""The store's ``config.json``: format version and settings.

The config is written once at ``cas init`` and read on every open. A store
written by a newer cas (a higher ``version``) is refused rather than
misread. An older one is read as it is and keeps its version: version 2
adds binary chunk lists (docs/FORMAT.md §14), which a version 1 reader
would take for damage, so a version 1 store goes on getting JSON ones.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime

from ..durable import read_bounded, write_atomic
from ..errors import ConfigDamaged, UnsupportedFormat
from ..objectid import is_hex

FORMAT_NAME = "cas-store"
FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
ID_HASH = "blake3-256"
ALGORITHM = "zstd"
# Sizes outside these bounds are damage, not settings: no writer makes them.
_SIZE_RANGE = (1, 1 << 50)
_LEVEL_RANGE = (-(1 << 17), 22)   # zstd's fast (negative) levels up to its maximum


@dataclass(frozen=True)
class Compression:
    algorithm: str = "zstd"
    # Level 1 and 3 give the same ratio on bf16 weights (0.78) but level 1
    # is ~1.5x faster; small text objects gain ~5% more at level 3.
    small_level: int = 3
    large_level: int = 1
    # Keep the compressed form only when it saves at least this fraction.
    min_saving: float = 0.05


@dataclass(frozen=True)
class StoreConfig:
    store_id: str = field(default_factory=lambda: secrets.token_hex(16))
    created: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    version: int = FORMAT_VERSION
    id_hash: str = "blake3-256"
    encryption: dict | None = None
    # Objects of this size and up are files of their own; smaller ones go
    # into packs. See docs/PERFORMANCE.md for the measurement behind it.
    loose_min_size: int = 8 << 20
    pack_target_size: int = 16 << 20
    # Files of this size and up are cut into chunks (docs/PERFORMANCE.md).
    chunk_min_size: int = 1 << 20
    # SQLite databases and logs, which change a few pages or lines at a time,
    # are cut from this size up ("Small live files" in docs/PERFORMANCE.md).
    live_chunk_min_size: int = 64 << 10
    compression: Compression = field(default_factory=Compression)
    # Group-shared store (cas init --shared): directories 2770, files 0660.
    shared: bool = False

    def to_json(self) -> bytes:
        doc = {"format": FORMAT_NAME, **asdict(self)}
        return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()

    def save(self, store_path: str, mode: int = 0o600) -> None:
        write_atomic(os.path.join(store_path, CONFIG_FILE), self.to_json(), mode=mode)

    @classmethod
    def load(cls, store_path: str) -> StoreConfig:
        path = os.path.join(store_path, CONFIG_FILE)
        try:
            doc = json.loads(read_bounded(path))
        except OSError as e:
            raise ConfigDamaged(path, e.strerror or str(e)) from None
        except (ValueError, RecursionError) as e:  # nesting too deep is not a config either
            raise ConfigDamaged(path, f"not JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ConfigDamaged(path, "it is not a cas store config")
        version = doc.get("version")
        if type(version) is not int or version < 1:
            raise ConfigDamaged(path, f"bad format version {version!r}")
        if version > FORMAT_VERSION:
            raise UnsupportedFormat(store_path, version, FORMAT_VERSION)
        try:
            return _from_doc(doc, store_path, version)
        except _BadSetting as e:
            raise ConfigDamaged(path, str(e)) from None


class _BadSetting(Exception):
    pass


def _from_doc(doc: dict, store_path: str, version: int) -> StoreConfig:
    """Every setting checked for type and range: a config is read by every
    command, and a bad value must be one clear error, not a crash later."""
    id_hash = _setting(doc, "id_hash", str)
    if id_hash != ID_HASH:
        # "blake3-256-keyed" is reserved for encrypted stores (FORMAT §8).
        raise UnsupportedFormat(store_path, f"{version} with ids by {id_hash!r}", FORMAT_VERSION)
    store_id = _setting(doc, "store_id", str)
    if not 1 <= len(store_id) <= 64 or not is_hex(store_id):
        raise _BadSetting(f"store_id must be hex digits, not {store_id!r}")
    shared = doc.get("shared", False)
    if type(shared) is not bool:
        raise _BadSetting(f"shared must be true or false, not {shared!r}")
    return StoreConfig(
        store_id=store_id,
        created=_setting(doc, "created", str),
        version=version,
        id_hash=id_hash,
        encryption=_encryption(doc.get("encryption"), store_path, version),
        loose_min_size=_number(doc, "loose_min_size", int, _SIZE_RANGE),
        pack_target_size=_number(doc, "pack_target_size", int, _SIZE_RANGE),
        chunk_min_size=_number(doc, "chunk_min_size", int, _SIZE_RANGE, default=1 << 20),
        # Absent in configs older than the setting: those stores get it too.
        live_chunk_min_size=_number(doc, "live_chunk_min_size", int, _SIZE_RANGE,
                                    default=StoreConfig.live_chunk_min_size),
        compression=_compression(doc.get("compression", {}), store_path, version),
        shared=shared,
    )


# The one encryption scheme this version implements (docs/FORMAT.md §18).
ENCRYPTION = {"scheme": "cas-aead-1", "cipher": "aes-256-gcm", "names": "aes-256",
              "kdf": "argon2id", "segment_size": 1 << 20}


def _encryption(doc, store_path: str, version: int) -> dict | None:
    if doc is None:
        return None
    if doc != ENCRYPTION:
        raise UnsupportedFormat(store_path, f"{version} encrypted as {doc!r}", FORMAT_VERSION)
    return dict(ENCRYPTION)


def _compression(doc, store_path: str, version: int) -> Compression:
    if not isinstance(doc, dict):
        raise _BadSetting(f"compression must be an object, not {doc!r}")
    unknown = set(doc) - {f.name for f in fields(Compression)}
    if unknown:
        raise _BadSetting(f"unknown compression settings {sorted(unknown)}")
    defaults = Compression()
    algorithm = _setting(doc, "algorithm", str, defaults.algorithm)
    if algorithm != ALGORITHM:
        raise UnsupportedFormat(store_path, f"{version} compressed with {algorithm!r}",
                                FORMAT_VERSION)
    return Compression(
        algorithm=algorithm,
        small_level=_number(doc, "small_level", int, _LEVEL_RANGE, defaults.small_level),
        large_level=_number(doc, "large_level", int, _LEVEL_RANGE, defaults.large_level),
        min_saving=float(_number(doc, "min_saving", (int, float), (0, 1), defaults.min_saving)),
    )


_MISSING = object()


def _setting(doc: dict, key: str, kind, default=_MISSING):
    value = doc.get(key, default)
    if value is _MISSING:
        raise _BadSetting(f"{key} is missing")
    # bool is an int to Python, never a size or level in a config.
    if type(value) is bool or not isinstance(value, kind):
        raise _BadSetting(f"{key} has the wrong type ({value!r})")
    return value


def _number(doc: dict, key: str, kind, bounds: tuple, default=_MISSING):
    value = _setting(doc, key, kind, default)
    low, high = bounds
    if not low <= value <= high:  # NaN fails this too
        raise _BadSetting(f"{key} is {value!r}, outside {low}..{high}")
    return value
