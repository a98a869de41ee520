"""Which directory a branch tracks, and which branch a directory belongs to.

A store named ``.cas`` tracks the directory it sits in, on the HEAD branch
(``main`` by default). A store elsewhere (an external disk) can hold several
source directories, each on its own branch; a branch's source is recorded in
every snapshot it has. A new source gets its base name as branch name; when
another directory of that base name already has it (``x/models`` and
``y/models``), the first free of ``models-2``, ``models-3``, ...: one branch
never mixes two directories' files.
"""

from __future__ import annotations

import os
import re

from ..errors import CasError
from ..model.history import History
from ..model.refs import HEADS, check_new_ref_name, check_ref_name, looks_like_id
from ..storage.store import STORE_DIR


class NoSource(CasError):
    def __init__(self, branch: str):
        super().__init__(
            f"branch {branch} has no snapshots and this store tracks no directory of its own: "
            "name the directory to snapshot (cas snapshot PATH)")


def own_tree(history: History) -> str | None:
    path = history.store.path
    return os.path.dirname(path) if os.path.basename(path) == STORE_DIR else None


def resolve_source(history: History, path: str | None, branch: str | None) -> tuple[str, str]:
    """(absolute source directory, branch) for a command on ``path``/``branch``."""
    if branch is not None and history.refs.get(HEADS + check_ref_name(branch)) is None:
        check_new_ref_name(branch)
    if path is None:
        branch = branch or history.refs.head_branch()
        head = history.branch_head(branch)
        if head is not None:
            return head.source, branch
        tree = own_tree(history)
        if tree is None:
            raise NoSource(branch)
        return tree, branch
    source = os.path.abspath(path)
    if branch is not None:
        return source, branch
    if source == own_tree(history):
        return source, history.refs.head_branch()
    taken = {}
    for name in history.refs.branches():
        head = history.branch_head(name)
        if head is not None and head.source == source:
            return source, name
        taken[name] = head
    return source, free_branch_name(plain_branch_name(source), taken)


def plain_branch_name(source: str) -> str:
    """The branch name a directory gets when no other directory has it."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", os.path.basename(source.rstrip("/")))
    name = name.strip("-")[:190]
    if looks_like_id(name):
        name += "-tree"  # a name like 'deadbeef' would hide snapshot ids starting so
    return name if name and name != "HEAD" else "tree"


def free_branch_name(name: str, taken) -> str:
    """``name``, or ``name-2``, ``name-3``, ... : the first no branch uses yet."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate
