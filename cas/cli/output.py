"""Printing for the CLI: paths as bytes, JSON, warnings, progress."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator

from ..errors import human_bytes

# C0 controls, DEL and C1 controls: a name or message holding ESC [ ... or
# an OSC sequence would otherwise drive the terminal it is printed on.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def path_bytes(path: str) -> bytes:
    """A path exactly as the filesystem has it, undecodable bytes included."""
    return os.fsencode(path)


def path_text(path: str) -> str:
    """A printable form of a path: undecodable bytes shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _escape_control(m: re.Match) -> str:
    return f"\\x{ord(m.group()):02x}"


def shown(text: str | bytes) -> str:
    """Text from a store (a file name, a message) made safe for a terminal.

    Control characters are written ``\\xNN``, and so are bytes that are not
    UTF-8. Only human output goes through this; JSON keeps exact values.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    else:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(_escape_control, text)


def out_line(text: str | bytes) -> None:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    sys.stdout.buffer.write(data + b"\n")


def out_json(doc) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def print_changes(changes) -> None:
    """'A|M|D|T  path  (sizes)' per change, as diff and status print them."""
    from ..model.treediff import SYMBOL
    for c in changes:
        sizes = f"{_size(c.old)} -> {_size(c.new)}" if c.old and c.new else _size(c.old or c.new)
        out_line(f"{SYMBOL[c.kind]}  {shown(c.path)}  ({sizes})")


def _size(entry) -> str:
    return "" if entry is None or entry.kind == "dir" else str(entry.size)


def warn(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"cas: warning: {shown(message)}\n")


def error_line(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"cas: error: {shown(message)}\n")


def info(message: str, quiet: bool) -> None:
    # Messages carry names from the store and the disk: one line each, no
    # control characters reaching the terminal.
    if not quiet:
        sys.stdout.flush()
        sys.stderr.write(shown(message) + "\n")


def wants_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


class Advance:
    """What ``byte_progress`` yields: called once per file (or object) done
    with its bytes; ``set_total`` gives the totals once they are known (a
    scan learns them after its stat pass), turning the spinner into a bar."""

    def __init__(self, progress, task) -> None:
        self._progress, self._task, self.count = progress, task, 0

    def __call__(self, nbytes: int) -> None:
        self.count += 1
        self._progress.update(self._task, advance=nbytes, count=self.count)

    def set_total(self, nbytes: int | None, files: int | None = None) -> None:
        self._progress.update(self._task, total=nbytes, files=_of(files))


def _of(files: int | None) -> str:
    return "" if files is None else f"/{files}"


def _columns(unit: str) -> tuple:
    """Bar, done/total, rate and ETA while a total is known; a spinner with
    what is done and the rate while it is not (as restic shows them)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.text import Text

    class Done(ProgressColumn):
        def render(self, task):
            return Text(human_bytes(int(task.completed)))

    class Known(ProgressColumn):
        """One column whose look depends on whether the task has a total."""

        def __init__(self, known: ProgressColumn, unknown: ProgressColumn | None,
                     label: str = "") -> None:
            super().__init__()
            self.known, self.unknown, self.label = known, unknown, label

        def render(self, task):
            column = self.known if task.total is not None else self.unknown
            if column is None:
                return Text("")
            return Text(self.label) + column.render(task) if self.label else column.render(task)

    return (TextColumn("{task.description}"),
            Known(BarColumn(), SpinnerColumn()),
            TextColumn("{task.fields[count]}{task.fields[files]} " + unit),
            Known(DownloadColumn(binary_units=True), Done()), TransferSpeedColumn(),
            Known(TimeRemainingColumn(), None, "ETA "))


@contextlib.contextmanager
def byte_progress(description: str, total: int | None, enabled: bool,
                  unit: str = "files", files: int | None = None, console=None) -> Iterator:
    """A progress bar on stderr on a terminal, else nothing (yields None).

    Yields an ``Advance``: call it once per file (or object) done with its
    bytes. ``total`` bytes (and ``files``, when known) give a bar with ETA.
    """
    if not enabled:
        yield None
        return
    # rich is imported here: it costs ~25 ms of start-up that commands
    # without a terminal never need.
    from rich.console import Console
    from rich.progress import Progress
    progress = Progress(*_columns(unit), console=console or Console(file=sys.stderr),
                        transient=True)
    with progress:
        task = progress.add_task(description, total=total, count=0, files=_of(files))
        yield Advance(progress, task)
