from __future__ import annotations

import os

import click

from ..errors import StoreExists, StoreInsideTree, StoreNotFound
from ..model.refs import DEFAULT_BRANCH, Refs
from ..storage.config import CONFIG_FILE, ENCRYPTION, StoreConfig
from ..storage.store import STORE_DIR, Store, find_store
from . import user_config
from .cmd_key import new_passphrase
from .main import Context, json_option, pass_ctx
from .output import info, out_json, warn


@click.command("init")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=str))
@click.option("--shared", is_flag=True,
              help="Share the store with its directory's group (directories 2770, files 0660).")
@click.option("--encrypt/--no-encrypt", default=None,
              help="Encrypt the store under a passphrase (CAS_PASSWORD, CAS_PASSWORD_FILE, "
                   "CAS_PASSWORD_COMMAND, or typed twice on a terminal). Without either, "
                   "as the user's setting encrypt_new_stores says (plain if unset).")
@click.option("--nested", is_flag=True,
              help="Make the store even inside the tree of another one (whose snapshots "
                   "then take in this store's files).")
@json_option("Print the new store's details as JSON.")
@pass_ctx
def command(ctx: Context, directory: str | None, shared: bool, encrypt: bool | None, nested: bool,
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

    With --encrypt, everything the store holds is encrypted under a master
    key, itself kept in a key slot that the passphrase unlocks (more with
    'cas key add'). Without a passphrase no one can read the store, cas
    included: keep it somewhere safe. To encrypt every new store, set
    "encrypt_new_stores": true in ~/.config/cas/config.json; --no-encrypt
    then makes a plain one.

    \b
    Examples:
      cas init ~/assistant
      CAS_PASSWORD_FILE=~/.config/cas/pass cas init --encrypt --store /media/ssd/cas
    """
    if ctx.store_path is None and not nested:
        _refuse_inside_tree(os.path.abspath(directory or "."))
    path = ctx.store_path or os.path.join(directory or ".", STORE_DIR)
    if os.path.lexists(os.path.join(path, CONFIG_FILE)):
        raise StoreExists(os.path.abspath(path))   # before asking for a passphrase
    if encrypt is None:
        encrypt = user_config.encrypt_new_stores()
    password = new_passphrase("CAS_") if encrypt else None
    config = StoreConfig(shared=shared, encryption=dict(ENCRYPTION) if encrypt else None)
    with Store.init(path, config, password=password) as store:
        Refs(store).set_head_branch(DEFAULT_BRANCH)
        if as_json:
            out_json({"store": store.path, "store_id": store.config.store_id,
                      "version": store.config.version, "encrypted": encrypt})
        else:
            kind = "empty encrypted" if encrypt else "empty"
            info(f"initialized {kind} cas store in {store.path}", ctx.quiet)
    if not encrypt and (given := _passphrase_given()):
        # Set for this store, it would be ignored by every command after.
        warn(f"{given} is set, but this store is not encrypted (make an encrypted one with "
             "'cas init --encrypt')")


def _passphrase_given() -> str | None:
    """The passphrase variable set in the environment, if any."""
    return next((v for v in ("CAS_PASSWORD", "CAS_PASSWORD_FILE", "CAS_PASSWORD_COMMAND")
                 if os.environ.get(v)), None)


def _refuse_inside_tree(directory: str) -> None:
    """A store below another store's tree is taken into the outer store's
    snapshots; the outer store is found the way every command finds one."""
    try:
        outer = find_store(directory)
    except StoreNotFound:
        return
    if outer != os.path.join(directory, STORE_DIR):  # the same place: init says it exists
        raise StoreInsideTree(directory, outer)
