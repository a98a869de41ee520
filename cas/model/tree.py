"""Trees: one JSON manifest per directory, stored as an object.

A tree lists a directory's entries sorted by the bytes of their names. A
file entry names its content object; a dir entry names the subtree; a
symlink entry records its target (never followed). Unchanged directories
produce identical bytes and so the same id in every snapshot.

Decoding is where safety lives: a tree whose names could escape the
directory being restored (``..``, ``.``, ``/``, NUL, empty, duplicates) is
rejected before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ManifestInvalid
from ..objectid import HEX_LENGTH, ObjectId, is_hex
from .canonical import dumps, get_name, loads, put_name

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"
KINDS = (FILE, DIR, SYMLINK)
# Version 2 trees carry owners (uid, gid, user, group); a tree none of whose
# entries has one is written as version 1, byte for byte as before, so model
# trees and empty directories keep their ids.
TREE_VERSION = 2
OWNERLESS_VERSION = 1
# What a timestamp can hold and a datetime can show: years 1 to 9999.
MIN_MTIME_NS = -62_135_596_800 * 10**9
MAX_MTIME_NS = 253_402_300_799 * 10**9
_MODE = re.compile(r"^[0-7]{4}\Z")
_ENTRY_KEYS = {"name", "name_b64", "kind", "mode", "mtime_ns", "id", "size", "target", "target_b64",
               "uid", "gid", "user", "group"}
MAX_ID = 2**32 - 2        # (uid_t)-1 means "no change" to chown: never a real owner
MAX_OWNER_NAME = 256


@dataclass(frozen=True, slots=True)
class Owner:
    """Who owned an entry: numeric ids, and the names they had where it was recorded."""

    uid: int
    gid: int
    user: str | None = None
    group: str | None = None

    def put(self, doc: dict) -> None:
        doc["uid"], doc["gid"] = self.uid, self.gid
        if self.user is not None:
            doc["user"] = self.user
        if self.group is not None:
            doc["group"] = self.group

    @classmethod
    def get(cls, doc: dict, what: str, name: bytes) -> Owner | None:
        if "uid" not in doc and "gid" not in doc:
            if "user" in doc or "group" in doc:
                raise ManifestInvalid(what, f"entry {name!r} has owner names without ids")
            return None
        key = (doc.get("uid"), doc.get("gid"), doc.get("user"), doc.get("group"))
        try:
            known = _OWNERS_SEEN.get(key)
        except TypeError:  # an unhashable value: checked, and refused, below
            known = None
        if known is not None:
            return known  # a tree's entries mostly share one owner: check it once
        owner = cls._checked(doc, what, name)
        if len(_OWNERS_SEEN) < 1024:
            _OWNERS_SEEN[key] = owner
        return owner

    @classmethod
    def _checked(cls, doc: dict, what: str, name: bytes) -> Owner:
        uid, gid = doc.get("uid"), doc.get("gid")
        if type(uid) is not int or type(gid) is not int or not 0 <= uid <= MAX_ID \
                or not 0 <= gid <= MAX_ID:
            raise ManifestInvalid(what, f"entry {name!r} has a bad uid or gid")
        user, group = doc.get("user"), doc.get("group")
        for text in (user, group):
            if text is not None and (not isinstance(text, str) or not 0 < len(text) <= MAX_OWNER_NAME
                                     or not text.isprintable() or ":" in text):
                raise ManifestInvalid(what, f"entry {name!r} has a bad user or group name")
        return cls(uid, gid, user, group)


_OWNERS_SEEN: dict[tuple, Owner] = {}


@dataclass(frozen=True, slots=True)
class TreeEntry:
    name: bytes
    kind: str
    mode: int                     # permission bits, e.g. 0o644
    mtime_ns: int
    size: int = 0                 # file: content bytes; symlink: target length
    oid: ObjectId | None = None   # file content or subtree
    target: bytes | None = None   # symlink target
    owner: Owner | None = None  # None in trees recorded before owners were

    def to_doc(self) -> dict:
        doc: dict = {"kind": self.kind, "mode": f"{self.mode:04o}", "mtime_ns": self.mtime_ns}
        put_name(doc, "name", self.name)
        if self.owner is not None:
            self.owner.put(doc)
        if self.kind == SYMLINK:
            put_name(doc, "target", self.target or b"")
        else:
            assert self.oid is not None   # files and directories always have one (_entry)
            doc["id"] = self.oid.hex
        if self.kind == FILE:
            doc["size"] = self.size
        return doc


@dataclass(frozen=True, slots=True)
class Tree:
    entries: tuple[TreeEntry, ...]

    def to_json(self) -> bytes:
        version = TREE_VERSION if any(e.owner is not None for e in self.entries) \
            else OWNERLESS_VERSION
        return dumps({"type": "tree", "version": version,
                      "entries": [e.to_doc() for e in self.entries]})

    def get(self, name: bytes) -> TreeEntry | None:
        for e in self.entries:
            if e.name == name:
                return e
        return None

    @classmethod
    def build(cls, entries: list[TreeEntry]) -> Tree:
        return cls(tuple(sorted(entries, key=lambda e: e.name)))

    @classmethod
    def from_json(cls, data: bytes, oid: ObjectId) -> Tree:
        what = f"tree {oid.hex}"
        doc = loads(data, what, "tree", (OWNERLESS_VERSION, TREE_VERSION))
        if set(doc) != {"type", "version", "entries"}:
            raise ManifestInvalid(what, f"unexpected fields {sorted(set(doc) - {'type', 'version', 'entries'})}")
        raw = doc.get("entries")
        if not isinstance(raw, list):
            raise ManifestInvalid(what, "entries is not a list")
        entries = [_entry(e, what) for e in raw]
        if doc["version"] == OWNERLESS_VERSION and any(e.owner is not None for e in entries):
            raise ManifestInvalid(what, "a version 1 tree carries owners")
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ManifestInvalid(what, f"the name {dup!r} appears twice")
        if names != sorted(names):
            raise ManifestInvalid(what, "entries are not sorted by name")
        return cls(tuple(entries))


def check_name(name: bytes, what: str) -> None:
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        raise ManifestInvalid(what, f"unsafe entry name {name!r}")


def _entry(doc, what: str) -> TreeEntry:
    if not isinstance(doc, dict):
        raise ManifestInvalid(what, "an entry is not an object")
    unknown = set(doc) - _ENTRY_KEYS
    if unknown:
        raise ManifestInvalid(what, f"an entry has unknown fields {sorted(unknown)}")
    if ("name" in doc) == ("name_b64" in doc):
        raise ManifestInvalid(what, "an entry needs exactly one of name and name_b64")
    name = get_name(doc, "name", what)
    if name is None:
        raise ManifestInvalid(what, "an entry has no name")
    check_name(name, what)
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ManifestInvalid(what, f"entry {name!r} has unknown kind {kind!r}")
    mode_text, mtime_ns = doc.get("mode"), doc.get("mtime_ns")
    if not isinstance(mode_text, str) or not _MODE.match(mode_text) or \
            type(mtime_ns) is not int:
        raise ManifestInvalid(what, f"entry {name!r} has a bad mode or mtime")
    mode = int(mode_text, 8)
    if not 0 <= mode <= 0o7777:
        raise ManifestInvalid(what, f"entry {name!r} has mode {mode:o} outside 0-7777")
    if not MIN_MTIME_NS <= mtime_ns <= MAX_MTIME_NS:
        raise ManifestInvalid(what, f"entry {name!r} has an mtime outside the years 1-9999")
    owner = Owner.get(doc, what, name)
    if kind == SYMLINK:
        if "id" in doc or "size" in doc:
            raise ManifestInvalid(what, f"symlink {name!r} carries an id or size")
        if ("target" in doc) == ("target_b64" in doc):
            raise ManifestInvalid(what, f"symlink {name!r} needs exactly one of target and target_b64")
        target = get_name(doc, "target", what)
        if not target or b"\0" in target:
            raise ManifestInvalid(what, f"symlink {name!r} has no valid target")
        return TreeEntry(name, kind, mode, mtime_ns, len(target), None, target, owner)
    if "target" in doc or "target_b64" in doc:
        raise ManifestInvalid(what, f"{kind} {name!r} carries a symlink target")
    if kind == DIR and "size" in doc:
        raise ManifestInvalid(what, f"directory {name!r} carries a size")
    oid_text = doc.get("id")
    if not isinstance(oid_text, str) or len(oid_text) != HEX_LENGTH or not is_hex(oid_text):
        raise ManifestInvalid(what, f"entry {name!r} has a bad id")
    size = doc.get("size", 0) if kind == FILE else 0
    if (kind == FILE and "size" not in doc) or type(size) is not int or size < 0:
        raise ManifestInvalid(what, f"entry {name!r} has a bad size")
    return TreeEntry(name, kind, mode, mtime_ns, size, ObjectId.parse(oid_text), None, owner)
