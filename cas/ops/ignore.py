"""``.casignore``: gitignore patterns at the top of a tree, read once per scan.

The file is data from the tree being backed up, so it is read as git reads
``.gitignore``: a line that is not a valid pattern is warned about and
skipped, the others still apply. It is opened without following a symbolic
link and without blocking (a FIFO or a device must not hang a scan), and
only a regular file of at most ``MAX_IGNORE_BYTES`` is used. A file that
cannot be used is reported and nothing is ignored: backing up too much
loses nothing, while half of a file of patterns could ignore what its
author meant to keep.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field

import pathspec
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

from ..durable import read_bounded
from .walk import WARNING, Problem

IGNORE_FILE = ".casignore"
MAX_IGNORE_BYTES = 1 << 20


@dataclass
class IgnoreRules:
    spec: pathspec.PathSpec | None
    problems: list[Problem] = field(default_factory=list)

    def matches(self, rel: str, is_dir: bool) -> bool:
        """Whether ``rel`` (relative to the tree's top, '/'-separated) is ignored."""
        return self.spec is not None and self.spec.match_file(rel + ("/" if is_dir else ""))


def load_ignore(source: str, dir_fd: int | None = None) -> IgnoreRules:
    """The rules of ``source``'s ``.casignore`` (``dir_fd``: ``source`` opened
    as a directory, so the file is looked up in the very directory scanned).
    Never raises for the file's content or kind: what is wrong is in ``problems``."""
    path = os.path.join(source, IGNORE_FILE)
    data, why = _read_bounded(IGNORE_FILE if dir_fd is not None else path, dir_fd)
    if data is None:
        return IgnoreRules(None, [Problem(path, f"{why}; not used, nothing is ignored", WARNING)]
                           if why else [])
    return _compile(path, data.decode("utf-8", "surrogateescape").splitlines())


def _read_bounded(path: str, dir_fd: int | None) -> tuple[bytes | None, str | None]:
    """The file's bytes, or None and why not (None and None: there is no file)."""
    try:
        return read_bounded(path, MAX_IGNORE_BYTES, dir_fd), None
    except FileNotFoundError:
        return None, None
    except OSError as e:
        if e.errno == errno.EFBIG:
            return None, f"is larger than {MAX_IGNORE_BYTES >> 20} MiB"
        return None, e.strerror or f"cannot be read ({e})"


def _compile(path: str, lines: list[str]) -> IgnoreRules:
    """Each line on its own, so one bad pattern does not cost the others; the
    good ones are then matched together, in their order, so negation and
    "the last match wins" work as in git."""
    patterns, problems = [], []
    for number, line in enumerate(lines, 1):
        try:
            pattern = GitIgnoreSpecPattern(line)
        except (ValueError, re.error) as e:
            detail = f" ({e.msg})" if isinstance(e, re.error) else ""
            problems.append(Problem(path, f"line {number}: {_shown(line)} is not a valid "
                                          f"pattern{detail}; skipped", WARNING))
            continue
        if pattern.include is not None:  # blank lines and comments give no pattern
            patterns.append(pattern)
    if not patterns:
        return IgnoreRules(None, problems)
    return IgnoreRules(pathspec.GitIgnoreSpec(patterns), problems)


def _shown(line: str) -> str:
    """A line as a warning shows it: quoted, control characters escaped, cut short."""
    text = line if len(line) <= 80 else line[:77] + "..."
    return ascii(text) if any(ord(c) < 32 or ord(c) == 127 for c in text) else repr(text)
