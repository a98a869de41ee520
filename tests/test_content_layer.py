"""The content layer: an id resolves to the stored pieces of its content."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from cas.errors import ObjectDamaged
from cas.objectid import hash_bytes
from cas.problems import Problem
from cas.storage.config import StoreConfig
from cas.storage.content import Piece
from cas.storage.store import Store


def _random(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def stored(tmp_path):
    """A store holding a packed, a loose and a chunked object."""
    # Objects of 100 KB and more are stored loose (the default is 8 MiB).
    store = Store.init(str(tmp_path / "store"), StoreConfig(loose_min_size=100_000))
    small = b"a small packed object\n"
    whole = _random(200_000, 1)
    big = _random(3 << 20, 2)
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "whole").write_bytes(whole)
    with store.writer() as w:
        packed = w.put_bytes(small)
        chunked = w.put_file(str(tmp_path / "big"))[0]
        loose = w.put_file(str(tmp_path / "whole"))[0]
    yield store, {"packed": (packed, small), "loose": (loose, whole), "chunked": (chunked, big)}
    store.close()


def test_whole_objects_are_one_piece_of_themselves(stored):
    store, objects = stored
    for name in ("packed", "loose"):
        oid, data = objects[name]
        content = store.content(oid)
        assert content is not None and not content.chunked, name
        assert content.pieces == [Piece(oid, 0, len(data))]
        assert content.chunk_ids == [] and content.size == len(data)
    assert store.entry(objects["packed"][0]).pack is not None
    assert store.entry(objects["loose"][0]).pack is None


def test_a_chunked_object_resolves_to_its_chunks_in_order(stored):
    store, objects = stored
    oid, data = objects["chunked"]
    content = store.content(oid)
    assert content is not None and content.chunked and content.size == len(data)
    pieces = content.pieces
    assert len(pieces) > 1 and pieces[0].offset == 0
    assert sum(p.length for p in pieces) == len(data)
    for piece in pieces:
        # Each piece is a stored object holding exactly that stretch of the content.
        assert hash_bytes(data[piece.offset:piece.offset + piece.length]) == piece.oid
        assert store.read_object(piece.oid) == data[piece.offset:piece.offset + piece.length]
    assert content.chunk_ids == [p.oid for p in pieces]
    assert store.read_object(oid) == data


def test_an_unknown_id_has_no_content(stored):
    store, _ = stored
    assert store.content(hash_bytes(b"never stored")) is None


def _damage_list(store: Store, oid) -> None:
    path = store.layout.loose_path(oid, store.entry(oid).encoding)
    size = os.path.getsize(path)
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:
        f.write(b"\xff" * size)   # same length: only its parse can fail


def test_a_damaged_chunk_list_is_an_error_naming_the_object(stored):
    store, objects = stored
    oid = objects["chunked"][0]
    _damage_list(store, oid)
    store.forget_cached()
    with pytest.raises(ObjectDamaged) as raised:
        store.content(oid)
    assert raised.value.oid == oid.hex and oid.hex in str(raised.value)


def test_a_damaged_chunk_list_fails_the_commands_that_resolve_it_cleanly(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(_random(3 << 20, 3))
    run = _runner(tmp_path)
    assert run("init").returncode == 0
    assert run("snapshot", str(src)).returncode == 0
    with Store.open(str(tmp_path / "store")) as store:
        oid = next(e.oid for e in store.entries() if e.chunked)
        _damage_list(store, oid)
    for args in (("verify",), ("stats",), ("gc", "--dry-run")):
        r = run(*args)
        assert r.returncode in (1, 2), (args, r.stderr)
        assert b"Traceback" not in r.stderr and oid.hex.encode() in r.stdout + r.stderr, args


def _runner(tmp_path: Path):
    env = {**os.environ}
    env.pop("CAS_STORE", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cas.cli", "--store", str(tmp_path / "store"),
                               *args], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    return run


def test_damage_is_a_problem_with_an_id_and_a_kind():
    oid = hash_bytes(b"x")
    d = Problem.damage(oid, "object", "content does not hash to its id")
    assert (d.path, d.kind, d.message, d.oid, d.severity) == \
        (oid.hex, "object", "content does not hash to its id", oid, "error")
    ref = Problem.damage(None, "ref", "names nothing", name="refs/heads/x")
    assert ref.path == "refs/heads/x" and ref.oid is None
    used = d.with_users(((oid, b"a/b"),))
    assert used.damage_doc()["used_by"] == [{"snapshot": oid.hex, "path": "a/b"}]


def _packed_with_loose_copy(tmp_path: Path, damage_pack: bool):
    """A packed object and a loose file of the same id, as a replacement
    of a damaged pack entry leaves them; one of the two copies damaged."""
    data = _random(5000, 4)
    store = Store.init(str(tmp_path / "store"))
    with store:
        oid = store.put_bytes(data)
        entry = store.entry(oid)
        assert entry.pack is not None
        pack_path = store.layout.pack_path(entry.pack)
        loose_path = store.layout.loose_path(oid, entry.encoding)
        offset = entry.offset + entry.stored_length // 2
    os.makedirs(os.path.dirname(loose_path), exist_ok=True)
    Path(loose_path).write_bytes(data)
    bad = pack_path if damage_pack else loose_path
    os.chmod(bad, 0o600)
    with open(bad, "r+b") as f:
        at = offset if damage_pack else 100
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    return oid, data


@pytest.mark.plain_only
def test_index_rebuild_prefers_a_sound_loose_copy_to_a_pack_entry(tmp_path):
    oid, data = _packed_with_loose_copy(tmp_path, damage_pack=True)
    assert _runner(tmp_path)("index", "rebuild").returncode == 0
    with Store.open(str(tmp_path / "store")) as store:
        assert store.entry(oid).pack is None
        assert store.read_object(oid) == data


def test_index_rebuild_keeps_a_sound_pack_entry_over_a_damaged_loose_copy(tmp_path):
    oid, data = _packed_with_loose_copy(tmp_path, damage_pack=False)
    assert _runner(tmp_path)("index", "rebuild").returncode == 0
    with Store.open(str(tmp_path / "store")) as store:
        assert store.entry(oid).pack is not None
        assert store.read_object(oid) == data


@pytest.mark.plain_only
def test_a_read_yields_no_more_than_the_recorded_size(stored):
    """A loose file grown past its record (or crafted so) is damage found
    before the excess is handed out: a copy of it never outgrows the object."""
    store, objects = stored
    oid, data = objects["loose"]
    entry = store.entry(oid)
    path = store.layout.loose_path(oid, entry.encoding)
    os.chmod(path, 0o644)
    with open(path, "ab") as f:
        f.write(b"\0" * (4 << 20))
    handed_out = 0
    with pytest.raises(ObjectDamaged, match="more than"):
        for block in store.iter_content(oid):
            handed_out += len(block)
    assert handed_out <= len(data)
