from __future__ import annotations

import os

import click

from ..model.refs import DEFAULT_BRANCH, Refs
from ..storage.config import StoreConfig
from ..storage.store import STORE_DIR, Store
from .main import Context, pass_ctx
from .output import info, out_json


@click.command("init")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=str))
@click.option("--shared", is_flag=True,
              help="Share the store with its directory's group (directories 2770, files 0660).")
@click.option("--json", "as_json", is_flag=True, help="Print the new store's details as JSON.")
@pass_ctx
def command(ctx: Context, directory: str | None, shared: bool, as_json: bool) -> None:
    """Create a store.

    By default the store is DIRECTORY/.cas (DIRECTORY defaults to the
    current one), like git. With --store PATH (or CAS_STORE) the store is
    created at PATH, for example on an external disk.

    A store is private: only its owner can read it (directories 0700, files
    0600), whatever the umask. With --shared, members of the group of the
    store's directory can use it too, as with git's core.sharedRepository=group.
    """
    path = ctx.store_path or os.path.join(directory or ".", STORE_DIR)
    with Store.init(path, StoreConfig(shared=shared)) as store:
        Refs(store).set_head_branch(DEFAULT_BRANCH)
        if as_json:
            out_json({"store": store.path, "store_id": store.config.store_id,
                      "version": store.config.version})
        else:
            info(f"initialized empty cas store in {store.path}", ctx.quiet)
