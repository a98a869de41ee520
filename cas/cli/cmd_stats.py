from __future__ import annotations

import click

from .main import Context, pass_ctx
from .output import human_bytes, out_json, out_line


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def command(ctx: Context, as_json: bool) -> None:
    """Show object counts, logical and stored bytes, compression ratio."""
    with ctx.open_store() as store:
        s = store.stats()
    doc = {
        "objects": s.objects, "loose_objects": s.loose_objects,
        "packed_objects": s.packed_objects, "packs": s.packs,
        "compressed_objects": s.compressed_objects,
        "logical_bytes": s.logical_bytes, "stored_bytes": s.stored_bytes,
        "compression_ratio": round(s.compression_ratio, 4),
    }
    if as_json:
        out_json(doc)
        return
    out_line(f"objects:        {s.objects} ({s.loose_objects} loose, {s.packed_objects} in {s.packs} packs, "
             f"{s.compressed_objects} compressed)")
    out_line(f"logical bytes:  {s.logical_bytes} ({human_bytes(s.logical_bytes)})")
    out_line(f"stored bytes:   {s.stored_bytes} ({human_bytes(s.stored_bytes)})")
    out_line(f"stored/logical: {s.compression_ratio:.3f}")
