from __future__ import annotations

import os

import click

from ..errors import StoreInsideTree, StoreNotFound
from ..model.refs import DEFAULT_BRANCH, Refs
from ..storage.config import StoreConfig
from ..storage.store import STORE_DIR, Store, find_store
from .main import Context, json_option, pass_ctx
from .output import info, out_json


@click.command("init")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=str))
@click.option("--shared", is_flag=True,
              help="Share the store with its directory's group (directories 2770, files 0660).")
@click.option("--nested", is_flag=True,
              help="Make the store even inside the tree of another one (whose snapshots "
                   "then take in this store's files).")
@json_option("Print the new store's details as JSON.")
@pass_ctx
def command(ctx: Context, directory: str | None, shared: bool, nested: bool,
            as_json: bool) -> None:
    """Create a store.

    By default the store is DIRECTORY/.cas (DIRECTORY defaults to the
    current one), like git. With --store PATH (or CAS_STORE) the store is
    created at PATH, for example on an external disk.

    A store is private: only its owner can read it (directories 0700, files
    0600), whatever the umask. With --shared, members of the group of the
    store's directory can use it too, as with git's core.sharedRepository=group.

    Inside the tree of an existing store (a directory below one holding
    .cas/) init refuses unless --nested is given.

    \b
    Examples:
      cas init ~/assistant
    """
    if ctx.store_path is None and not nested:
        _refuse_inside_tree(os.path.abspath(directory or "."))
    path = ctx.store_path or os.path.join(directory or ".", STORE_DIR)
    with Store.init(path, StoreConfig(shared=shared)) as store:
        Refs(store).set_head_branch(DEFAULT_BRANCH)
        if as_json:
            out_json({"store": store.path, "store_id": store.config.store_id,
                      "version": store.config.version})
        else:
            info(f"initialized empty cas store in {store.path}", ctx.quiet)


def _refuse_inside_tree(directory: str) -> None:
    """A store below another store's tree is taken into the outer store's
    snapshots; the outer store is found the way every command finds one."""
    try:
        outer = find_store(directory)
    except StoreNotFound:
        return
    if outer != os.path.join(directory, STORE_DIR):  # the same place: init says it exists
        raise StoreInsideTree(directory, outer)
