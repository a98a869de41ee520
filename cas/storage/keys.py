"""Key slots: the master key of an encrypted store, wrapped by passphrases.

Each slot is a file ``keys/<16 hex>.json`` holding the master key sealed
under a key that Argon2id derives from one passphrase (docs/FORMAT.md
§18.1). Any slot unlocks the store; adding or removing one rewrites no
data. A slot file is written whole (temp, fsync, rename), so a crash
leaves every old slot as it was.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from ..durable import fsync_dir, make_dir, read_bounded, remove_quietly, write_atomic
from ..errors import KeySlotsUnusable, LastKeySlot, PasswordRequired, WrongPassword
from .crypto import KEY_SIZE, PLAIN, SALT_SIZE, TAG_SIZE, PlainSealer, Sealer, new_master_key

# A passphrase, or a function that asks for one (called only when needed).
PasswordSource = bytes | Callable[[], bytes]

KEYS_DIR = "keys"
SLOT_SUFFIX = ".json"
# Measured on a 2-core VM: 64 MiB, 3 passes, 2 lanes unlock in 0.23 s
# (128 MiB, 2 passes: 0.32 s). docs/PERFORMANCE.md "Unlocking".
DEFAULT_KDF = {"name": "argon2id", "memory_kib": 64 << 10, "iterations": 3, "lanes": 2}
# Bounds a slot's parameters must lie in: a crafted slot must not make an
# open allocate gigabytes or run for hours.
_MEMORY_KIB = (8 << 10, 4 << 20)
_ITERATIONS = (1, 64)
_LANES = (1, 16)
_NONCE = 12
MAX_SLOT_BYTES = 64 << 10

# Master keys unlocked in this process, by store id: one Argon2id per store
# and process, however often it is opened.
_unlocked: dict[str, bytes] = {}
# Where a passphrase comes from when Store.open is given none: the CLI and
# the MLX loader set this to the CAS_PASSWORD* sources and a prompt.
_default_source: PasswordSource | None = None


def set_password_source(source: PasswordSource | None) -> None:
    global _default_source
    _default_source = source


def sealer_for(store_path: str, store_id: str, encrypted: bool,
               password: PasswordSource | None) -> Sealer | PlainSealer:
    """The sealer of a store being opened: PLAIN, or its unlocked keys."""
    if not encrypted:
        return PLAIN
    master = _unlocked.get(store_id)
    if master is None:
        source = password if password is not None else _default_source
        if source is None:
            raise PasswordRequired(store_path)
        master, _slot = unlock(store_path, store_id, source() if callable(source) else source)
    return Sealer(master)


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


def write_slot(store_path: str, slot: KeySlot, modes_dir: int, modes_file: int) -> None:
    directory = keys_dir(store_path)
    make_dir(directory, modes_dir)
    write_atomic(os.path.join(directory, slot.slot_id + SLOT_SUFFIX), slot.to_json(),
                 tmp_dir=os.path.join(store_path, "tmp"), mode=modes_file)
    fsync_dir(directory)


def create_master(store_id: str, password: bytes) -> tuple[bytes, KeySlot]:
    master = new_master_key()
    return master, make_slot(store_id, master, password)


def read_slots(store_path: str) -> tuple[list[KeySlot], list[str]]:
    """The readable slots, and a reason for each slot file that is not."""
    directory = keys_dir(store_path)
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        return [], [f"{directory}: {e.strerror}"]
    slots, bad = [], []
    for name in names:
        if not name.endswith(SLOT_SUFFIX) or name.startswith("."):
            continue
        try:
            slots.append(_parse_slot(read_bounded(os.path.join(directory, name), MAX_SLOT_BYTES),
                                     name[: -len(SLOT_SUFFIX)]))
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
            bad.append(f"{name}: {e}")
    return slots, bad


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
    for slot in slots:
        master = unwrap(slot, store_id, password)
        if master is not None:
            _unlocked[store_id] = master
            return master, slot.slot_id
    raise WrongPassword(store_path)


def cached_master(store_id: str) -> bytes | None:
    return _unlocked.get(store_id)


def remember(store_id: str, master: bytes) -> None:
    _unlocked[store_id] = master


def remove_slot(store_path: str, slot_id: str) -> None:
    slots, _bad = read_slots(store_path)
    if not any(s.slot_id == slot_id for s in slots):
        raise KeyError(slot_id)
    if len(slots) == 1:
        raise LastKeySlot(store_path, slot_id)
    remove_quietly(os.path.join(keys_dir(store_path), slot_id + SLOT_SUFFIX))
    fsync_dir(keys_dir(store_path))
