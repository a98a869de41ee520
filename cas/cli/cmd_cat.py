from __future__ import annotations

import os
import sys

import click

from ..durable import atomic_output
from ..errors import SourceError
from ..model.tree import DIR, FILE
from ..ops.restore import refuse_store_target
from .complete import complete_ref_or_path
from .history_args import resolve_snapshot, tree_path
from .main import Context, pass_ctx


def _resolve(history, ref: str):
    """(object id, the mode to write it with) for an object id or prefix, or
    SNAP:PATH for a file in a snapshot. A bare object has no recorded mode:
    its content may be anyone's file, so it is written private (0600)."""
    if ":" not in ref:
        return history.store.resolve(ref), 0o600
    spec, _, path = ref.partition(":")
    snap = resolve_snapshot(history, spec or "HEAD")
    entry = history.entry_at(snap.tree, tree_path(path), snap.stored_id.short)
    if entry is None or entry.kind == DIR:
        raise SourceError(ref, f"is a directory in snapshot {snap.stored_id.short}, not a file "
                               f"(list it with 'cas ls {ref}')")
    if entry.kind != FILE:
        raise SourceError(ref, f"is a {entry.kind} in snapshot {snap.stored_id.short}, not a file "
                               f"(see 'cas ls {ref}')")
    # Permission bits only: no owner is restored, so no setuid or setgid.
    return entry.oid, entry.mode & 0o777 & ~_umask()


def _umask() -> int:
    # Read by setting it: no thread runs yet that could create a file meanwhile.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@click.command("cat")
@click.argument("object_ref", metavar="ID", shell_complete=complete_ref_or_path)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="Write to FILE (atomically: only a verified object lands there).")
@pass_ctx
def command(ctx: Context, object_ref: str, output: str | None) -> None:
    """Stream an object, or a file of a snapshot, to stdout or a file.

    ID is a full id, a unique prefix of at least 6 hex digits, or SNAP:PATH
    (a file as it was in a snapshot, e.g. HEAD~2:db/state.db). The content
    is checked against its id as it streams: a damaged object ends with an
    error (exit 1), and with -o the file is not written at all. A file of
    a snapshot written with -o gets its recorded permissions less the
    umask; an object given by id, 0600.

    \b
    Examples:
      cas cat HEAD~2:db/state.db -o state.db
    """
    with ctx.opened() as history:
        store = history.store
        oid, mode = _resolve(history, object_ref)
        if output is None:
            out = sys.stdout.buffer
            for block in store.iter_content(oid):
                out.write(block)
            out.flush()
            return
        if os.path.isdir(output):
            raise SourceError(output, "is a directory; give a file name to -o")
        # As a restore: content never lands inside a store (in an encrypted
        # one it would be plaintext among sealed files).
        refuse_store_target(history, output)
        try:
            with atomic_output(output, durable=False, mode=mode) as f:
                f.flush()
                store.write_content(oid, f.fileno())
        except OSError as e:
            raise SourceError(output, e.strerror or str(e)) from None
