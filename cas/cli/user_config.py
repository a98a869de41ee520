"""The user's own settings: ``$XDG_CONFIG_HOME/cas/config.json`` (default
``~/.config/cas/config.json``): the stores registered by name, and whether
``cas init`` encrypts a new store when neither ``--encrypt`` nor
``--no-encrypt`` is given::

    {"stores": {"internal": "/Users/me/.cas", "external-ssd": "/Volumes/SSD/.cas"},
     "encrypt_new_stores": true}
"""

from __future__ import annotations

import json
import os

from ..durable import atomic_output
from ..errors import CasError

ENCRYPT_NEW_STORES = "encrypt_new_stores"


def config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "cas", "config.json")


def _load() -> dict:
    path = config_path()
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        return {"stores": {}}
    except (OSError, ValueError, RecursionError) as e:
        raise CasError(f"{path} cannot be read as JSON ({e}); fix or remove it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("stores", {}), dict):
        raise CasError(f"{path}: 'stores' must be an object of name to path")
    # Checked here, not where it is used: a typo ("yes", 1) must not quietly
    # make a plain store for someone who asked for encrypted ones.
    if not isinstance(doc.get(ENCRYPT_NEW_STORES, False), bool):
        raise CasError(f"{path}: '{ENCRYPT_NEW_STORES}' must be true or false")
    doc.setdefault("stores", {})
    return doc


def _save(doc: dict) -> None:
    path = config_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_output(path, os.path.dirname(path)) as f:
        f.write((json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def registered_stores() -> dict[str, str]:
    return dict(_load()["stores"])


def register_store(name: str, path: str) -> None:
    doc = _load()
    doc["stores"][name] = os.path.abspath(path)
    _save(doc)


def unregister_store(name: str) -> None:
    doc = _load()
    if name not in doc["stores"]:
        raise CasError(f"no store is registered as '{name}' (see 'cas stores ls')")
    del doc["stores"][name]
    _save(doc)


def encrypt_new_stores() -> bool:
    """Whether ``cas init`` encrypts a store unless told ``--no-encrypt``."""
    return bool(_load().get(ENCRYPT_NEW_STORES, False))


def set_encrypt_new_stores(on: bool) -> None:
    doc = _load()
    doc[ENCRYPT_NEW_STORES] = on
    _save(doc)
