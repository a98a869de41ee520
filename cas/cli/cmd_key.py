"""cas key: the passphrases that unlock an encrypted store (its key slots).

Each slot wraps the same master key under one passphrase, so adding,
removing or changing a passphrase rewrites one small file and no data.
"""

from __future__ import annotations

import sys

import click

from ..errors import NewPasswordRefused, StoreNotEncrypted
from ..passwords import environment_source, read_password_file
from ..storage import keys
from ..storage.store import Store
from .main import Context, ask_passphrase, json_option, pass_ctx
from .output import info, out_json, out_line, shown


def new_passphrase(prefix: str = "CAS_NEW_", file: str | None = None) -> bytes:
    """A passphrase for a new key slot: from ``file``, else ``{prefix}PASSWORD``,
    ``..._FILE`` or ``..._COMMAND``, else typed twice on the terminal."""
    given: bytes | None
    if file is not None:
        given = read_password_file(file, "--new-password-file")
    else:
        given = environment_source(prefix)
    if given is None:
        given = _typed_twice(prefix)
    if not given:
        raise NewPasswordRefused("an empty passphrase would protect nothing")
    return given


def _typed_twice(prefix: str) -> bytes:
    if not sys.stdin.isatty():
        raise NewPasswordRefused(f"give it in {prefix}PASSWORD, {prefix}PASSWORD_FILE or "
                                 f"{prefix}PASSWORD_COMMAND, or run on a terminal to type it")
    first = ask_passphrase("New passphrase: ")
    if first and ask_passphrase("The same again: ") != first:
        raise NewPasswordRefused("the two passphrases typed differ")
    return first


@click.group("key")
def command() -> None:
    """The passphrases of an encrypted store: list, add, remove, change.

    Each passphrase unlocks its own key slot (keys/ in the store), and any
    slot opens the store. Changing them re-encrypts nothing. A command
    opens the store with CAS_PASSWORD, CAS_PASSWORD_FILE or
    CAS_PASSWORD_COMMAND, or asks on the terminal; a new passphrase comes
    from CAS_NEW_PASSWORD (or _FILE, _COMMAND), --new-password-file or a
    prompt.

    \b
    Examples:
      cas key list
      CAS_NEW_PASSWORD_FILE=~/.config/cas/second cas key add
    """


def _open_encrypted(ctx: Context) -> Store:
    store = ctx.open_store(with_index=False)
    if not store.sealer.encrypted:
        store.close()
        raise StoreNotEncrypted(store.path)
    return store


def _master(store: Store) -> bytes:
    master = keys.cached_master(store.config.store_id, store.path)
    assert master is not None   # an encrypted store that opened was unlocked
    return master


@command.command("list")
@json_option("Print the key slots as a JSON list.")
@pass_ctx
def list_keys(ctx: Context, as_json: bool) -> None:
    """List the key slots: id, when, by whom and where each was made. '*'
    marks the one that opened the store this time; a slot that cannot be
    read is listed as damaged.

    \b
    Examples:
      cas key list --json
    """
    with _open_encrypted(ctx) as store:
        slots, damaged = keys.slot_files(store.path)
        current = keys.opened_slot(store.config.store_id, store.path)
    if as_json:
        out_json([{"id": s.slot_id, "created": s.created, "user": s.user, "host": s.host,
                   "kdf": s.kdf, "current": s.slot_id == current} for s in slots]
                 + [{"id": slot_id, "damaged": why} for slot_id, why in damaged if slot_id])
        return
    out_line(f"  {'ID':<16}  {'CREATED':<20}  USER@HOST")
    for s in slots:
        mark = "*" if s.slot_id == current else " "
        out_line(f"{mark} {s.slot_id:<16}  {shown(s.created):<20}  {shown(s.user)}@{shown(s.host)}")
    for slot_id, why in damaged:
        out_line(f"  {shown(slot_id):<16}  damaged: {shown(why)}")


@command.command("add")
@click.option("--new-password-file", "new_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Read the new passphrase from the first line of FILE.")
@json_option("Print the new key's id as JSON.")
@pass_ctx
def add(ctx: Context, new_file: str | None, as_json: bool) -> None:
    """Add a passphrase: a new key slot for the store's master key.

    \b
    Examples:
      cas key add --new-password-file ~/.config/cas/backup-pass
    """
    with _open_encrypted(ctx) as store:
        slot_id = _add_slot(ctx, store, new_passphrase(file=new_file))
    if as_json:
        out_json({"added": slot_id})
    else:
        info(f"added key {slot_id}", ctx.quiet)


def _add_slot(ctx: Context, store: Store, password: bytes) -> str:
    slot = keys.make_slot(store.config.store_id, _master(store), password)
    modes = store.layout.modes
    keys.write_slot(store.path, slot, modes.directory, modes.file)
    ctx.audit.note(refs=[slot.slot_id])    # the audit record names the new key
    return slot.slot_id


@command.command("remove")
@click.argument("slot_id", metavar="ID")
@json_option("Print the removed key's id as JSON.")
@pass_ctx
def remove(ctx: Context, slot_id: str, as_json: bool) -> None:
    """Remove a key slot: its passphrase no longer opens the store. The
    last slot that opens is never removed.

    \b
    Examples:
      cas key remove 3f9c2a81d04b5e67
    """
    with _open_encrypted(ctx) as store:
        keys.remove_slot(store.path, slot_id)
    if as_json:
        out_json({"removed": slot_id})
    else:
        info(f"removed key {slot_id}", ctx.quiet)


@command.command("passwd")
@click.option("--new-password-file", "new_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Read the new passphrase from the first line of FILE.")
@json_option("Print the added and removed keys' ids as JSON.")
@pass_ctx
def passwd(ctx: Context, new_file: str | None, as_json: bool) -> None:
    """Change the passphrase that opened the store: a slot for the new one
    is added, then the old one's removed (interrupted between the two,
    both passphrases open the store).

    \b
    Examples:
      CAS_NEW_PASSWORD_COMMAND='pass show cas/new' cas key passwd
    """
    with _open_encrypted(ctx) as store:
        old = keys.opened_slot(store.config.store_id, store.path)
        slot_id = _add_slot(ctx, store, new_passphrase(file=new_file))
        if old is not None:
            ctx.audit.note(refs=[old])
            keys.remove_slot(store.path, old)
    if as_json:
        out_json({"added": slot_id, "removed": old})
    else:
        info(f"changed the passphrase: key {old} replaced by {slot_id}", ctx.quiet)
