from __future__ import annotations

import click

from ..errors import TagExists
from ..model.refs import HEADS, TAGS, check_new_ref_name, check_ref_name
from ..objectid import ObjectId
from .complete import complete_branch, complete_ref, complete_tag
from .main import Context, json_option, pass_ctx
from .output import info, out_json, out_line, shown


def _report(ctx: Context, as_json: bool, message: str, doc: dict) -> None:
    """What a ref command did: one line (a summary, so -q drops it), or JSON."""
    if as_json:
        out_json(doc)
    else:
        info(message, ctx.quiet)


def _hex(oid: ObjectId | None) -> str | None:
    return oid.hex if oid is not None else None


def _delete(history, ref: str) -> ObjectId:
    """Remove a ref and return where it was (read under the same lock)."""
    with history.refs.locked():
        was = history.refs.get(ref)
        history.refs.delete(ref)  # says the ref does not exist when was is None
    return was


@click.command("tag")
@click.argument("name", required=False, shell_complete=complete_tag)
@click.argument("spec", metavar="SNAP", required=False, default="HEAD", shell_complete=complete_ref)
@click.option("-d", "--delete", is_flag=True, help="Delete the tag.")
@click.option("-f", "--force", is_flag=True, help="Move the tag if it already names another snapshot.")
@json_option("Print JSON (the tags, or what was done).")
@pass_ctx
def tag(ctx: Context, name: str | None, spec: str, delete: bool, force: bool,
        as_json: bool) -> None:
    """Name a snapshot (default HEAD); with no NAME, list tags.

    A tag names one snapshot for good: an existing tag is moved only with -f.

    \b
    Examples:
      cas tag before-upgrade
    """
    with ctx.opened() as history:
        if name is None:
            _list_tags(history, as_json)
            return
        check_ref_name(name)
        if delete:
            deleted = _delete(history, TAGS + name)
            _report(ctx, as_json, f"deleted tag {name} (was {deleted.short})",
                    {"tag": name, "action": "deleted", "id": None, "was": deleted.hex})
            return
        oid = history.resolve(spec).stored_id
        with history.refs.locked():
            was = history.refs.get(TAGS + name)
            if was is None:
                check_new_ref_name(name)
            elif was != oid and not force:
                raise TagExists(name, was.short)
            if was != oid:
                history.refs.write_locked(TAGS + name, oid)
        action, message = _tag_action(name, oid, was)
        _report(ctx, as_json, message, {"tag": name, "action": action, "id": oid.hex,
                                        "was": _hex(was)})


def _tag_action(name: str, oid: ObjectId, was: ObjectId | None) -> tuple[str, str]:
    if was is None:
        return "created", f"tagged {oid.short} as {name}"
    if was == oid:
        return "unchanged", f"tag {name} already at {oid.short}"
    return "moved", f"moved tag {name} to {oid.short} (was {was.short})"


def _list_tags(history, as_json: bool) -> None:
    tags = history.refs.tags()
    if as_json:
        out_json([{"tag": t, "id": oid.hex} for t, oid in tags.items()])
        return
    for t, oid in tags.items():
        out_line(f"{oid.short}  {shown(t)}")


@click.command("branch")
@click.argument("name", required=False, shell_complete=complete_branch)
@click.argument("spec", metavar="SNAP", required=False, shell_complete=complete_ref)
@click.option("-d", "--delete", is_flag=True, help="Delete the branch (its snapshots stay until forgotten).")
@click.option("--switch", is_flag=True, help="Make NAME the HEAD branch.")
@json_option("Print JSON (the branches, or what was done).")
@pass_ctx
def branch(ctx: Context, name: str | None, spec: str | None, delete: bool, switch: bool,
           as_json: bool) -> None:
    """List branches; with NAME, create it at SNAP (default HEAD), or --switch to it.

    \b
    Examples:
      cas branch experiment HEAD~2 --switch
    """
    with ctx.opened() as history:
        if name is None:
            _list_branches(history, as_json)
            return
        check_ref_name(name)
        if delete:
            was = _delete(history, HEADS + name)
            _report(ctx, as_json, f"deleted branch {name} (was {was.short})",
                    {"branch": name, "action": "deleted", "id": None, "was": was.hex})
            return
        action, oid, was = _place_branch(history, name, spec, switch)
        message = {"created": f"branch {name} at {_short(oid)}",
                   "moved": f"moved branch {name} to {_short(oid)} (was {_short(was)})",
                   "unchanged": f"branch {name} at {_short(oid)}"}[action]
        doc = {"branch": name, "action": action, "id": _hex(oid), "was": _hex(was)}
        if switch:
            switched = _switch(history, name, oid)
            message = switched if action == "unchanged" else f"{message}; {switched}"
            doc["head"] = True
        _report(ctx, as_json, message, doc)


def _short(oid: ObjectId | None) -> str:
    return oid.short if oid is not None else "(no snapshots yet)"


def _place_branch(history, name: str, spec: str | None, switch: bool):
    """(action, where the branch is now, where it was) after creating or
    moving it as asked; ``--switch`` alone to a new name leaves it unborn, its
    first snapshot starts it."""
    with history.refs.locked():
        was = history.refs.get(HEADS + name)
        if was is None:
            check_new_ref_name(name)
        if spec is None and (was is not None or switch):
            return "unchanged", was, was
        oid = history.resolve(spec or "HEAD").oid
        if oid != was:
            history.refs.write_locked(HEADS + name, oid)
    return ("created" if was is None else "moved" if oid != was else "unchanged"), oid, was


def _switch(history, name: str, oid: ObjectId | None) -> str:
    if history.refs.head_branch() == name:
        return f"already on branch {name}"
    history.refs.set_head_branch(name)
    return f"switched to branch {name}" + ("" if oid is not None else " (no snapshots yet)")


def _list_branches(history, as_json: bool) -> None:
    head = history.refs.head_branch()
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


commands = [tag, branch]
