"""Repair: a write of damaged content replaces it, and ``cas repair`` finds good copies."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

from cas.objectid import ObjectId
from cas.ops.statcache import STAT_TABLE
from cas.storage.config import StoreConfig
from cas.storage.store import Store

from .conftest import damage_first_chunk, flip_byte, write

SMALL = StoreConfig(loose_min_size=64 << 10, pack_target_size=256 << 10)


def _data(seed: int, size: int) -> bytes:
    """Incompressible content, different for each seed."""
    return random.Random(seed).randbytes(size)


def _make(tmp_path: Path, cas, name: str = "s") -> tuple[Path, Path]:
    """A store (small thresholds) and a directory of files added to it:
    a loose object, a packed object and a chunked file."""
    store = tmp_path / name
    Store.init(str(store), SMALL).close()
    files = tmp_path / f"{name}-files"
    write(files / "loose.bin", _data(1, 200 << 10))
    write(files / "packed.txt", _data(2, 20 << 10))
    write(files / "big.bin", _data(3, 3 << 20))
    r = cas("--store", str(store), "add", *(str(p) for p in sorted(files.iterdir())))
    assert r.code == 0, r.err
    return store, files


def _add_ids(cas, store: Path, files: Path) -> dict[str, str]:
    r = cas("--store", str(store), "add", *(str(p) for p in sorted(files.iterdir())))
    assert r.code == 0, r.err
    return {Path(line.split()[1]).name: line.split()[0] for line in r.text.splitlines()}


def _damage(store: Path, oid: str) -> Path:
    """Flip a byte in the middle of an object as stored; returns its file."""
    with Store.open(str(store)) as s:
        entry = s.entry(ObjectId.parse(oid))
        path = s.layout.pack_path(entry.pack) if entry.pack else s.layout.loose_path(entry.oid, entry.encoding)
        offset = entry.offset + entry.stored_length // 2
    flip_byte(path, offset, 0x40)
    return Path(path)


def _damaged(cas, store: Path) -> set[str]:
    r = cas("--store", str(store), "verify", "--full", "--json")
    return {d["id"] for d in json.loads(r.out)["damage"]}


def test_readd_replaces_a_damaged_loose_object(tmp_path, cas):
    store, files = _make(tmp_path, cas)
    ids = _add_ids(cas, store, files)
    path = _damage(store, ids["loose.bin"])
    assert _damaged(cas, store) == {ids["loose.bin"]}
    assert (store / "damaged" / ids["loose.bin"]).exists()   # verify recorded it
    assert cas("--store", str(store), "add", str(files / "loose.bin")).code == 0
    assert _damaged(cas, store) == set()
    assert path.read_bytes() == (files / "loose.bin").read_bytes()
    assert not os.listdir(store / "damaged")


def test_readd_after_a_failed_read_replaces_a_packed_object(tmp_path, cas):
    """No verify: the read that failed recorded the damage; the add replaces
    it with a loose copy and the index points there."""
    store, files = _make(tmp_path, cas)
    ids = _add_ids(cas, store, files)
    _damage(store, ids["packed.txt"])
    assert cas("--store", str(store), "cat", ids["packed.txt"]).code == 1
    assert cas("--store", str(store), "add", str(files / "packed.txt")).code == 0
    r = cas("--store", str(store), "cat", ids["packed.txt"])
    assert r.code == 0 and r.out == (files / "packed.txt").read_bytes()
    with Store.open(str(store)) as s:
        assert s.entry(ObjectId.parse(ids["packed.txt"])).pack is None
    damaged = _damaged(cas, store)
    assert ids["packed.txt"] not in damaged and len(damaged) == 1   # the pack's file only
    # The pack's sound objects move to a new pack; the damaged one goes.
    assert cas("--store", str(store), "repair").code == 0
    assert _damaged(cas, store) == set()


def test_snapshot_replaces_a_damaged_chunk(tmp_path, cas):
    tree = tmp_path / "tree"
    write(tree / "db.bin", _data(4, 3 << 20))
    assert cas("init", cwd=tree).code == 0
    assert cas("snapshot", cwd=tree).code == 0
    file_id = cas("add", str(tree / "db.bin"), cwd=tree).text.split()[0]
    chunk = damage_first_chunk(tree / ".cas", file_id)
    assert {chunk, file_id} <= _damaged(cas, tree / ".cas")
    # Changed on disk only in its time: the snapshot reads it, and the write
    # of its first chunk replaces the damaged copy.
    os.utime(tree / "db.bin", ns=(time.time_ns(), time.time_ns()))
    assert cas("snapshot", "-m", "again", cwd=tree).code == 0
    assert not {chunk, file_id} & _damaged(cas, tree / ".cas")
    assert cas("repair", cwd=tree).code == 0
    assert cas("verify", "--full", cwd=tree).code == 0
    assert cas("restore", "HEAD", "db.bin", "--to", str(tmp_path / "out"), cwd=tree).code == 0
    assert (tmp_path / "out" / "db.bin").read_bytes() == (tree / "db.bin").read_bytes()


def test_snapshot_replaces_a_damaged_chunk_of_a_file_unchanged_on_disk(tmp_path, cas):
    """The stat cache vouches for the file, but its stored chunk is damaged:
    with damage recorded the scan reads every file, so the snapshot's write
    of that chunk replaces the damaged copy."""
    tree = tmp_path / "tree"
    write(tree / "db.bin", _data(6, 3 << 20))
    old = time.time_ns() - 3600 * 10**9   # old enough for the stat cache to record it
    os.utime(tree / "db.bin", ns=(old, old))
    assert cas("init", cwd=tree).code == 0
    assert cas("snapshot", cwd=tree).code == 0
    with Store.open(str(tree / ".cas")) as s:
        assert sum(1 for _ in s.index.scan(STAT_TABLE)) == 1   # the file is vouched for
    file_id = json.loads(cas("ls", "HEAD", "--json", cwd=tree).out)[0]["id"]
    chunk = damage_first_chunk(tree / ".cas", file_id)
    assert {chunk, file_id} <= _damaged(cas, tree / ".cas")   # recorded by verify
    assert cas("snapshot", "-m", "again", cwd=tree).code == 0
    assert not {chunk, file_id} & _damaged(cas, tree / ".cas")
    # Only the damaged pack is left: repair moves its sound objects, needing no source.
    assert cas("repair", cwd=tree).code == 0
    assert cas("verify", "--full", cwd=tree).code == 0


def _model(path: Path) -> Path:
    """A model directory: a config and a safetensors file of one tensor."""
    weights = _data(5, 512 << 10)
    header = json.dumps({"w": {"dtype": "F32", "shape": [len(weights) // 4],
                               "data_offsets": [0, len(weights)]}}).encode()
    write(path / "model.safetensors", struct.pack("<Q", len(header)) + header + weights)
    write(path / "config.json", b'{"model_type": "tiny"}')
    return path


def test_model_reimport_repairs_a_damaged_weight(tmp_path, cas):
    store = tmp_path / "s"
    Store.init(str(store), SMALL).close()   # the weights are a loose object of their own
    src = _model(tmp_path / "tiny")
    assert cas("--store", str(store), "model", "import", str(src), "--name", "m").code == 0
    with Store.open(str(store)) as s:
        file_id = next(e.oid for e in s.entries() if e.size == (src / "model.safetensors").stat().st_size)
        weights = s.plain_path(file_id)
    flip_byte(weights, 100_000)
    assert cas("--store", str(store), "model", "verify", "m").code == 1
    assert cas("--store", str(store), "model", "import", str(src), "--name", "m").code == 0
    assert cas("--store", str(store), "model", "verify", "m").code == 0
    assert Path(weights).read_bytes() == (src / "model.safetensors").read_bytes()
    assert cas("--store", str(store), "verify", "--full").code == 0


def test_repair_from_a_directory_replaces_loose_packed_and_chunk(tmp_path, cas):
    store, files = _make(tmp_path, cas)
    ids = _add_ids(cas, store, files)
    _damage(store, ids["loose.bin"])
    _damage(store, ids["packed.txt"])
    chunk = damage_first_chunk(store, ids["big.bin"])
    before = _damaged(cas, store)
    assert {ids["loose.bin"], ids["packed.txt"], ids["big.bin"], chunk} <= before
    good = tmp_path / "elsewhere"
    shutil.copytree(files, good / "copy")
    r = cas("--store", str(store), "repair", "--from", str(good), "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["ok"] and not doc["still_damaged"]
    assert {ids["loose.bin"], ids["packed.txt"], chunk} <= set(doc["repaired"])
    assert _damaged(cas, store) == set()


def test_repair_cuts_a_damaged_chunk_from_a_good_copy_of_its_file(tmp_path, cas):
    """The chunk exists nowhere on its own: it is read from the file that holds it."""
    store, files = _make(tmp_path, cas)
    ids = _add_ids(cas, store, files)
    chunk = damage_first_chunk(store, ids["big.bin"])
    good = tmp_path / "good"
    write(good / "renamed.db", (files / "big.bin").read_bytes())   # cut as a database would be
    assert cas("--store", str(store), "repair", "--from", str(good)).code == 0
    assert chunk not in _damaged(cas, store) and _damaged(cas, store) == set()


def test_repair_from_another_store(tmp_path, cas):
    store, files = _make(tmp_path, cas, "a")
    other, _ = _make(tmp_path, cas, "b")
    ids = _add_ids(cas, store, files)
    _damage(store, ids["loose.bin"])
    _damage(store, ids["packed.txt"])
    chunk = damage_first_chunk(store, ids["big.bin"])
    (tmp_path / "a-files" / "big.bin").unlink()   # the files are gone: only the store has them
    r = cas("--store", str(store), "repair", "--from", str(other))
    assert r.code == 0, r.err
    assert _damaged(cas, store) == set()
    assert chunk not in _damaged(cas, store)


def test_unrepairable_damage_exits_1_naming_it(tmp_path, cas):
    store, files = _make(tmp_path, cas)
    ids = _add_ids(cas, store, files)
    _damage(store, ids["loose.bin"])
    _damage(store, ids["packed.txt"])
    good = tmp_path / "partial"
    write(good / "p.txt", (files / "packed.txt").read_bytes())
    r = cas("--store", str(store), "repair", "--from", str(good))
    assert r.code == 1
    assert ids["loose.bin"] in r.err and "still damaged" in r.err
    assert ids["packed.txt"] not in r.err
    assert _damaged(cas, store) == {ids["loose.bin"]}
    r = cas("--store", str(store), "repair", "--from", str(tmp_path / "nowhere"))
    assert r.code == 2 and "does not exist" in r.err


def test_repair_refuses_the_store_itself_as_its_source(tmp_path, cas):
    store, files = _make(tmp_path, cas)
    ids = _add_ids(cas, store, files)
    _damage(store, ids["loose.bin"])
    r = cas("--store", str(store), "repair", "--from", str(store))
    assert r.code == 2 and "is the store being repaired" in r.err


def test_sigkill_during_repair_leaves_only_what_is_still_damaged(tmp_path, cas):
    store = tmp_path / "s"
    Store.init(str(store), SMALL).close()
    files = tmp_path / "files"
    for i in range(40):
        write(files / f"f{i}.bin", _data(100 + i, (80 << 10) + i))
    write(files / "big.bin", _data(7, 3 << 20))
    ids = _add_ids(cas, store, files)
    for name in sorted(ids)[:30]:
        _damage(store, ids[name])
    damage_first_chunk(store, ids["big.bin"])
    original = _damaged(cas, store)
    assert len(original) >= 31
    env = {**os.environ, "CAS_STORE": str(store)}
    # Killed later each time, until a run finishes first: the kills land
    # in the verify pass, among the writes and in the pack rewrite.
    for step in range(30):
        proc = subprocess.Popen([sys.executable, "-m", "cas.cli", "repair", "--from", str(files)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2 + 0.1 * step)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = _damaged(cas, store)
        assert now <= original, now - original
        if finished:
            break
    r = cas("--store", str(store), "repair", "--from", str(files))
    assert r.code == 0, r.err
    assert _damaged(cas, store) == set()
    assert cas("--store", str(store), "index", "rebuild").code == 0
    assert _damaged(cas, store) == set()


def test_repair_adopts_the_good_copy_an_index_rebuild_passed_over(tmp_path, cas):
    """A re-add replaced a damaged pack entry with a loose copy; a rebuild
    before the pack was rewritten may index the damaged entry again. The
    loose copy is still there, and cas repair needs no source to use it."""
    store, files = _make(tmp_path, cas)
    ids = _add_ids(cas, store, files)
    _damage(store, ids["packed.txt"])
    assert ids["packed.txt"] in _damaged(cas, store)
    assert cas("--store", str(store), "add", str(files / "packed.txt")).code == 0
    assert cas("--store", str(store), "index", "rebuild").code == 0
    r = cas("--store", str(store), "repair", "--json")
    assert r.code == 0, r.err
    assert ids["packed.txt"] in json.loads(r.out)["repaired"] or \
        ids["packed.txt"] not in {d["id"] for d in json.loads(r.out)["still_damaged"]}
    assert _damaged(cas, store) == set()
    assert cas("--store", str(store), "index", "rebuild").code == 0
    assert _damaged(cas, store) == set()


def test_repair_restores_a_missing_object_file_and_a_lost_pack(tmp_path, cas):
    store, files = _make(tmp_path, cas)
    ids = _add_ids(cas, store, files)
    with Store.open(str(store)) as s:
        loose = s.entry(ObjectId.parse(ids["loose.bin"]))
        packed = s.entry(ObjectId.parse(ids["packed.txt"]))
        os.unlink(s.layout.loose_path(loose.oid, loose.encoding))
        os.unlink(s.layout.pack_path(packed.pack))
    assert ids["loose.bin"] in _damaged(cas, store) and ids["packed.txt"] in _damaged(cas, store)
    r = cas("--store", str(store), "repair", "--from", str(files))
    assert r.code == 0, r.err
    assert _damaged(cas, store) == set()
    r = cas("--store", str(store), "cat", ids["packed.txt"])
    assert r.out == (files / "packed.txt").read_bytes()


def test_a_damage_record_linked_elsewhere_is_not_followed(tmp_path, cas):
    store, files = _make(tmp_path, cas)
    ids = _add_ids(cas, store, files)
    outside = tmp_path / "outside"
    outside.mkdir()
    (store / "damaged").symlink_to(outside)
    _damage(store, ids["loose.bin"])
    assert cas("--store", str(store), "verify", "--full").code == 1
    assert cas("--store", str(store), "cat", ids["loose.bin"]).code == 1
    assert list(outside.iterdir()) == []


def test_gc_removes_and_counts_what_killed_writers_left_in_tmp(tmp_path, cas):
    store, _ = _make(tmp_path, cas)
    tmp = store / "tmp"
    write(tmp / "pack-99999-0123456789abcdef.tmp", b"x" * 5000)
    (tmp / "obj-99999-fedcba9876543210.tmp").symlink_to(tmp_path / "s-files" / "loose.bin")
    r = cas("--store", str(store), "gc", "--dry-run", "--json")
    doc = json.loads(r.out)
    assert (doc["removed_temp_files"], doc["removed_temp_bytes"]) == (2, 5000)
    assert len(os.listdir(tmp)) == 2   # a dry run removes nothing
    r = cas("--store", str(store), "gc", "--json")
    assert json.loads(r.out)["removed_temp_bytes"] == 5000
    assert os.listdir(tmp) == []
    assert (tmp_path / "s-files" / "loose.bin").exists()   # a link goes, never its target
