"""Encrypted stores where the suite's plain-store tests cannot reach: the
user's 'encrypt new stores' setting, and the bugs a run of the whole suite
under ``--encrypted-stores`` found (code that took a store's file names for
ids, or opened a store without its passphrase)."""

from __future__ import annotations

import dataclasses
import json
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


def test_init_follows_the_users_encrypt_new_stores_setting(tmp_path):
    (tmp_path / "xdg" / "cas").mkdir(parents=True)
    (tmp_path / "xdg" / "cas" / "config.json").write_text(json.dumps({"encrypt_new_stores": True}))
    made = run_cas("--store", str(tmp_path / "a"), "init", "--json", cwd=tmp_path)
    assert made.returncode == 0 and json.loads(made.stdout)["encrypted"] is True
    assert StoreConfig.load(str(tmp_path / "a")).encryption is not None
    plain = run_cas("--store", str(tmp_path / "b"), "init", "--no-encrypt", cwd=tmp_path)
    assert plain.returncode == 0 and StoreConfig.load(str(tmp_path / "b")).encryption is None
    # Without a passphrase nothing is made: no plain store in its place.
    refused = run_cas("--store", str(tmp_path / "c"), "init", cwd=tmp_path, env={"CAS_PASSWORD": ""})
    assert refused.returncode == 2 and not (tmp_path / "c" / "config.json").exists()


@pytest.mark.parametrize("value", ['"yes"', "1", "null"])
def test_a_setting_that_is_not_true_or_false_is_a_one_line_error(tmp_path, value):
    (tmp_path / "xdg" / "cas").mkdir(parents=True)
    (tmp_path / "xdg" / "cas" / "config.json").write_text('{"encrypt_new_stores": %s}' % value)
    r = run_cas("--store", str(tmp_path / "a"), "init", cwd=tmp_path)
    assert r.returncode == 2 and "encrypt_new_stores" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "a").exists()


def _sealed_paths(store_dir: Path, snapshot: str) -> list[Path]:
    """The record of ``snapshot`` and the ref of main, under the names an
    encrypted store gives them."""
    from cas.model.history import History
    from cas.objectid import ObjectId
    with Store.open(str(store_dir), password=PASSWORD.encode()) as store:
        record = History(store).record_file(ObjectId.parse(snapshot))
        label = store.sealer.label("main")
    return [store_dir / "snapshots" / record, store_dir / "refs" / "heads" / label]


@pytest.mark.parametrize("kind", ["fifo", "devzero", "huge"])
def test_a_sealed_record_or_ref_that_is_not_a_small_file_is_an_error_not_a_hang(tmp_path, kind):
    # test_history_trust's check, at the names an encrypted store uses.
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a\n")
    assert run_cas("init", "--encrypt", cwd=tree).returncode == 0
    first = json.loads(run_cas("snapshot", "--json", cwd=tree).stdout)["id"]
    for path in _sealed_paths(tree / ".cas", first):
        saved = path.read_bytes()
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "devzero":
            os.symlink("/dev/zero", path)
        else:
            path.write_bytes(b" " * (64 << 20))
        for args in (["log"], ["verify", "--full"], ["gc", "--dry-run"], ["index", "rebuild"],
                     ["show", first]):
            r = run_cas(*args, cwd=tree)
            assert r.returncode in (0, 1, 2), (args, r.stderr)
            assert "Traceback" not in r.stderr and "internal error" not in r.stderr, (args, r.stderr)
        assert run_cas("verify", cwd=tree).returncode == 1
        path.unlink()
        path.write_bytes(saved)
    assert run_cas("verify", "--full", cwd=tree).returncode == 0


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


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_an_encrypted_store_is_private_whatever_the_umask(tmp_path, umask):
    # test_store_trust's check, on the files an encrypted store has
    # (sealed objects, chunk lists, key slots, the audit log).
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "big.bin").write_bytes(os.urandom(3 << 20))
    (tree / "small.txt").write_text("small\n")
    old = os.umask(umask)
    try:
        for args in (["init", "--encrypt"], ["snapshot"], ["tag", "t"]):
            assert run_cas(*args, cwd=tree).returncode == 0
    finally:
        os.umask(old)
    store = tree / ".cas"
    modes = {str(p.relative_to(store)): p.stat().st_mode & 0o7777 for p in store.rglob("*")}
    assert any(p.endswith(".chunks.sealed") for p in modes) and any(p.startswith("keys/") for p in modes)
    for path, mode in modes.items():
        if (store / path).is_dir():
            assert mode == 0o700, path
        elif path.startswith(("objects/", "packs/")):
            assert mode == 0o400, path
        else:
            assert mode == 0o600, path
