"""Encrypted stores where the suite's plain-store tests cannot reach: the
user's 'encrypt new stores' setting, and the bugs a run of the whole suite
under ``--encrypted-stores`` found (code that took a store's file names for
ids, or opened a store without its passphrase)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cas.errors import ObjectDamaged
from cas.storage.config import ENCRYPTION, StoreConfig
from cas.storage.store import Store
from tests.test_models_everyday import make_model

PASSWORD = "correct horse"


def run_cas(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CAS_")}
    full.update({"CAS_PASSWORD": PASSWORD, "XDG_CONFIG_HOME": str(cwd / "xdg"), **(env or {})})
    return subprocess.run([sys.executable, "-m", "cas.cli", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=120)


def test_a_public_models_view_survives_gc_in_an_encrypted_store(tmp_path):
    # gc took the names under views/ for snapshot ids: in an encrypted store
    # they are the ids' names, so every view looked forgotten and went.
    store = str(tmp_path / "s")
    assert run_cas("--store", store, "init", "--encrypt", cwd=tmp_path).returncode == 0
    model = make_model(tmp_path / "m", 1)
    assert run_cas("--store", store, "model", "import", "--public", str(model), "--name", "tiny",
                   cwd=tmp_path).returncode == 0
    view = run_cas("--store", store, "model", "path", "tiny", cwd=tmp_path).stdout.strip()
    assert os.path.isdir(view)
    gc = run_cas("--store", store, "gc", cwd=tmp_path)
    assert gc.returncode == 0, gc.stderr
    assert os.path.isdir(view) and "model view" not in gc.stderr
    assert run_cas("--store", store, "model", "rm", "tiny", cwd=tmp_path).returncode == 0
    assert run_cas("--store", store, "gc", cwd=tmp_path).returncode == 0
    assert not os.path.exists(view)   # a forgotten version's view still goes


def complete(line: str, cwd: Path) -> list[str]:
    words = line.split()
    env = {"_CAS_COMPLETE": "bash_complete", "COMP_WORDS": line,
           "COMP_CWORD": str(len(words) if line.endswith(" ") else len(words) - 1)}
    r = run_cas(cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    return [item.split(",", 1)[1] for item in r.stdout.splitlines() if item]


def test_completion_reads_an_encrypted_store_with_the_passphrase_from_the_environment(tmp_path):
    # Completion runs before the command group sets the password source:
    # it opened the store without a passphrase and offered nothing.
    tree = tmp_path / "tree"
    (tree / "notes").mkdir(parents=True)
    (tree / "notes" / "a.md").write_text("a\n")
    for args in (["init", "--encrypt"], ["snapshot", "-m", "one"], ["tag", "v1"]):
        assert run_cas(*args, cwd=tree).returncode == 0
    assert set(complete("cas restore ", tree)) == {"HEAD", "main", "v1"}
    assert complete("cas ls HEAD:no", tree) == ["HEAD:notes/"]


def test_a_sealed_packed_object_whose_record_disagrees_is_damage(tmp_path):
    # A raw packed object has its size checked against its record; a sealed
    # one was handed to a memoryview copy of the wrong length (ValueError).
    config = StoreConfig(encryption=dict(ENCRYPTION))
    with Store.init(str(tmp_path / "s"), config, password=PASSWORD.encode()) as store:
        with store.writer() as w:
            oid = w.put_bytes(os.urandom(3000))
            w.put_bytes(os.urandom(3000))
        entry = store.entry(oid)
        assert entry.pack is not None and entry.encoding.sealed
        store.index.record([dataclasses.replace(entry, size=3500)])
        with pytest.raises(ObjectDamaged):
            store.read_into(oid, 0, bytearray(3500))


def test_repair_of_an_encrypted_store_from_another_store_copies_small_objects(tmp_path):
    # The object is written into an anonymous memory file and read back
    # through a second descriptor: a dup shares the offset the write left at
    # the end, so a small object read as nothing, three times over.
    from tests.conftest import flip_byte
    files = tmp_path / "files"
    files.mkdir()
    (files / "small.txt").write_bytes(os.urandom(3000))
    stores = [str(tmp_path / name) for name in ("a", "b")]
    for store in stores:
        assert run_cas("--store", store, "init", "--encrypt", cwd=tmp_path).returncode == 0
        assert run_cas("--store", store, "add", str(files / "small.txt"), cwd=tmp_path).returncode == 0
    oid = run_cas("--store", stores[0], "add", str(files / "small.txt"), cwd=tmp_path).stdout.split()[0]
    (files / "small.txt").unlink()   # only the other store has it now
    from cas.objectid import ObjectId
    with Store.open(stores[0], password=PASSWORD.encode()) as store:
        entry = store.entry(ObjectId.parse(oid))
        path = store.layout.pack_path(entry.pack) if entry.pack else \
            store.layout.loose_path(entry.oid, entry.encoding)
        offset = entry.offset + entry.stored_length // 2
    flip_byte(path, offset, 0x40)
    assert run_cas("--store", stores[0], "verify", "--full", cwd=tmp_path).returncode == 1
    r = run_cas("--store", stores[0], "repair", "--from", stores[1], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert run_cas("--store", stores[0], "verify", "--full", cwd=tmp_path).returncode == 0
