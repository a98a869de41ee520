"""Which commands the audit trail records, and what it records of them.

Commands that read content or change the store are recorded once they end,
with their outcome, into the store they opened (no second open); commands
that only list are not. A store that cannot be written says once that reads
are not being logged, and the command's own work goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..errors import CasError
from ..storage.audit import AuditLog, new_record
from .output import warn

if TYPE_CHECKING:
    from ..model.history import History
    from ..storage.store import Store

# Recorded whatever their arguments: each reads content or changes the store.
RECORDED = frozenset({
    "add", "cat", "restore", "checkout", "snapshot", "forget", "gc", "repair", "maintain",
    "model export", "model path", "model link", "model import", "model rm",
    "index rebuild", "policy set", "policy clear",
})
# Recorded only when they change a ref: with no NAME they list.
REF_COMMANDS = frozenset({"tag", "branch"})
REF_PARAMS = ("spec", "specs", "object_ref", "name", "branch")
PATH_PARAMS = ("paths", "args", "target", "output", "src", "path")


class AuditNotes:
    """What a command did that its record names, gathered as it runs."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.store_root: str | None = None
        self.file_mode, self.dir_mode = 0o600, 0o700
        self.command: list[str] = []
        self.params: dict = {}
        self.histories: list[History] = []

    def opened(self, store: Store) -> None:
        self.store_root = store.path
        modes = store.layout.modes
        self.file_mode, self.dir_mode = modes.file, modes.directory
        current = click.get_current_context(silent=True)
        if current is not None:
            self.command = current.command_path.split()[1:]
            self.params = dict(current.params)

    def recorded(self) -> bool:
        name = " ".join(self.command)
        if name in RECORDED:
            return True
        return name in REF_COMMANDS and self.params.get("name") is not None

    def created_removed(self) -> tuple[list[str], list[str]]:
        created = [oid.hex for h in self.histories for oid in h.snapshots_created]
        removed = [oid.hex for h in self.histories for oid in h.snapshots_removed]
        return created, removed


def _values(params: dict, names: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for name in names:
        value = params.get(name)
        if isinstance(value, (list, tuple)):
            found.extend(str(v) for v in value)
        elif value is not None and not isinstance(value, bool):
            found.append(str(value))
    return found


def record_command(notes: AuditNotes | None, exit_code: int, message: str | None) -> None:
    if notes is None or notes.store_root is None or not notes.recorded():
        return
    created, removed = notes.created_removed()
    record = new_record(["cas", *notes.argv], refs=_values(notes.params, REF_PARAMS),
                        paths=_values(notes.params, PATH_PARAMS), created=created,
                        removed=removed, exit_code=exit_code, message=message)
    try:
        AuditLog(notes.store_root, notes.file_mode, notes.dir_mode).append(record)
    except (OSError, CasError) as e:
        if exit_code != 0:
            return  # the command's own error line says why: errors stay one line
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        warn(f"the audit log of {notes.store_root} cannot be written ({why}): "
             f"reads are not being logged")
