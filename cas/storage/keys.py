"""Key slots: the master key of an encrypted store, wrapped by passphrases.

Each slot is a file ``keys/<16 hex>.json`` holding the master key sealed
under a key that Argon2id derives from one passphrase (docs/FORMAT.md
§18.1). Any slot unlocks the store; adding or removing one rewrites no
data. A slot file is written whole (temp, fsync, rename), so a crash
leaves every old slot as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from ..durable import make_dir, open_temp, read_bounded, remove_quietly
from ..errors import KeySlotsUnusable, LastKeySlot, PasswordRequired, UnknownKeySlot, WrongPassword
from .crypto import KEY_SIZE, PLAIN, SALT_SIZE, TAG_SIZE, PlainSealer, Sealer, new_master_key

# A passphrase, or a function that asks for one (called only when needed).
PasswordSource = bytes | Callable[[], bytes | None]

KEYS_DIR = "keys"
SLOT_SUFFIX = ".json"
# Measured on a 2-core VM: 64 MiB, 3 passes, 2 lanes unlock in 0.23 s
# (128 MiB, 2 passes: 0.32 s). docs/PERFORMANCE.md "Unlocking".
DEFAULT_KDF = {"name": "argon2id", "memory_kib": 64 << 10, "iterations": 3, "lanes": 2}
# Bounds a slot's parameters must lie in: a crafted slot must not make an
# open allocate gigabytes or run for hours.
_MEMORY_KIB = (8 << 10, 1 << 20)      # 8 MiB to 1 GiB
_ITERATIONS = (1, 16)
_LANES = (1, 8)
# And memory x passes at most 4 GiB-passes: about 5 s to try here (the
# default is 192 MiB-passes, 0.23 s), so a planted slot costs an open
# seconds, never minutes; slots are tried cheapest first, at most this many.
_MAX_COST_KIB = 4 << 20
MAX_SLOTS = 64
_NONCE = 12
MAX_SLOT_BYTES = 64 << 10

# Master keys unlocked in this process, by store id: one Argon2id per store
# and process, however often it is opened.
# Keyed by store id, then by the store's real path: a store that merely
# claims another's id (a crafted copy) is not opened with the other's key.
_unlocked: dict[str, dict[str, bytes]] = {}
# The slot each of them was unlocked with ('cas key passwd' replaces it).
_opened_slots: dict[str, dict[str, str]] = {}
# Where a passphrase comes from when Store.open is given none: the CLI and
# the MLX loader set this to the CAS_PASSWORD* sources and a prompt. A
# function giving None has none to give (PasswordRequired).
_default_source: PasswordSource | None = None


def set_password_source(source: PasswordSource | None) -> None:
    global _default_source
    _default_source = source


def sealer_for(store_path: str, store_id: str, encrypted: bool,
               password: PasswordSource | None) -> Sealer | PlainSealer:
    """The sealer of a store being opened: PLAIN, or its unlocked keys."""
    if not encrypted:
        return PLAIN
    master = _cached(_unlocked, store_id, store_path)
    if master is None:
        # The slots first: a store nothing can unlock says so before anyone
        # is asked for a passphrase.
        slots, bad = read_slots(store_path)
        if not slots:
            raise KeySlotsUnusable(store_path, bad)
        source = password if password is not None else _default_source
        given = source() if callable(source) else source
        if given is None:
            raise PasswordRequired(store_path)
        master = _unlock_slots(store_path, store_id, slots, given)
    return Sealer(master)


def _where(store_path: str) -> str:
    return os.path.realpath(store_path)


def _cached(table: dict, store_id: str, store_path: str | None):
    """A store's entry in a per-process table; without a path, the one entry
    of that store id, if there is exactly one."""
    entries = table.get(store_id, {})
    if store_path is not None:
        return entries.get(_where(store_path))
    return next(iter(entries.values())) if len(entries) == 1 else None


def opened_slot(store_id: str, store_path: str | None = None) -> str | None:
    """The id of the slot that unlocked the store in this process."""
    return _cached(_opened_slots, store_id, store_path)


@dataclass(frozen=True)
class KeySlot:
    slot_id: str
    created: str
    user: str
    host: str
    kdf: dict
    salt: bytes
    nonce: bytes
    wrapped: bytes

    def to_json(self) -> bytes:
        doc = {"id": self.slot_id, "created": self.created, "user": self.user, "host": self.host,
               "kdf": self.kdf, "salt": self.salt.hex(), "nonce": self.nonce.hex(),
               "wrapped": self.wrapped.hex()}
        return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()


def kek(password: bytes, salt: bytes, kdf: dict) -> bytes:
    """The key a passphrase gives under a slot's parameters."""
    return Argon2id(salt=salt, length=KEY_SIZE, iterations=kdf["iterations"], lanes=kdf["lanes"],
                    memory_cost=kdf["memory_kib"]).derive(password)


def _slot_context(store_id: str, slot_id: str) -> bytes:
    return f"cas key slot\0{store_id}\0{slot_id}".encode()


def make_slot(store_id: str, master: bytes, password: bytes, kdf: dict | None = None) -> KeySlot:
    kdf = dict(kdf or DEFAULT_KDF)
    slot_id = secrets.token_hex(8)
    salt, nonce = os.urandom(SALT_SIZE), os.urandom(_NONCE)
    wrapped = AESGCM(kek(password, salt, kdf)).encrypt(nonce, master, _slot_context(store_id, slot_id))
    return KeySlot(slot_id, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), _user(), os.uname().nodename,
                   kdf, salt, nonce, wrapped)


def _user() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())


def keys_dir(store_path: str) -> str:
    return os.path.join(store_path, KEYS_DIR)


def _open_keys_dir(store_path: str) -> int:
    """keys/ opened as itself: a link there (a crafted store) is refused, never
    followed to read slots from, or write them to, somewhere else."""
    return os.open(keys_dir(store_path), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def write_slot(store_path: str, slot: KeySlot, modes_dir: int, modes_file: int) -> None:
    """Write a slot whole: temp file, fsync, rename into keys/, fsync keys/."""
    make_dir(keys_dir(store_path), modes_dir)
    directory_fd = _open_keys_dir(store_path)
    try:
        temp, fd = open_temp(os.path.join(store_path, "tmp"), "keyslot", modes_file)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(slot.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.rename(temp, slot.slot_id + SLOT_SUFFIX, dst_dir_fd=directory_fd)
        except BaseException:
            remove_quietly(temp)
            raise
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def create_master(store_id: str, password: bytes) -> tuple[bytes, KeySlot]:
    master = new_master_key()
    return master, make_slot(store_id, master, password)


def read_slots(store_path: str) -> tuple[list[KeySlot], list[str]]:
    """The readable slots, and a reason for each slot file that is not."""
    slots, damaged = slot_files(store_path)
    return slots, [f"{slot_id}{SLOT_SUFFIX}: {why}" if slot_id else why for slot_id, why in damaged]


def slot_files(store_path: str) -> tuple[list[KeySlot], list[tuple[str, str]]]:
    """The readable slots, and (slot id, reason) for each slot file that is
    not (the id empty when keys/ itself cannot be listed)."""
    try:
        directory_fd = _open_keys_dir(store_path)
    except OSError as e:
        # O_DIRECTORY|O_NOFOLLOW on a link fails with ENOTDIR (or ELOOP).
        link = e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(keys_dir(store_path))
        why = "is a symbolic link; not followed" if link else e.strerror
        return [], [("", f"{keys_dir(store_path)}: {why}")]
    try:
        return _read_slot_files(directory_fd)
    finally:
        os.close(directory_fd)


def _read_slot_files(directory_fd: int) -> tuple[list[KeySlot], list[tuple[str, str]]]:
    slots: list[KeySlot] = []
    damaged: list[tuple[str, str]] = []
    for name in sorted(os.listdir(directory_fd)):
        if not name.endswith(SLOT_SUFFIX) or name.startswith("."):
            continue
        slot_id = name[: -len(SLOT_SUFFIX)]
        if len(slots) >= MAX_SLOTS:
            damaged.append((slot_id, f"more than {MAX_SLOTS} key slots; not read"))
            continue
        try:
            slots.append(_parse_slot(read_bounded(name, MAX_SLOT_BYTES, dir_fd=directory_fd), slot_id))
        except OSError as e:
            damaged.append((slot_id, e.strerror or str(e)))
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            damaged.append((slot_id, f"not a key slot ({type(e).__name__}: {e})"))
    return slots, damaged


def _parse_slot(data: bytes, slot_id: str) -> KeySlot:
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("id") != slot_id:
        raise ValueError("its id is not its file name")
    kdf = doc["kdf"]
    if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
        raise ValueError("not an argon2id slot")
    for key, (low, high) in (("memory_kib", _MEMORY_KIB), ("iterations", _ITERATIONS), ("lanes", _LANES)):
        if type(kdf.get(key)) is not int or not low <= kdf[key] <= high:
            raise ValueError(f"kdf {key} out of range")
    if kdf["memory_kib"] * kdf["iterations"] > _MAX_COST_KIB:
        raise ValueError("kdf memory x passes out of range")
    salt, nonce, wrapped = (bytes.fromhex(doc[k]) for k in ("salt", "nonce", "wrapped"))
    if len(salt) != SALT_SIZE or len(nonce) != _NONCE or len(wrapped) != KEY_SIZE + TAG_SIZE:
        raise ValueError("wrong field sizes")
    return KeySlot(slot_id, str(doc.get("created", "")), str(doc.get("user", "")),
                   str(doc.get("host", "")), {k: kdf[k] for k in DEFAULT_KDF}, salt, nonce, wrapped)


def unwrap(slot: KeySlot, store_id: str, password: bytes) -> bytes | None:
    try:
        return AESGCM(kek(password, slot.salt, slot.kdf)).decrypt(
            slot.nonce, slot.wrapped, _slot_context(store_id, slot.slot_id))
    except InvalidTag:
        return None


def unlock(store_path: str, store_id: str, password: bytes) -> tuple[bytes, str]:
    """The master key and the id of the slot the passphrase opened."""
    slots, bad = read_slots(store_path)
    if not slots:
        raise KeySlotsUnusable(store_path, bad)
    master = _unlock_slots(store_path, store_id, slots, password)
    return master, _opened_slots[store_id][_where(store_path)]


def _unlock_slots(store_path: str, store_id: str, slots: list[KeySlot], password: bytes) -> bytes:
    # Cheapest first: a slot planted with dear parameters is tried last.
    for slot in sorted(slots, key=lambda s: (s.kdf["memory_kib"] * s.kdf["iterations"], s.slot_id)):
        master = unwrap(slot, store_id, password)
        if master is not None:
            remember(store_id, master, store_path)
            _opened_slots.setdefault(store_id, {})[_where(store_path)] = slot.slot_id
            return master
    raise WrongPassword(store_path)


def cached_master(store_id: str, store_path: str | None = None) -> bytes | None:
    return _cached(_unlocked, store_id, store_path)


def remember(store_id: str, master: bytes, store_path: str) -> None:
    _unlocked.setdefault(store_id, {})[_where(store_path)] = master


@contextlib.contextmanager
def keys_locked(store_path: str) -> Iterator[int]:
    """keys/ held exclusively (flock on the directory), as its descriptor: two
    removals at once must not each see the other's slot left and remove the
    last two."""
    directory_fd = _open_keys_dir(store_path)
    try:
        fcntl.flock(directory_fd, fcntl.LOCK_EX)
        yield directory_fd
    finally:
        os.close(directory_fd)


def remove_slot(store_path: str, slot_id: str) -> None:
    """Remove a slot (a damaged one too), refusing the last that opens."""
    with keys_locked(store_path) as directory_fd:
        slots, damaged = _read_slot_files(directory_fd)
        if slot_id not in {s.slot_id for s in slots} | {d for d, _ in damaged}:
            raise UnknownKeySlot(store_path, slot_id, [s.slot_id for s in slots])
        if [s.slot_id for s in slots] == [slot_id]:
            raise LastKeySlot(store_path, slot_id)
        os.unlink(slot_id + SLOT_SUFFIX, dir_fd=directory_fd)
        os.fsync(directory_fd)
