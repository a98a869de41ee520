"""Encryption at rest: the keys of an unlocked store and what they seal.

This is the only module that imports ``cryptography``'s ciphers. A plain
store gets ``PLAIN``, whose every operation is the identity, so the rest of
the code seals and opens unconditionally and a plain store's bytes stay
exactly as they were (docs/FORMAT.md §18).

Three things are sealed, each its own way:

- **Names.** An object's id (the BLAKE3 of its content) is written on disk
  and in the index only as its *name*: AES-256 applied to each 16-byte half
  of the id under the names key. A name reveals nothing about the content
  without the key, it is the same for the same content (so dedup works),
  and the key holder turns it back into the id (so a rebuilt index, gc and
  verify still speak ids).
- **Files** (loose objects, chunk lists, snapshot records, refs, ...): an
  80-byte header with a random 32-byte salt and a binding, then the content
  in segments of 1 MiB, each AES-256-GCM under a key derived from the salt,
  the nonce the segment's number and a last-segment flag. Any segment can be
  read alone (a tensor in the middle of weights), and cutting or reordering
  segments fails to authenticate. The binding, a MAC of what the file is
  (an object's name and encoding, a small file's path) under the file's key,
  is written last, once a streamed object's id is known, so a file renamed
  to another's place does not open there.
- **Pack entries**: AES-256-GCM under a key derived from the pack's salt,
  the nonce the entry's offset in the pack (unique within it).

Small records in the index are sealed with AES-256-GCM-SIV under random
nonces: misuse-resistant, where a repeated nonce would reveal only that two
records are equal.
"""

from __future__ import annotations

import hmac
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV

from ..objectid import ObjectId

KEY_SIZE = 32
TAG_SIZE = 16
SALT_SIZE = 32
SEGMENT_LOG2 = 20
SEGMENT = 1 << SEGMENT_LOG2
FILE_MAGIC = b"CASSEAL\0"
FILE_VERSION = 1
# magic, version, log2 of the segment size, salt; then the binding.
_FILE_PREFIX = struct.Struct("<8sII32s")
BINDING_SIZE = 32
FILE_HEADER_SIZE = _FILE_PREFIX.size + BINDING_SIZE    # 80
_SIV_NONCE = 12
# Sub-key contexts for BLAKE3's key derivation mode (docs/FORMAT.md §18.2).
_CONTEXT = "cas 2026-11 {}"
PURPOSES = ("names", "data", "index values", "index keys", "files", "audit")


class SealError(ValueError):
    """Bytes that do not open under this store's keys: damaged, cut short,
    moved from another file, or never sealed by this store."""


def derive(master: bytes, purpose: str) -> bytes:
    """A sub-key of the master key, one per purpose."""
    if purpose not in PURPOSES:
        raise ValueError(f"no key purpose {purpose!r}")
    return blake3.blake3(master, derive_key_context=_CONTEXT.format(purpose)).digest()


def new_master_key() -> bytes:
    return os.urandom(KEY_SIZE)


# -- file segments ----------------------------------------------------------


def segment_nonce(number: int, last: bool) -> bytes:
    return struct.pack(">QI", number, 1 if last else 0)


def sealed_size(plain_size: int) -> int:
    """The size of a sealed file holding ``plain_size`` bytes."""
    segments = max(1, -(-plain_size // SEGMENT))
    return FILE_HEADER_SIZE + plain_size + segments * TAG_SIZE


def plain_size(file_size: int) -> int:
    """The content size of a sealed file of ``file_size`` bytes; SealError
    for a size no sealed file has."""
    body = file_size - FILE_HEADER_SIZE
    if body < TAG_SIZE:
        raise SealError(f"{file_size} bytes is too short for a sealed file")
    full, rest = divmod(body, SEGMENT + TAG_SIZE)
    if rest == 0:
        return full * SEGMENT
    if rest < TAG_SIZE or (rest == TAG_SIZE and full > 0):
        raise SealError(f"{file_size} bytes is not the size of a sealed file")
    return full * SEGMENT + rest - TAG_SIZE


@dataclass(frozen=True)
class FileCipher:
    """The cipher of one sealed file: its header's first 48 bytes (the
    associated data of every segment) and the key derived from its salt."""
    prefix: bytes
    aead: AESGCM
    key: bytes

    def header(self, context: bytes) -> bytes:
        """The whole 80-byte header of this file when it holds ``context``."""
        return self.prefix + blake3.blake3(b"binding\0" + context, key=self.key).digest()

    def seal_segment(self, number: int, last: bool, data: bytes | bytearray | memoryview) -> bytes:
        return self.aead.encrypt(segment_nonce(number, last), data, self.prefix)

    def open_segment_into(self, number: int, last: bool, data: bytes | memoryview,
                          out: memoryview) -> None:
        """Open a segment into ``out`` (exactly its plaintext length)."""
        try:
            self.aead.decrypt_into(segment_nonce(number, last), data, self.prefix, out)
        except InvalidTag:
            raise SealError(f"segment {number} does not authenticate") from None

    def open_segment(self, number: int, last: bool, data: bytes | memoryview) -> bytes:
        out = bytearray(len(data) - TAG_SIZE)
        self.open_segment_into(number, last, data, memoryview(out))
        return bytes(out)


class PackCipher:
    """Seals and opens the entries and trailer of one encrypted pack."""

    def __init__(self, aead: AESGCM):
        self._aead = aead

    def seal_entry(self, offset: int, context: bytes, data: bytes | memoryview) -> bytes:
        return self._aead.encrypt(struct.pack(">QI", offset, 0), data, context)

    def open_entry(self, offset: int, context: bytes, data: bytes | memoryview) -> bytes:
        try:
            return self._aead.decrypt(struct.pack(">QI", offset, 0), data, context)
        except InvalidTag:
            raise SealError(f"pack entry at offset {offset} does not authenticate") from None

    def seal_trailer(self, offset: int, header: bytes, records: bytes) -> bytes:
        return self._aead.encrypt(struct.pack(">QI", offset, 1), records, b"cas pack trailer" + header)

    def open_trailer(self, offset: int, header: bytes, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(struct.pack(">QI", offset, 1), sealed, b"cas pack trailer" + header)
        except InvalidTag:
            raise SealError("the pack's trailer does not authenticate") from None


class Sealer:
    """What an encrypted store seals with; ``PLAIN`` for a plain store."""

    encrypted = True

    def __init__(self, master: bytes):
        self._names_key = derive(master, "names")
        self._data_key = derive(master, "data")
        self._values = AESGCMSIV(derive(master, "index values"))
        self._index_keys = derive(master, "index keys")
        self._files_key = derive(master, "files")
        self.audit_key = derive(master, "audit")
        self._local = threading.local()

    # -- names --------------------------------------------------------------

    def _ecb(self) -> tuple:
        pair = getattr(self._local, "ecb", None)
        if pair is None:
            cipher = Cipher(algorithms.AES(self._names_key), modes.ECB())
            pair = self._local.ecb = (cipher.encryptor(), cipher.decryptor())
        return pair

    def name(self, oid: ObjectId) -> ObjectId:
        """The name an object is stored under (on disk and in the index)."""
        return ObjectId(self._ecb()[0].update(oid.digest))

    def unname(self, name: ObjectId) -> ObjectId:
        """The object id a name was made from."""
        return ObjectId(self._ecb()[1].update(name.digest))

    def keyed(self, label: bytes, data: bytes, size: int = 32) -> bytes:
        """A keyed hash, for index keys that must not show what they key
        (paths, branch names) yet stay the same for the same input."""
        return blake3.blake3(label + b"\0" + data, key=self._index_keys).digest()[:size]

    def label(self, text: str) -> str:
        """A file name for a user's name (a branch, a model): 32 hex digits."""
        return self.keyed(b"file name", text.encode("utf-8"), 16).hex()

    # -- index values -------------------------------------------------------

    def seal_value(self, context: bytes, value: bytes) -> bytes:
        nonce = os.urandom(_SIV_NONCE)
        return nonce + self._values.encrypt(nonce, value, context)

    def open_value(self, context: bytes, sealed: bytes) -> bytes:
        if len(sealed) < _SIV_NONCE + TAG_SIZE:
            raise SealError("sealed index value is too short")
        try:
            return self._values.decrypt(sealed[:_SIV_NONCE], sealed[_SIV_NONCE:], context)
        except InvalidTag:
            raise SealError("sealed index value does not authenticate") from None

    # -- files --------------------------------------------------------------

    def new_file(self) -> FileCipher:
        """The cipher of a new sealed file, under a fresh random salt."""
        salt = os.urandom(SALT_SIZE)
        return self._file_cipher(_FILE_PREFIX.pack(FILE_MAGIC, FILE_VERSION, SEGMENT_LOG2, salt))

    def file_cipher(self, header: bytes, context: bytes) -> FileCipher:
        """The cipher of an existing sealed file from its 80-byte header,
        which must be bound to ``context``."""
        if len(header) != FILE_HEADER_SIZE:
            raise SealError("sealed file is too short for its header")
        prefix = header[:_FILE_PREFIX.size]
        magic, version, log2, _salt = _FILE_PREFIX.unpack(prefix)
        if magic != FILE_MAGIC or version != FILE_VERSION or log2 != SEGMENT_LOG2:
            raise SealError("not a sealed file of this format")
        cipher = self._file_cipher(prefix)
        if not hmac.compare_digest(cipher.header(context), header):
            raise SealError("sealed file belongs somewhere else (its binding does not match)")
        return cipher

    def _file_cipher(self, prefix: bytes) -> FileCipher:
        salt = prefix[_FILE_PREFIX.size - SALT_SIZE:]
        key = blake3.blake3(b"file\0" + salt, key=self._data_key).digest()
        return FileCipher(prefix, AESGCM(key), key)

    def seal_bytes(self, context: bytes, data: bytes | memoryview) -> bytes:
        """A whole sealed file holding ``data``."""
        cipher = self.new_file()
        return cipher.header(context) + b"".join(_seal_segments(cipher, memoryview(data)))

    def open_bytes(self, context: bytes, sealed: bytes | memoryview) -> bytes:
        """The content of a whole sealed file; SealError if it does not open."""
        sealed = memoryview(sealed)
        size = plain_size(len(sealed))
        cipher = self.file_cipher(bytes(sealed[:FILE_HEADER_SIZE]), context)
        out = bytearray(size)
        view = memoryview(out)
        pos, number = FILE_HEADER_SIZE, 0
        while True:
            start = number * SEGMENT
            piece = min(SEGMENT, size - start)
            last = start + SEGMENT >= size
            cipher.open_segment_into(number, last, sealed[pos:pos + piece + TAG_SIZE],
                                     view[start:start + piece])
            pos += piece + TAG_SIZE
            number += 1
            if last:
                return bytes(out)

    @staticmethod
    def object_context(name: ObjectId, encoding: int) -> bytes:
        """What a loose object file holds: its name and encoding."""
        return b"cas object\0" + name.digest + bytes([encoding])

    @staticmethod
    def entry_context(name: ObjectId, encoding: int) -> bytes:
        """The associated data of a pack entry."""
        return b"cas pack entry\0" + name.digest + bytes([encoding])

    # -- packs ----------------------------------------------------------------

    def pack_cipher(self, salt: bytes) -> PackCipher:
        key = blake3.blake3(b"pack\0" + salt, key=self._data_key).digest()
        return PackCipher(AESGCM(key))

    # -- small files ------------------------------------------------------------

    def seal_file(self, relpath: str, data: bytes) -> bytes:
        """A small store file (a ref, a snapshot record), bound to where it lives."""
        return self.seal_bytes(b"cas file\0" + relpath.encode("utf-8"), data)

    def open_file(self, relpath: str, data: bytes) -> bytes:
        return self.open_bytes(b"cas file\0" + relpath.encode("utf-8"), data)


def _seal_segments(cipher: FileCipher, data: memoryview) -> Iterator[bytes]:
    size = len(data)
    number = 0
    while True:
        start = number * SEGMENT
        last = start + SEGMENT >= size
        yield cipher.seal_segment(number, last, data[start:start + SEGMENT])
        number += 1
        if last:
            return


class PlainSealer:
    """A plain store's sealer: names are ids, files are their content."""

    encrypted = False
    audit_key = None

    def name(self, oid: ObjectId) -> ObjectId:
        return oid

    def unname(self, name: ObjectId) -> ObjectId:
        return name

    def label(self, text: str) -> str:
        return text

    def seal_file(self, relpath: str, data: bytes) -> bytes:
        return data

    def open_file(self, relpath: str, data: bytes) -> bytes:
        return data


PLAIN = PlainSealer()
