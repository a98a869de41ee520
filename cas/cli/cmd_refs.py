from __future__ import annotations

import click

from ..model.refs import HEADS, TAGS, check_new_ref_name, check_ref_name
from .main import Context, pass_ctx
from .output import out_json, out_line, shown


@click.command("tag")
@click.argument("name", required=False)
@click.argument("spec", metavar="SNAP", required=False, default="HEAD")
@click.option("-d", "--delete", is_flag=True, help="Delete the tag.")
@pass_ctx
def tag(ctx: Context, name: str | None, spec: str, delete: bool) -> None:
    """Name a snapshot (default HEAD); with no NAME, list tags."""
    history = ctx.open_history()
    with history.store:
        if name is None:
            for t, oid in history.refs.tags().items():
                out_line(f"{oid.short}  {t}")
            return
        check_ref_name(name)
        if delete:
            history.refs.delete(TAGS + name)
            return
        if history.refs.get(TAGS + name) is None:
            check_new_ref_name(name)
        history.refs.set(TAGS + name, history.resolve(spec).oid)


@click.command("branch")
@click.argument("name", required=False)
@click.argument("spec", metavar="SNAP", required=False)
@click.option("-d", "--delete", is_flag=True, help="Delete the branch (its snapshots stay until forgotten).")
@click.option("--switch", is_flag=True, help="Make NAME the HEAD branch.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def branch(ctx: Context, name: str | None, spec: str | None, delete: bool, switch: bool,
           as_json: bool) -> None:
    """List branches; with NAME, create it at SNAP (default HEAD), or --switch to it."""
    history = ctx.open_history()
    with history.store:
        head = history.refs.head_branch()
        if name is None:
            rows = []
            for b, oid in history.refs.branches().items():
                snap = history.load_snapshot(oid)
                rows.append({"branch": b, "id": oid.hex, "source": snap.source, "head": b == head})
            if as_json:
                out_json(rows)
                return
            for r in rows:
                out_line(f"{'*' if r['head'] else ' '} {r['branch']:<20} {r['id'][:12]}  "
                         f"{shown(r['source'])}")
            return
        check_ref_name(name)
        if delete:
            history.refs.delete(HEADS + name)
            return
        if history.refs.get(HEADS + name) is None:
            check_new_ref_name(name)
        if spec is not None or history.refs.get(HEADS + name) is None and not switch:
            history.refs.set(HEADS + name, history.resolve(spec or "HEAD").oid)
        if switch:
            history.refs.set_head_branch(name)


commands = [tag, branch]
