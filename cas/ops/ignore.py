"""``.casignore``: gitignore patterns at the top of a tree, read once per scan."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pathspec

from .walk import Problem

IGNORE_FILE = ".casignore"


@dataclass
class IgnoreRules:
    spec: pathspec.PathSpec | None
    problems: list[Problem] = field(default_factory=list)

    def matches(self, rel: str, is_dir: bool) -> bool:
        """Whether ``rel`` (relative to the tree's top, '/'-separated) is ignored."""
        return self.spec is not None and self.spec.match_file(rel + ("/" if is_dir else ""))


def load_ignore(source: str) -> IgnoreRules:
    try:
        with open(os.path.join(source, IGNORE_FILE), encoding="utf-8", errors="surrogateescape") as f:
            return IgnoreRules(pathspec.GitIgnoreSpec.from_lines(f))
    except FileNotFoundError:
        return IgnoreRules(None)
