"""Canonical JSON: the one byte form of every manifest.

Sorted keys, no insignificant whitespace, UTF-8 (not \\u escapes), integers
only (no floats). Equal manifests have equal bytes and so equal ids.
"""

from __future__ import annotations

import base64
import json

from ..errors import ManifestInvalid


def dumps(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def loads(data: bytes, what: str, kind: str, version: int | tuple[int, ...]) -> dict:
    """Parse a manifest, refusing anything but a ``kind`` manifest of ``version``
    (or of one of several versions a reader knows)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestInvalid(what, f"not JSON ({e})") from None
    except RecursionError:  # a crafted manifest nested past the decoder's depth
        raise ManifestInvalid(what, "JSON nested too deeply to be a manifest") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid(what, "not a JSON object")
    if doc.get("type") != kind:
        raise ManifestInvalid(what, f"not a {kind} manifest")
    known = version if isinstance(version, tuple) else (version,)
    if type(doc.get("version")) is not int or doc.get("version") not in known:
        raise ManifestInvalid(what, f"unknown {kind} version {doc.get('version')!r}")
    return doc


def put_name(doc: dict, key: str, raw: bytes) -> None:
    """Store a file name or link target: as text when it is UTF-8, else base64.

    POSIX names are bytes; JSON strings are Unicode. Names that are valid
    UTF-8 (nearly all) stay readable; others round-trip exactly through
    ``<key>_b64``.
    """
    try:
        doc[key] = raw.decode("utf-8")
    except UnicodeDecodeError:
        doc[key + "_b64"] = base64.b64encode(raw).decode("ascii")


def get_name(doc: dict, key: str, what: str) -> bytes | None:
    if key in doc:
        value = doc[key]
        if not isinstance(value, str):
            raise ManifestInvalid(what, f"{key} is not a string")
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise ManifestInvalid(what, f"{key} is not valid Unicode") from None
    if key + "_b64" in doc:
        try:
            return base64.b64decode(doc[key + "_b64"], validate=True)
        except (ValueError, TypeError):
            raise ManifestInvalid(what, f"{key}_b64 is not base64") from None
    return None
