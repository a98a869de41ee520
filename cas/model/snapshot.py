"""Snapshots: a tree at a moment, with its parents and provenance."""

from __future__ import annotations

import getpass
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from ..errors import ManifestInvalid
from ..objectid import HEX_LENGTH, ObjectId, is_hex
from .canonical import dumps, get_name, loads, put_name

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
    model: ObjectId | None = None    # the model manifest of an imported model version
    model_version: int | None = None  # its number, fixed at import (NAME@N)
    # The audit trail's head when recorded (record count, hash of its last
    # line): cutting records off the log's end is found against it.
    # (records, hash of the last line, id of the store whose log it is):
    # a record copied from another store keeps that store's head.
    audit_head: tuple[int, str, str | None] | None = None
    oid: ObjectId | None = None      # set once stored

    @property
    def stored_id(self) -> ObjectId:
        """The id of a snapshot read from or recorded in the store; one only
        built (``oid`` None) has none, and asking for it is a bug."""
        if self.oid is None:
            raise ValueError("a snapshot not yet recorded has no id")
        return self.oid

    @property
    def parent(self) -> ObjectId | None:
        return self.parents[0] if self.parents else None

    @property
    def time_iso(self) -> str:
        return iso_time(self.time_ns)

    def to_json(self) -> bytes:
        doc = {
            "type": "snapshot", "version": SNAPSHOT_VERSION,
            "tree": self.tree.hex, "parents": [p.hex for p in self.parents],
            "time_ns": self.time_ns, "time": self.time_iso, "message": self.message,
            "branch": self.branch, "host": self.host, "user": self.user,
            "stats": {k: int(self.stats.get(k, 0)) for k in STAT_KEYS},
        }
        if self.model is not None:
            doc["model"] = self.model.hex
            if self.model_version is not None:
                doc["model_version"] = self.model_version
        if self.audit_head is not None:
            records, digest, store = self.audit_head
            doc["audit_head"] = {"records": records, "hash": digest} | ({"store": store} if store else {})
        # A source path that is not UTF-8 round-trips through source_b64.
        put_name(doc, "source", os.fsencode(self.source))
        return dumps(doc)

    @classmethod
    def from_json(cls, data: bytes, oid: ObjectId) -> Snapshot:
        what = f"snapshot {oid.hex}"
        doc = loads(data, what, "snapshot", SNAPSHOT_VERSION)
        parents, stats = doc.get("parents"), doc.get("stats")
        if not isinstance(parents, list) or not isinstance(stats, dict):
            raise ManifestInvalid(what, "parents must be a list and stats an object")
        for key in ("message", "branch", "host", "user"):
            if not isinstance(doc.get(key), str):
                raise ManifestInvalid(what, f"{key} must be a string")
        try:
            doc["branch"].encode("utf-8")  # a lone surrogate ("\ud800") names no branch
        except UnicodeEncodeError:
            raise ManifestInvalid(what, "branch is not valid Unicode") from None
        number = doc.get("model_version")
        if number is not None and (type(number) is not int or number < 1 or "model" not in doc):
            raise ManifestInvalid(what, "model_version must be a positive integer on a model version")
        source = get_name(doc, "source", what)
        if source is None or type(doc.get("time_ns")) is not int or \
                any(type(stats.get(k, 0)) is not int for k in STAT_KEYS):
            raise ManifestInvalid(what, "missing source, or a bad time or count")
        return cls(
            tree=_oid(doc.get("tree"), what), parents=tuple(_oid(p, what) for p in parents),
            time_ns=doc["time_ns"], message=doc["message"], branch=doc["branch"],
            host=doc["host"], user=doc["user"], source=os.fsdecode(source),
            stats={k: stats.get(k, 0) for k in STAT_KEYS},
            model=_oid(doc["model"], what) if "model" in doc else None,
            model_version=number, audit_head=_audit_head(doc.get("audit_head"), what), oid=oid,
        )


def _audit_head(value, what: str) -> tuple[int, str, str | None] | None:
    if value is None:
        return None
    records, digest, store = (value.get("records"), value.get("hash"), value.get("store")) \
        if isinstance(value, dict) else (None, None, None)
    if type(records) is not int or records < 1 or not isinstance(digest, str) \
            or len(digest) != HEX_LENGTH or not is_hex(digest) \
            or not (store is None or (isinstance(store, str) and 1 <= len(store) <= 64 and is_hex(store))):
        raise ManifestInvalid(what, "audit_head must be a record count, a hash and a store id")
    return records, digest, store


class WrittenCounts(Protocol):
    """What a snapshot's stats take from the writer that stored its content."""
    new_objects: int
    new_bytes: int
    stored_bytes: int


def new_snapshot(tree: ObjectId, parent: Snapshot | None, *, message: str, branch: str,
                 source: str, counts: dict, written: WrittenCounts, time_ns: int | None = None,
                 model: ObjectId | None = None, model_version: int | None = None) -> Snapshot:
    """A snapshot to record now, made the one way every command makes
    them: this host and user, the parent's id as its one parent, and the
    stats of ``counts`` (files, dirs, symlinks, bytes) with what
    ``written`` (an ``ObjectWriter``) stored."""
    stats = {**counts, "new_objects": written.new_objects, "new_bytes": written.new_bytes,
             "stored_bytes": written.stored_bytes}
    return Snapshot(
        tree=tree, parents=(parent.oid,) if parent is not None and parent.oid is not None else (),
        time_ns=time.time_ns() if time_ns is None else time_ns, message=message,
        branch=branch, host=socket.gethostname(), user=current_user(), source=source,
        stats=stats, model=model, model_version=model_version)


def current_user() -> str:
    """The user name recorded in snapshots; the uid when it has no name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def iso_time(time_ns: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ``; a time outside years 1-9999 (a
    crafted record) says so instead of failing to format."""
    seconds, nanos = divmod(time_ns, 10**9)
    try:
        dt = datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return f"(out of range: {time_ns} ns)"
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos:09d}Z"


def _oid(text, what: str) -> ObjectId:
    if not isinstance(text, str) or len(text) != HEX_LENGTH or not is_hex(text):
        raise ManifestInvalid(what, f"bad id {text!r}")
    return ObjectId.parse(text)
