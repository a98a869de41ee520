"""The store's ``config.json``: format version and settings.

The config is written once at ``cas init`` and read on every open. A store
written by a newer cas (a higher ``version``) is refused rather than
misread; an older one will be migrated in place by the version that
introduces a new format.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from ..durable import write_atomic
from ..errors import ConfigDamaged, UnsupportedFormat

FORMAT_NAME = "cas-store"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"


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
        default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
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
    compression: Compression = field(default_factory=Compression)

    def to_json(self) -> bytes:
        doc = {"format": FORMAT_NAME, **asdict(self)}
        return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()

    def save(self, store_path: str) -> None:
        write_atomic(os.path.join(store_path, CONFIG_FILE), self.to_json())

    @classmethod
    def load(cls, store_path: str) -> "StoreConfig":
        path = os.path.join(store_path, CONFIG_FILE)
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read())
        except (OSError, ValueError) as e:
            raise ConfigDamaged(path, str(e)) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ConfigDamaged(path, "it is not a cas store config")
        version = doc.get("version")
        if not isinstance(version, int) or version < 1:
            raise ConfigDamaged(path, f"bad format version {version!r}")
        if version > FORMAT_VERSION:
            raise UnsupportedFormat(store_path, version, FORMAT_VERSION)
        if doc.get("encryption") is not None:
            raise UnsupportedFormat(store_path, f"{version} (encrypted)", FORMAT_VERSION)
        try:
            comp = Compression(**doc.get("compression", {}))
            return cls(
                store_id=doc["store_id"],
                created=doc["created"],
                version=version,
                id_hash=doc["id_hash"],
                encryption=None,
                loose_min_size=int(doc["loose_min_size"]),
                pack_target_size=int(doc["pack_target_size"]),
                chunk_min_size=int(doc.get("chunk_min_size", 1 << 20)),
                compression=comp,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigDamaged(path, f"missing or bad setting {e}") from None
