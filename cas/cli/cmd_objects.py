from __future__ import annotations

import click

from .main import Context, json_option, pass_ctx
from .output import out_json, out_line


@click.command("objects")
@json_option("Print a JSON array.")
@pass_ctx
def command(ctx: Context, as_json: bool) -> None:
    """List stored objects: id, size, stored size, encoding, location.

    \b
    Examples:
      cas objects --json | head
    """
    with ctx.open_store() as store:
        rows = []
        for e in store.entries():
            where = f"pack:{e.pack.hex}" if e.pack else "loose"
            # The encoding of the bytes inside, and whether they are sealed
            # (an encrypted store), so filters on "chunked" or "zstd" hold in both.
            encoding = e.encoding.inner.name.lower()
            if as_json:
                rows.append({"id": e.oid.hex, "size": e.size, "stored": e.stored_length,
                             "encoding": encoding, "sealed": e.encoding.sealed, "location": where})
            else:
                out_line(f"{e.oid.hex}  {e.size:>12}  {e.stored_length:>12}  {encoding:<7}  "
                         f"{'loose' if e.pack is None else 'packed'}{'  sealed' if e.encoding.sealed else ''}")
        if as_json:
            out_json(rows)
