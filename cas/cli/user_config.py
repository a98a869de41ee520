"""The user's own settings: ``$XDG_CONFIG_HOME/cas/config.json`` (default
``~/.config/cas/config.json``), for now the stores registered by name::

    {"stores": {"internal": "/Users/me/.cas", "external-ssd": "/Volumes/SSD/.cas"}}
"""

from __future__ import annotations

import json
import os

from ..durable import atomic_output
from ..errors import CasError


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
