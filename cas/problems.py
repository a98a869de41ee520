"""One record of something wrong, for every report that lists problems.

A walk that cannot read a file, a restore that cannot place one, a verify
that finds a damaged object, pack, tree or ref: each is a ``Problem``
saying where (a path as the user sees it, or the name of what is damaged),
what is wrong, how bad it is, and, for damage in a store, the object's id,
its kind and the snapshots that use it. Reports are lists of these, so a
caller reads every report the same way.
"""

from __future__ import annotations

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

    def damage_doc(self) -> dict:
        """The JSON of one damage record, as ``verify`` and ``repair`` print it."""
        # A path that is not UTF-8 is shown with \xNN escapes, as every
        # path in the JSON output is (a lone surrogate is no JSON text).
        return {"id": self.path, "kind": self.kind, "why": self.message,
                "used_by": [{"snapshot": s.hex, "path": p.decode("utf-8", "backslashreplace")}
                            for s, p in self.used_by]}
