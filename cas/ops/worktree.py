"""Which directory a branch tracks, and which branch a directory belongs to.

A store named ``.cas`` tracks the directory it sits in, on the HEAD branch
(``main`` by default). A store elsewhere (an external disk) can hold several
source directories, each on its own branch; a branch's source is recorded in
every snapshot it has.
"""

from __future__ import annotations

import os
import re

from ..errors import CasError
from ..model.history import History
from ..model.refs import check_ref_name
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
    if branch is not None:
        check_ref_name(branch)
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
    for name in history.refs.branches():
        head = history.branch_head(name)
        if head is not None and head.source == source:
            return source, name
    if source == own_tree(history):
        return source, history.refs.head_branch()
    return source, _branch_name_for(source)


def _branch_name_for(source: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", os.path.basename(source.rstrip("/")))
    name = name.strip("-")
    return name if name and name != "HEAD" else "tree"
