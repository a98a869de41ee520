"""Where things live inside a store directory, and scanning them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from ..objectid import HEX_LENGTH, ObjectId, is_hex
from .crypto import PLAIN, PlainSealer, Sealer
from .encoding import Encoding

OBJECTS = "objects"
PACKS = "packs"
INDEX = "index"
TMP = "tmp"
LOCK = "lock"
PACK_SUFFIX = ".pack"


@dataclass(frozen=True)
class StoreModes:
    """Permission bits of what a store creates: directories, files that are
    replaced (config, refs, index, lock), and objects and packs (never
    written again)."""
    directory: int
    file: int
    object: int

    def exposed(self, mode: int, is_dir: bool) -> int:
        """The permission bits of ``mode`` that give more access than the store allows."""
        allowed = self.directory if is_dir else self.file
        return mode & 0o777 & ~allowed


# A store holds copies of files only their owner may read: nobody else gets in.
PRIVATE = StoreModes(directory=0o700, file=0o600, object=0o400)
# Group-shared, as git's core.sharedRepository=group: the setgid bit keeps
# new files in the store's group.
SHARED = StoreModes(directory=0o2770, file=0o660, object=0o440)


@dataclass(frozen=True)
class Layout:
    root: str
    shared: bool = False
    # Objects live under their names: their ids, or in an encrypted store
    # the ids sealed (FORMAT §18.3). Every path built from an id goes
    # through ``name_of`` and every scan through ``id_of``.
    names: Sealer | PlainSealer = PLAIN

    def name_of(self, oid: ObjectId) -> ObjectId:
        return self.names.name(oid)

    def id_of(self, name: ObjectId) -> ObjectId:
        return self.names.unname(name)

    @property
    def modes(self) -> StoreModes:
        return SHARED if self.shared else PRIVATE

    @property
    def objects(self) -> str:
        return os.path.join(self.root, OBJECTS)

    @property
    def packs(self) -> str:
        return os.path.join(self.root, PACKS)

    @property
    def index(self) -> str:
        return os.path.join(self.root, INDEX)

    @property
    def tmp(self) -> str:
        return os.path.join(self.root, TMP)

    @property
    def lock(self) -> str:
        return os.path.join(self.root, LOCK)

    def loose_path(self, oid: ObjectId, encoding: Encoding) -> str:
        fan, rest = self.names.name(oid).fanout()
        return os.path.join(self.objects, fan, rest + encoding.suffix)

    def pack_path(self, pack: ObjectId) -> str:
        fan, _rest = pack.fanout()
        return os.path.join(self.packs, fan, pack.hex + PACK_SUFFIX)

    def directories(self) -> list[str]:
        """Every directory a store starts with, parents first (index/ is LMDB's)."""
        # snapshots/ and refs/ belong to the history layer; they are made
        # here so that init fsyncs every directory a store starts with.
        refs = os.path.join(self.root, "refs")
        return [self.objects, self.packs, self.tmp, os.path.join(self.root, "snapshots"),
                refs, os.path.join(refs, "heads"), os.path.join(refs, "tags")]

    def scan_loose(self) -> Iterator[tuple[ObjectId, Encoding, str]]:
        """Every loose object file on disk, whatever the index says."""
        for fan in _sorted_entries(self.objects):
            if len(fan) != 2 or not is_hex(fan):
                continue
            fan_dir = os.path.join(self.objects, fan)
            for name in _sorted_entries(fan_dir):
                stem, encoding = name, Encoding.RAW
                for candidate in Encoding.suffixed():
                    if name.endswith(candidate.suffix):
                        stem, encoding = name[: -len(candidate.suffix)], candidate
                        break
                text = fan + stem
                if len(text) == HEX_LENGTH and is_hex(text):
                    yield self.id_of(ObjectId.parse(text)), encoding, os.path.join(fan_dir, name)

    def scan_packs(self) -> Iterator[tuple[ObjectId, str]]:
        for fan in _sorted_entries(self.packs):
            fan_dir = os.path.join(self.packs, fan)
            for name in _sorted_entries(fan_dir):
                stem = name[: -len(PACK_SUFFIX)]
                if name.endswith(PACK_SUFFIX) and len(stem) == HEX_LENGTH and is_hex(stem):
                    yield ObjectId.parse(stem), os.path.join(fan_dir, name)


def _sorted_entries(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
