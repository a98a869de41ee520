"""Which commands the audit trail records, and what it records of them.

Every command that opens a store is recorded once it ends, with its
outcome, into each store it opened (no second open), unless it only lists
(``LISTING``): a new command is recorded without being named here. What a
record names comes from the command's parameters (``REF_PARAMS``,
``PATH_PARAMS``), the snapshots its histories created and removed, and
whatever the command adds with ``AuditNotes.note``. A store that cannot be
written says once that reads are not being logged, and the command's own
work goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from ..errors import CasError
from ..storage.audit import AuditLog, new_record
from .output import warn

if TYPE_CHECKING:
    from ..model.history import History
    from ..storage.store import Store

# Commands that only list or check, never returning content nor changing
# the store: not recorded. Every other command that opens a store is.
LISTING = frozenset({
    "audit log", "audit verify", "du", "help", "init", "key list", "log", "ls", "model log",
    "model ls", "model show", "model verify", "objects", "policy show", "report", "show",
    "stats", "status", "stores add", "stores ls", "stores rm", "verify",
    # The watcher records each snapshot and maintenance run it makes itself.
    "watch",
})
# Listing commands that read content with one of these flags (a patch shows it).
CONTENT_FLAGS = {"diff": ("patch", "with_stat")}
# Recorded only when they change a ref: with no NAME they list.
REF_COMMANDS = frozenset({"tag", "branch"})
REF_PARAMS = ("spec", "specs", "object_ref", "name", "branch", "refs", "slot_id", "key_id")
PATH_PARAMS = ("paths", "args", "target", "output", "src", "path", "source", "dest",
               "from_path", "to_path")


class AuditNotes:
    """What a command did that its record names, gathered as it runs."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.logs: dict[str, AuditLog] = {}    # by store path, in the order opened
        self.command: list[str] = []
        self.params: dict = {}
        self.histories: list[History] = []
        self.refs: list[str] = []
        self.paths: list[str] = []
        self.created: list[str] = []
        self.removed: list[str] = []

    def opened(self, store: Store) -> None:
        self.logs.setdefault(store.path, AuditLog.of(store))
        current = click.get_current_context(silent=True)
        if current is not None:
            self.command = current.command_path.split()[1:]
            self.params = dict(current.params)

    def note(self, *, refs: Iterable[str] = (), paths: Iterable[str] = (),
             created: Iterable[str] = (), removed: Iterable[str] = ()) -> None:
        """What a command knows it touched beyond its parameters and
        histories: a purge's paths, a new key's id, snapshot ids (hex)."""
        self.refs.extend(refs)
        self.paths.extend(paths)
        self.created.extend(created)
        self.removed.extend(removed)

    def recorded(self) -> bool:
        name = " ".join(self.command)
        if name in REF_COMMANDS:
            return self.params.get("name") is not None
        if name in LISTING:
            return False
        flags = CONTENT_FLAGS.get(name)
        return flags is None or any(self.params.get(f) for f in flags)

    def created_removed(self) -> tuple[list[str], list[str]]:
        created = [oid.hex for h in self.histories for oid in h.snapshots_created]
        removed = [oid.hex for h in self.histories for oid in h.snapshots_removed]
        return _unique(created + self.created), _unique(removed + self.removed)


def _unique(words: list[str]) -> list[str]:
    return list(dict.fromkeys(words))


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
    if notes is None or not notes.logs or not notes.recorded():
        return
    created, removed = notes.created_removed()
    record = new_record(["cas", *notes.argv],
                        refs=_unique(_values(notes.params, REF_PARAMS) + notes.refs),
                        paths=_unique(_values(notes.params, PATH_PARAMS) + notes.paths),
                        created=created, removed=removed, exit_code=exit_code, message=message)
    for root, log in notes.logs.items():
        try:
            log.append(record)
        except (OSError, CasError) as e:
            if exit_code != 0:
                continue  # the command's own error line says why: errors stay one line
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            warn(f"the audit log of {root} cannot be written ({why}): "
                 f"reads are not being logged")
