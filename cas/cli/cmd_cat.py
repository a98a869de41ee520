from __future__ import annotations

import os
import sys

import click

from ..durable import atomic_output
from ..errors import SourceError
from .main import Context, pass_ctx


@click.command("cat")
@click.argument("object_ref", metavar="ID")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="Write to FILE (atomically: only a verified object lands there).")
@pass_ctx
def command(ctx: Context, object_ref: str, output: str | None) -> None:
    """Stream an object's content to stdout or a file.

    ID is a full id or a unique prefix of at least 6 hex digits. The content
    is checked against its id as it streams: a damaged object ends with an
    error (exit 1), and with -o the file is not written at all.
    """
    with ctx.open_store() as store:
        oid = store.resolve(object_ref)
        if output is None:
            out = sys.stdout.buffer
            for block in store.iter_content(oid):
                out.write(block)
            out.flush()
            return
        if os.path.isdir(output):
            raise SourceError(output, "is a directory; give a file name to -o")
        try:
            with atomic_output(output, durable=False) as f:
                for block in store.iter_content(oid):
                    f.write(block)
        except OSError as e:
            raise SourceError(output, e.strerror or str(e)) from None
