"""``cas model``: import, list, show, export, link and remove models."""

from __future__ import annotations

import os
import shlex

import click

from ..errors import EXIT_PROBLEM_FOUND, CasError, ModelNotFound, counted
from ..ops.models import (
    ModelInventory,
    ModelRow,
    check_model,
    export_model,
    import_model,
    link_hf_cache,
    model_inventory,
    model_log,
    model_view,
    params_text,
    problem_text,
    remove_model,
    resolve_model,
)
from ..storage.config import StoreConfig
from ..storage.store import locate_store
from . import user_config
from .complete import complete_model, complete_store_name
from .main import Context, at_option, json_option, pass_ctx
from .output import (
    byte_progress,
    error_line,
    human_bytes,
    info,
    out_json,
    out_line,
    path_text,
    shown,
    wants_progress,
    warn,
)


@click.group("model")
def model() -> None:
    """Models kept in the store: import, list, load, export.

    \b
    Examples:
      cas model import ~/.cache/huggingface/hub/models--org--tiny-coder
    """


@model.command("import")
@click.argument("src", type=click.Path(path_type=str))
@click.option("--name", help="Model name (default: the repo or directory name).")
@click.option("--chunked", is_flag=True,
              help="Cut weights at tensors, so fine-tunes share unchanged tensors "
                   "(loads slower; views copy the files out).")
@click.option("--public", is_flag=True,
              help="A public model: in an encrypted store its weights stay unencrypted, so "
                   "MLX and 'cas model path' read them in place (this shows which public "
                   "model is stored).")
@click.option("-m", "--message", default="", help="Note recorded with this version.")
@json_option()
@pass_ctx
def import_(ctx: Context, src: str, name: str | None, chunked: bool, public: bool, message: str,
            as_json: bool) -> None:
    """Import a model directory or a Hugging Face cache repo (models--org--name).

    \b
    Examples:
      cas model import ./tiny-coder --name tiny-coder -m "fine-tune 2"
      cas model import ~/.cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B --public
    """
    with ctx.opened() as history, byte_progress("import", None, wants_progress(ctx.quiet)) as advance:
        result = import_model(history, src, name, chunked=chunked, message=message,
                              on_file=advance, public=public)
    v = result.version
    if as_json:
        out_json({"name": v.name, "version": v.number, "snapshot": v.snapshot.stored_id.hex,
                  "public": v.manifest.public, "unchanged": result.unchanged,
                  "new_objects": result.new_objects,
                  "new_bytes": result.new_bytes, "stored_bytes": result.stored_bytes})
        return
    if result.unchanged:
        out_line(f"{v.label} {v.snapshot.stored_id.short}: unchanged, nothing stored")
    else:
        out_line(f"{v.label} {v.snapshot.stored_id.short}: {counted(len(v.manifest.files), 'file')}, "
                 f"{human_bytes(v.manifest.bytes)}; {result.new_objects} new objects, "
                 f"{human_bytes(result.new_bytes)} new ({human_bytes(result.stored_bytes)} stored)")


@model.command("ls")
@json_option("Print an inventory as JSON.")
@click.option("--all-stores", is_flag=True, help="Merge every store registered with 'cas stores add'.")
@click.option("--versions", is_flag=True, help="List every version, not only the newest.")
@pass_ctx
def ls(ctx: Context, as_json: bool, all_stores: bool, versions: bool) -> None:
    """Inventory: name, version, architecture, parameters, dtype, sizes, note.

    \b
    SIZE     the model's files, as imported
    ON DISK  what the version's files take in the store (compressed; each
             stored object or chunk once)
    SHARED   of ON DISK, what another recorded snapshot reaches too: another
             version of this model, another model, or any snapshot. ON DISK
             minus SHARED is what forgetting this version alone, then
             'cas gc', would free.
    NOTE     the -m note of its import

    A model whose manifest cannot be read is left out with a warning, and with
    --all-stores a store that cannot be opened (an unplugged disk) is listed
    as offline: the rest is still listed.

    \b
    Examples:
      cas model ls --versions
    """
    if all_stores:
        stores: list[tuple[str | None, str]] = list(user_config.registered_stores().items())
        if not stores:
            raise CasError("no stores registered (add one with 'cas stores add NAME PATH')")
    else:
        stores = [(None, ctx.resolve_store_path())]
    inventory = model_inventory(stores, versions,
                                on_skip=lambda what, e: warn(f"{what}: left out of the listing: {e}"))
    if as_json:
        out_json(inventory.to_doc())
        return
    _print_table(inventory)


_NOTE_WIDTH = 40


def _print_table(inventory: ModelInventory) -> None:
    head = ["NAME", "VER", "ARCH", "PARAMS", "DTYPE", "SIZE", "ON DISK", "SHARED", "IMPORTED",
            "NOTE"]
    if inventory.merged:
        head.insert(0, "STORE")
    lines = [head]
    for r in inventory.rows:
        v, m = r.version, r.version.manifest
        q = m.quantization
        dtype = f"{q['bits']}-bit" if q else (m.dtype or "-")
        note = " ".join(v.snapshot.message.split())
        row = [v.name, str(v.number), m.architecture or "-", params_text(m.parameters), dtype,
               human_bytes(m.bytes), human_bytes(r.stored_bytes), human_bytes(r.shared_bytes),
               v.snapshot.time_iso[:16].replace("T", " "),
               note if len(note) <= _NOTE_WIDTH else note[:_NOTE_WIDTH - 1] + "…"]
        if inventory.merged:
            row.insert(0, r.store or "")
        lines.append([shown(c) for c in row])
    for o in inventory.offline:
        lines.append([o["store"], "(offline)"] + [""] * (len(head) - 2))
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    for cells in lines:
        out_line("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())


@model.command("show")
@click.argument("spec", metavar="NAME", shell_complete=complete_model)
@at_option()
@json_option("Print the model manifest.")
@pass_ctx
def show(ctx: Context, spec: str, at_ns: int | None, as_json: bool) -> None:
    """A model version: its config and a summary of its tensors.

    \b
    Examples:
      cas model show tiny-coder --at yesterday
    """
    import json
    with ctx.opened() as history:
        v = resolve_model(history, spec, at_ns)
        if as_json:
            out_json(json.loads(v.manifest.to_json()))
            return
        m = v.manifest
        out_line(f"model      {v.label}  (snapshot {v.snapshot.stored_id.short}, {v.snapshot.time_iso[:19]}Z)")
        out_line(f"note       {shown(v.snapshot.message)}")
        if m.source.get("repo"):
            out_line(f"repo       {m.source['repo']}  revision {m.source.get('revision', '-')}")
        out_line(f"arch       {m.architecture or '-'}   framework {m.framework}   type {m.kind}")
        if m.public:
            out_line("public     yes (imported with --public)")
        q = m.quantization
        out_line(f"params     {m.parameters:,} ({params_text(m.parameters)})   dtype {m.dtype or '-'}"
                 + (f"   quantized {q['bits']}-bit, group {q['group_size']}" if q else ""))
        out_line(f"bytes      {m.bytes:,} in {counted(len(m.files), 'file')}, {counted(len(m.tensors), 'tensor')}")
        for f in m.files:
            out_line(f"  {f.id.short}  {human_bytes(f.size):>10}  {f.path}")
        _print_config(m.config)
        by_dtype: dict[str, list[int]] = {}
        for t in m.tensors:
            s = by_dtype.setdefault(t.dtype, [0, 0, 0])
            s[0] += 1
            s[1] += t.numel
            s[2] += t.nbytes
        if by_dtype:
            out_line("tensors")
            for dtype, (count, numel, nbytes) in sorted(by_dtype.items()):
                out_line(f"  {dtype:<5} {count:>5} tensors  {numel:>15,} elements  {human_bytes(nbytes):>10}")
            largest = sorted(m.tensors, key=lambda t: -t.nbytes)[:5]
            out_line("largest")
            for t in largest:
                out_line(f"  {t.name}  {t.dtype} {list(t.shape)}  {human_bytes(t.nbytes)}")


def _print_config(config: dict | None) -> None:
    """The config's short values (long lists and nested objects left out)."""
    if not config:
        return
    out_line("config")
    for key in sorted(config):
        value = config[key]
        if not isinstance(value, (dict, list)) or len(str(value)) < 60:
            out_line(f"  {key}: {value}")


@model.command("log")
@click.argument("name", shell_complete=complete_model)
@json_option("Print the versions as JSON.")
@pass_ctx
def log(ctx: Context, name: str, as_json: bool) -> None:
    """The versions of a model, newest first: number, snapshot id, time,
    size, what it takes on disk, and the note of its import.

    \b
    Examples:
      cas model log tiny-coder
    """
    with ctx.opened() as history:
        rows = model_log(history, name, on_skip=lambda what, e: warn(f"{what}: left out: {e}"))
    if as_json:
        out_json([_log_doc(r) for r in rows])
        return
    for r in rows:
        v = r.version
        out_line(f"{v.label:<{len(name) + 4}} {v.snapshot.stored_id.short}  "
                 f"{v.snapshot.time_iso[:16].replace('T', ' ')}  {human_bytes(v.manifest.bytes):>9}"
                 f"  {human_bytes(r.stored_bytes):>9} on disk  {shown(v.snapshot.message)}")


def _log_doc(r: ModelRow) -> dict:
    v = r.version
    return {"name": v.name, "version": v.number, "snapshot": v.snapshot.stored_id.hex,
            "time": v.snapshot.time_iso[:19] + "Z", "note": v.snapshot.message,
            "size_bytes": v.manifest.bytes, "stored_bytes": r.stored_bytes,
            "shared_bytes": r.shared_bytes}


@model.command("verify")
@click.argument("spec", metavar="NAME", shell_complete=complete_model)
@at_option()
@json_option("Print the verdict as JSON.")
@pass_ctx
def verify(ctx: Context, spec: str, at_ns: int | None, as_json: bool) -> int:
    """Read a model version back: every file against its id, and every
    tensor of a damaged file against the BLAKE3 recorded at import.

    \b
    Examples:
      cas model verify tiny-coder
    """
    with ctx.opened() as history:
        v = resolve_model(history, spec, at_ns)
        total = sum(f.size for f in v.manifest.files)
        with byte_progress("verify", total, wants_progress(ctx.quiet)) as advance:
            report = check_model(history, v, on_file=advance)
    if as_json:
        out_json(report.to_doc(v.label))
        return 0 if not report.problems else EXIT_PROBLEM_FOUND
    for problem in report.problems:
        error_line(f"{v.label}: {problem_text(problem)}")
    verdict = "ok" if not report.problems else f"{counted(len(report.problems), 'problem')} found"
    info(f"{v.label}: {counted(report.files, 'file')}, {human_bytes(report.bytes)} read and rehashed: {verdict}",
         ctx.quiet and not report.problems)
    if report.problems:
        _repair_hint(v)
    return 0 if not report.problems else EXIT_PROBLEM_FOUND


def _repair_hint(v) -> None:
    """Both ways to repair: a write of content recorded as damaged (this
    verify recorded it) replaces the damaged copy, and repair looks for it."""
    source = v.manifest.source.get("path")
    where = shlex.quote(source) if source else "DIR"
    info(f"to repair {v.label}: cas model import {where} --name {shlex.quote(v.name)}, "
         f"or cas repair --from {where}", False)


@model.command("export")
@click.argument("spec", metavar="NAME", shell_complete=complete_model)
@click.argument("target", type=click.Path(path_type=str))
@at_option()
@json_option("Print what was written as JSON.")
@pass_ctx
def export(ctx: Context, spec: str, target: str, at_ns: int | None, as_json: bool) -> int:
    """Write a model version out as a normal model directory.

    \b
    Examples:
      cas model export tiny-coder@2 /tmp/tiny-coder
    """
    if os.path.lexists(target) and (not os.path.isdir(target) or os.path.islink(target)
                                    or os.listdir(target)):
        raise CasError(f"{target} exists and is not an empty directory; choose a new one")
    with ctx.opened() as history:
        v = resolve_model(history, spec, at_ns)
        with byte_progress("export", v.manifest.bytes, wants_progress(ctx.quiet),
                           files=len(v.manifest.files)) as advance:
            report = export_model(history, v, target, on_file=advance)
    code = EXIT_PROBLEM_FOUND if report.problems else 0
    if as_json:
        out_json({"model": v.label, "target": target, **report.figures(),
                  "problems": [{"path": path_text(p.path), "message": p.message}
                               for p in report.problems]})
        return code
    for problem in report.problems:
        error_line(f"{path_text(problem.path)}: {problem.message}")
    if report.problems:
        info(f"exported {v.label} to {target} with {counted(len(report.problems), 'problem')}", False)
        return code
    info(f"exported {v.label}: {counted(report.files, 'file')}, {human_bytes(report.bytes)} to {target}",
         ctx.quiet)
    return code


@model.command("path")
@click.argument("spec", metavar="NAME", shell_complete=complete_model)
@at_option()
@json_option("Print the path and its make-up as JSON.")
@pass_ctx
def path(ctx: Context, spec: str, at_ns: int | None, as_json: bool) -> None:
    """Print a read-only directory of the model that mlx_lm.load accepts.

    \b
    Examples:
      python -c "import mlx_lm; mlx_lm.load('$(cas model path tiny-coder)')"
    """
    with ctx.opened() as history:
        v = resolve_model(history, spec, at_ns)
        view = model_view(history, v)
    if as_json:
        out_json({"model": v.label, "path": view.path, "linked_bytes": view.linked_bytes,
                  "copied_bytes": view.copied_bytes})
        return
    out_line(view.path)
    info(f"{human_bytes(view.linked_bytes)} linked into the store, "
         f"{human_bytes(view.copied_bytes)} copied out", ctx.quiet)


@model.command("link")
@click.argument("spec", metavar="NAME", shell_complete=complete_model)
@click.option("--hf-cache", "hub", metavar="DIR", is_flag=False, flag_value="", default=None,
              help="Hugging Face hub cache (default: $HF_HUB_CACHE, $HF_HOME/hub or "
                   "~/.cache/huggingface/hub).")
@at_option()
@json_option("Print the link and its make-up as JSON.")
@pass_ctx
def link(ctx: Context, spec: str, hub: str | None, at_ns: int | None, as_json: bool) -> None:
    """Make a model visible to tools that look in the Hugging Face cache.

    \b
    Examples:
      cas model link tiny-coder --hf-cache
    """
    if hub is None:
        raise click.UsageError("say where to link: --hf-cache [DIR]")
    hub = hub or os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub")
    with ctx.opened() as history:
        v = resolve_model(history, spec, at_ns)
        snap_dir = link_hf_cache(history, v, hub)
        view = model_view(history, v)
    if as_json:
        out_json({"model": v.label, "path": snap_dir, "linked_bytes": view.linked_bytes,
                  "copied_bytes": view.copied_bytes})
        return
    out_line(snap_dir)
    info(f"{human_bytes(view.linked_bytes)} linked into the store, "
         f"{human_bytes(view.copied_bytes)} copied out", ctx.quiet)


@model.command("rm")
@click.argument("name", shell_complete=complete_model)
@json_option("Print what was removed as JSON.")
@pass_ctx
def rm(ctx: Context, name: str, as_json: bool) -> None:
    """Remove a model and all its versions ('cas gc' then frees what only it used).

    \b
    Examples:
      cas model rm tiny-coder && cas gc
    """
    with ctx.opened() as history:
        if "@" in name:
            raise ModelNotFound(name, "remove a whole model by its name; versions go with it")
        count = remove_model(history, name, on_link_left=lambda path, why: warn(
            f"{path}: a link 'cas model link' made {why}; remove it by hand"))
    if as_json:
        out_json({"model": name, "removed_versions": count})
        return
    info(f"removed {name} ({counted(count, 'version')}); run 'cas gc' to free space", ctx.quiet)


@click.group("stores")
def stores() -> None:
    """Stores registered for 'cas model ls --all-stores'.

    \b
    Examples:
      cas stores add ssd /Volumes/SSD/cas
    """


@stores.command("add")
@click.argument("name")
@click.argument("store_path", metavar="PATH", type=click.Path(path_type=str))
@json_option("Print what was registered as JSON.")
@pass_ctx
def stores_add(ctx: Context, name: str, store_path: str, as_json: bool) -> None:
    """Register a store (e.g. one on an external SSD) under NAME: PATH is the
    store directory itself, or a directory holding one as .cas/.

    \b
    Examples:
      cas stores add ssd /Volumes/SSD/cas
    """
    found = locate_store(store_path)
    StoreConfig.load(found)  # a config this cas can read
    user_config.register_store(name, found)
    if as_json:
        out_json({"name": name, "path": found, "action": "registered"})
        return
    info(f"registered store {name} at {found}", ctx.quiet)


@stores.command("rm")
@click.argument("name", shell_complete=complete_store_name)
@json_option("Print what was removed as JSON.")
@pass_ctx
def stores_rm(ctx: Context, name: str, as_json: bool) -> None:
    """Forget a registered store (its data is untouched).

    \b
    Examples:
      cas stores rm ssd
    """
    path = user_config.registered_stores().get(name)
    user_config.unregister_store(name)
    if as_json:
        out_json({"name": name, "path": path, "action": "removed"})
        return
    info(f"removed store {name} ({path}) from the list; its data is untouched", ctx.quiet)


@stores.command("ls")
@json_option("Print the stores as JSON.")
def stores_ls(as_json: bool) -> None:
    """List registered stores.

    \b
    Examples:
      cas stores ls --json
    """
    stores_by_name = user_config.registered_stores()
    if as_json:
        out_json([{"name": name, "path": path} for name, path in stores_by_name.items()])
        return
    for name, path in stores_by_name.items():
        out_line(f"{name}  {path}")


commands = [model, stores]
