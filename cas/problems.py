"""One record of something wrong, for every report that lists problems.

A walk that cannot read a file, a restore that cannot place one, a verify
that finds a damaged object, pack, tree or ref: each is a ``Problem``
saying where (a path as the user sees it, or the name of what is damaged),
what is wrong, how bad it is, and, for damage in a store, the object's id,
its kind and the snapshots that use it. Reports are lists of these, so a
caller reads every report the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .objectid import ObjectId

WARNING = "warning"
ERROR = "error"


@dataclass(frozen=True, slots=True)
class Problem:
    # A file's path as shown, or what is damaged: an object's id in hex, a
    # ref's name, a store file's path.
    path: str
    message: str
    severity: str = ERROR
    oid: ObjectId | None = None
    # For damage in a store: "object", "tree", "pack", "snapshot", "ref" or "file".
    kind: str = ""
    # (snapshot id, path in it) pairs that use the damaged object, when known.
    used_by: tuple[tuple[ObjectId, bytes], ...] = ()

    @classmethod
    def damage(cls, oid: ObjectId | None, kind: str, why: str,
               used_by: tuple[tuple[ObjectId, bytes], ...] = (), name: str = "") -> Problem:
        """Damage found in a store: named by ``oid``, or by ``name`` when it
        has no id (a ref, a file the index does not list)."""
        return cls(name or (oid.hex if oid is not None else ""), why, ERROR, oid, kind,
                   tuple(used_by))

    def with_users(self, used_by: tuple[tuple[ObjectId, bytes], ...]) -> Problem:
        return Problem(self.path, self.message, self.severity, self.oid, self.kind, tuple(used_by))

    # The names verify's reports have always used.
    @property
    def label(self) -> str:
        return self.path

    @property
    def what(self) -> str:
        return self.kind

    @property
    def why(self) -> str:
        return self.message

    def damage_doc(self) -> dict:
        """The JSON of one damage record, as ``verify`` and ``repair`` print it."""
        return {"id": self.path, "kind": self.kind, "why": self.message,
                "used_by": [{"snapshot": s.hex, "path": os.fsdecode(p)}
                            for s, p in self.used_by]}
