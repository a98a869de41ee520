"""Snapshots: a tree at a moment, with its parents and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import ManifestInvalid
from ..objectid import HEX_LENGTH, ObjectId, is_hex
from .canonical import dumps, loads

SNAPSHOT_VERSION = 1
STAT_KEYS = ("files", "dirs", "symlinks", "bytes", "new_objects", "new_bytes", "stored_bytes")


@dataclass(frozen=True)
class Snapshot:
    tree: ObjectId
    parents: tuple[ObjectId, ...]
    time_ns: int
    message: str
    branch: str
    host: str
    user: str
    source: str                      # absolute path of the snapshotted directory
    stats: dict = field(default_factory=dict)
    oid: ObjectId | None = None      # set once stored

    @property
    def parent(self) -> ObjectId | None:
        return self.parents[0] if self.parents else None

    @property
    def time_iso(self) -> str:
        dt = datetime.fromtimestamp(self.time_ns / 1e9, timezone.utc)
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.time_ns % 10**9:09d}Z"

    def to_json(self) -> bytes:
        return dumps({
            "type": "snapshot", "version": SNAPSHOT_VERSION,
            "tree": self.tree.hex, "parents": [p.hex for p in self.parents],
            "time_ns": self.time_ns, "time": self.time_iso, "message": self.message,
            "branch": self.branch, "host": self.host, "user": self.user, "source": self.source,
            "stats": {k: int(self.stats.get(k, 0)) for k in STAT_KEYS},
        })

    @classmethod
    def from_json(cls, data: bytes, oid: ObjectId) -> "Snapshot":
        what = f"snapshot {oid.hex}"
        doc = loads(data, what)
        if doc.get("type") != "snapshot":
            raise ManifestInvalid(what, "not a snapshot manifest")
        if doc.get("version") != SNAPSHOT_VERSION:
            raise ManifestInvalid(what, f"unknown snapshot version {doc.get('version')!r}")
        try:
            parents = tuple(_oid(p, what) for p in doc["parents"])
            stats = doc.get("stats", {})
            return cls(
                tree=_oid(doc["tree"], what), parents=parents, time_ns=int(doc["time_ns"]),
                message=str(doc["message"]), branch=str(doc["branch"]), host=str(doc["host"]),
                user=str(doc["user"]), source=str(doc["source"]),
                stats={k: int(stats.get(k, 0)) for k in STAT_KEYS}, oid=oid,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestInvalid(what, f"missing or bad field ({e})") from None


def _oid(text, what: str) -> ObjectId:
    if not isinstance(text, str) or len(text) != HEX_LENGTH or not is_hex(text):
        raise ManifestInvalid(what, f"bad id {text!r}")
    return ObjectId.parse(text)
