"""Branches, tags and HEAD.

Refs are small plain files in the store (``HEAD``, ``refs/heads/<name>``,
``refs/tags/<name>``), written atomically, and mirrored in the index's
``refs`` table for fast lookups. The files are the truth: an index rebuild
reads them back.
"""

from __future__ import annotations

import os
import re

from ..durable import atomic_output, fsync_dir, remove_quietly
from ..errors import InvalidRefName, RefNotFound
from ..objectid import ObjectId
from ..storage.store import Store

HEADS = "refs/heads/"
TAGS = "refs/tags/"
MODELS = "refs/models/"
DEFAULT_BRANCH = "main"
# One path component: no '/', no leading '-' or '.', no '..', no '.lock'
# suffix (git's rules, minus nesting, which keeps refs/ a flat directory).
_NAME = re.compile(r"^(?![-.])(?!.*\.\.)[A-Za-z0-9._-]+(?<!\.lock)\Z")
TABLE = b"refs"


def check_ref_name(name: str) -> str:
    if not _NAME.match(name) or name == "HEAD" or len(name) > 200:
        raise InvalidRefName(name)
    return name


class Refs:
    def __init__(self, store: Store):
        self._store = store
        self._root = store.path

    def _path(self, ref: str) -> str:
        return os.path.join(self._root, *ref.split("/"))

    # -- HEAD --------------------------------------------------------------

    def head_branch(self) -> str:
        try:
            with open(self._path("HEAD")) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return DEFAULT_BRANCH
        name = text[len("ref: " + HEADS):] if text.startswith("ref: " + HEADS) else ""
        return check_ref_name(name)

    def set_head_branch(self, branch: str) -> None:
        check_ref_name(branch)
        with atomic_output(self._path("HEAD"), self._store.layout.tmp) as f:
            f.write(f"ref: {HEADS}{branch}\n".encode())

    # -- branches and tags -------------------------------------------------

    def get(self, ref: str) -> ObjectId | None:
        # The files are the truth (written first); the index table mirrors them.
        return self._read_file(ref)

    def _read_file(self, ref: str) -> ObjectId | None:
        try:
            with open(self._path(ref)) as f:
                return ObjectId.parse(f.read().strip())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):
            return None

    def set(self, ref: str, oid: ObjectId) -> None:
        check_ref_name(ref.rpartition("/")[2])
        path = self._path(ref)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_output(path, self._store.layout.tmp) as f:
            f.write(oid.hex.encode() + b"\n")
        self._store.index.update(TABLE, put=[(ref.encode(), oid.digest)])

    def delete(self, ref: str) -> None:
        """Remove a ref; a ref that does not exist is an error the user can act on."""
        if self._read_file(ref) is None:
            raise RefNotFound(ref.rpartition("/")[2])
        remove_quietly(self._path(ref))
        fsync_dir(os.path.dirname(self._path(ref)))
        self._store.index.update(TABLE, delete=[ref.encode()])

    def list(self, prefix: str) -> dict[str, ObjectId]:
        """Refs under ``prefix`` (e.g. ``refs/heads/``) by short name, read from the files."""
        base = self._path(prefix.rstrip("/"))
        found = {}
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            names = []
        for name in names:
            if _NAME.match(name):
                oid = self._read_file(prefix + name)
                if oid is not None:
                    found[name] = oid
        return dict(sorted(found.items()))

    def branches(self) -> dict[str, ObjectId]:
        return self.list(HEADS)

    def tags(self) -> dict[str, ObjectId]:
        return self.list(TAGS)

    def models(self) -> dict[str, ObjectId]:
        return self.list(MODELS)

    def reload_index(self) -> None:
        """Repopulate the index's refs table from the files (after a rebuild)."""
        self._store.index.clear(TABLE)
        items = [((HEADS + n).encode(), o.digest) for n, o in self.branches().items()]
        items += [((TAGS + n).encode(), o.digest) for n, o in self.tags().items()]
        items += [((MODELS + n).encode(), o.digest) for n, o in self.models().items()]
        self._store.index.update(TABLE, put=items)
