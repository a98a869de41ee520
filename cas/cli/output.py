"""Printing for the CLI: paths as bytes, JSON, warnings, progress."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator

from ..errors import human_bytes  # noqa: F401 - the CLI formats sizes through this module

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


@contextlib.contextmanager
def byte_progress(description: str, total: int | None, enabled: bool,
                  unit: str = "files") -> Iterator:
    """A progress bar on stderr (count, bytes, rate) on a terminal, else nothing.

    Yields ``advance(nbytes)``, to be called once per file (or object) done.
    """
    if not enabled:
        yield None
        return
    # rich is imported here: it costs ~25 ms of start-up that commands
    # without a terminal never need.
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]} " + unit),
        DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=Console(file=sys.stderr), transient=True,
    )
    with progress:
        task = progress.add_task(description, total=total, count=0)
        count = 0

        def advance(nbytes: int) -> None:
            nonlocal count
            count += 1
            progress.update(task, advance=nbytes, count=count)

        yield advance
