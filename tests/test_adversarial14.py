"""Encryption at rest against someone who holds the disk, and against a
careless user: files flipped, swapped, planted or rolled back, a store
crafted to look like another, passphrase sources that misbehave, and a
search of every file (temp files during a run included) for plaintext.

Each test marked xfail(strict=True) shows a defect that is still open: it
fails today, and turns into a failure of the suite the moment the defect is
fixed, so whoever fixes it removes the mark. Real stores, the real CLI in
subprocesses, no mocks.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cas.errors import WrongPassword
from cas.objectid import hash_path
from cas.storage import keys
from cas.storage.config import ENCRYPTION, StoreConfig
from cas.storage.store import Store
from tests.conftest import cas_process

PASSWORD = "adv14 passphrase"
ENV = {"CAS_PASSWORD": PASSWORD}
MARKER = "zq14-MARKER-5e0b7c"
# Stores made here unlock cheaply in every subprocess: the key derivation's
# cost is not what these tests are about (test_keys and bench/unlock are).
CHEAP_KDF = {"name": "argon2id", "memory_kib": 8 << 10, "iterations": 1, "lanes": 1}


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch):
    monkeypatch.setattr(keys, "DEFAULT_KDF", dict(CHEAP_KDF))


def make_store(tree: Path, password: str = PASSWORD, store_id: str | None = None) -> str:
    """An encrypted store at tree/.cas; returns its store id."""
    tree.mkdir(parents=True, exist_ok=True)
    config = StoreConfig(encryption=dict(ENCRYPTION))
    if store_id is not None:
        config = StoreConfig(store_id=store_id, encryption=dict(ENCRYPTION))
    Store.init(str(tree / ".cas"), config, password=password.encode()).close()
    return config.store_id


def forget_keys(store_id: str) -> None:
    """Drop what this process unlocked for ``store_id``."""
    keys._unlocked.pop(store_id, None)
    keys._opened_slots.pop(store_id, None)


def cas(tree: Path, *args: str, env: dict | None = None, code: int = 0) -> str:
    r = cas_process(*args, cwd=tree, env={**ENV, **(env or {})}, timeout=120)
    assert r.returncode == code, (args, r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    return r.stdout.decode()


def one_line_error(r: subprocess.CompletedProcess, codes=(1, 2)) -> None:
    err = r.stderr.decode()
    assert r.returncode in codes, (r.returncode, err[-1500:])
    assert "Traceback" not in err and "internal error" not in err, err[-1500:]


def grep_files(root: Path, wanted: dict[str, bytes]) -> list[str]:
    hits = []
    for path in sorted(root.rglob("*")):
        try:
            if not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
        except OSError:         # a temp file renamed or removed meanwhile
            continue
        hits += [f"{what} in {path.relative_to(root)}" for what, b in wanted.items() if b in data]
    return hits


def files_of(store: Path, leave_out: tuple[str, ...] = ("audit", "lock.mdb")) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and not any(part in leave_out for part in p.relative_to(store).parts)}


# -- downgrade: a plain config over an encrypted store ------------------------


@pytest.mark.parametrize("keys_too", [False, True])
def test_a_config_stripped_of_its_encryption_does_not_make_cas_write_plaintext(tmp_path, keys_too):
    """The attacker edits the plain config and HEAD; with keys_too, deletes
    keys/ as well: the store's sealed packs still give it away."""
    import shutil
    tree = tmp_path / "t"
    make_store(tree)
    (tree / "first.txt").write_text("first")
    cas(tree, "snapshot", "-m", "one")
    config = tree / ".cas" / "config.json"
    doc = json.loads(config.read_bytes())
    del doc["encryption"]
    os.chmod(config, 0o600)
    config.write_text(json.dumps(doc))
    if keys_too:
        shutil.rmtree(tree / ".cas" / "keys")
    (tree / ".cas" / "HEAD").write_text("ref: refs/heads/main\n")
    (tree / "secret-zq14.txt").write_text(MARKER * 50)
    r = cas_process("snapshot", "-m", "two", cwd=tree, env=ENV)
    hits = grep_files(tree / ".cas", {"marker": MARKER.encode(), "name": b"secret-zq14.txt"})
    assert r.returncode in (1, 2) and not hits, (r.returncode, hits, r.stderr[-500:])


# -- the unlocked-key cache: two stores with one store id ---------------------


def test_a_store_sharing_an_unlocked_stores_id_still_needs_its_passphrase(tmp_path):
    store_id = make_store(tmp_path / "a", "passphrase of a")
    forget_keys(store_id)   # a is not unlocked in this process
    make_store(tmp_path / "b", "passphrase of b", store_id=store_id)   # caches b's key under a's id
    try:
        with pytest.raises(WrongPassword):
            Store.open(str(tmp_path / "a" / ".cas"), password=b"not the passphrase").close()
    finally:
        forget_keys(store_id)


def test_copy_from_a_store_claiming_the_targets_id_leaves_the_target_alone(tmp_path):
    user, planted = tmp_path / "user", tmp_path / "planted"
    store_id = make_store(user, "user passphrase")
    forget_keys(store_id)
    make_store(planted, "attacker passphrase", store_id=store_id)
    forget_keys(store_id)
    (user / "mine.txt").write_text("the user's own data")
    cas(user, "snapshot", "-m", "mine", env={"CAS_PASSWORD": "user passphrase"})
    (planted / "planted.txt").write_text("planted")
    cas(planted, "snapshot", "-m", "planted", env={"CAS_PASSWORD": "attacker passphrase"})
    before = files_of(user / ".cas")
    # No passphrase for the target at all: CAS_PASSWORD empty is unset.
    r = cas_process("copy", "--from", str(planted / ".cas"), cwd=user,
                    env={"CAS_PASSWORD": "", "CAS_FROM_PASSWORD": "attacker passphrase"})
    changed = sorted(k for k in set(before) | set(files_of(user / ".cas"))
                     if before.get(k) != files_of(user / ".cas").get(k))
    assert r.returncode in (1, 2) and not changed, (r.returncode, changed, r.stderr[-800:])


# -- key slots ------------------------------------------------------------------


def test_a_planted_slot_with_the_dearest_allowed_kdf_is_not_tried(tmp_path):
    tree = tmp_path / "t"
    make_store(tree)
    directory = tree / ".cas" / "keys"
    good = json.loads(next(directory.glob("*.json")).read_bytes())
    bomb = dict(good, id="0000000000000000",
                kdf={"name": "argon2id", "memory_kib": 4 << 20, "iterations": 64, "lanes": 16})
    (directory / "0000000000000000.json").write_text(json.dumps(bomb))
    slots, damaged = keys.slot_files(str(tree / ".cas"))
    # Only parsed here, never derived: running it is the harm.
    assert [s.slot_id for s in slots] == [good["id"]], [(s.slot_id, s.kdf) for s in slots]
    assert [d for d, _ in damaged] == ["0000000000000000"]


def test_two_key_adds_at_once_both_open_and_the_old_one_still_does(tmp_path):
    tree = tmp_path / "t"
    make_store(tree)
    env = {**os.environ, **ENV}
    procs = [subprocess.Popen([sys.executable, "-m", "cas.cli", "key", "add"], cwd=tree,
                              env={**env, "CAS_NEW_PASSWORD": f"new passphrase {i}"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    for p in procs:
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    store = str(tree / ".cas")
    slots, damaged = keys.read_slots(store)
    assert len(slots) == 3 and not damaged, damaged
    store_id = StoreConfig.load(store).store_id
    try:
        opened = {keys.unlock(store, store_id, phrase.encode())[1]
                  for phrase in (PASSWORD, "new passphrase 0", "new passphrase 1")}
        assert opened == {s.slot_id for s in slots}
        with pytest.raises(WrongPassword):
            keys.unlock(store, store_id, b"new passphrase 2")
    finally:
        forget_keys(store_id)


# -- passphrase sources ---------------------------------------------------------


def test_a_passphrase_command_printing_hundreds_of_megabytes_is_cut_off(tmp_path):
    tree = tmp_path / "t"
    make_store(tree)
    env = {**os.environ, "CAS_PASSWORD": "", "CAS_PASSWORD_COMMAND": "head -c 400000000 /dev/zero"}
    code, message, peak = _run_measured(tree, ["log"], env, tmp_path)
    assert code == 2 and len(message.splitlines()) == 1, message
    # A passphrase is at most 64 KiB: nothing needs hundreds of megabytes.
    assert peak < 250 << 10, f"{peak >> 10} MiB resident"


# -- no plaintext on disk while commands run ------------------------------------


@contextmanager
def watching(places: list[Path], wanted: dict[str, bytes]) -> Iterator[dict]:
    """Reads every file under ``places`` over and over while the block runs
    (temp files live only while a command writes them): what was seen."""
    seen: dict = {"files": set(), "hits": set()}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for place in places:
                for path in list(place.rglob("*")):
                    seen["files"].add(path.name)
                    try:
                        data = path.read_bytes()
                    except OSError:     # renamed into place, or a directory
                        continue
                    seen["hits"].update(f"{what} in {path.name}" for what, b in wanted.items() if b in data)
            time.sleep(0.005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def private_corpus(tree: Path) -> dict[str, bytes]:
    """Files a user would not want read off a lost disk, and what must not
    be found of them: names, a marker, and each file's plain id."""
    (tree / "notes-zq14").mkdir(parents=True)
    for i in range(20):
        (tree / "notes-zq14" / f"diary-zq14-{i}.txt").write_text(f"{MARKER} entry {i}\n" * 30)
    big = bytearray(os.urandom(6 << 20))
    for at in range(0, len(big), 1 << 20):      # the marker in every chunk and segment
        big[at + 5000:at + 5000 + len(MARKER)] = MARKER.encode()
    (tree / "weights-zq14.bin").write_bytes(bytes(big))
    db = sqlite3.connect(tree / "memory-zq14.db")
    db.execute("create table m (t text)")
    db.executemany("insert into m values (?)", [(f"{MARKER} {i}",) for i in range(2000)])
    db.commit()
    db.close()
    wanted = {"marker": MARKER.encode()}
    for path in tree.rglob("*"):
        if path.is_file() and ".cas" not in path.parts:
            wanted[f"name {path.name}"] = path.name.encode()
            wanted[f"id of {path.name}"] = hash_path(path).hex.encode()
            wanted[f"raw id of {path.name}"] = hash_path(path).digest
    return wanted


def test_no_plaintext_in_tmp_or_the_system_temp_dir_while_commands_run(tmp_path):
    tree = tmp_path / "t"
    make_store(tree)
    wanted = private_corpus(tree)
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    store = tree / ".cas"
    home = tmp_path / "home"
    home.mkdir()
    env = {"TMPDIR": str(systmp), "HOME": str(home), "XDG_CONFIG_HOME": "", "XDG_CACHE_HOME": ""}
    with watching([store / "tmp", systmp], wanted) as seen:
        cas(tree, "snapshot", "-m", "private", env=env)
        (tree / "notes-zq14" / "diary-zq14-0.txt").write_text(MARKER + " changed")
        cas(tree, "snapshot", "-m", "again", env=env)
        cas(tree, "forget", "HEAD~1", env=env)
        cas(tree, "gc", "--grace", "0", env=env)
        cas(tree, "index", "rebuild", env=env)
        cas(tree, "restore", "HEAD", "--to", str(tmp_path / "out"), env=env)
    assert seen["files"], "the poller saw no temp file: it tested nothing"
    assert not seen["hits"], sorted(seen["hits"])[:10]
    assert not grep_files(store, wanted)
    # Nothing left in the system's temp directory or the user's home either.
    assert not list(systmp.iterdir()) and not grep_files(home, wanted), list(home.rglob("*"))
    assert (tmp_path / "out" / "weights-zq14.bin").read_bytes() == (tree / "weights-zq14.bin").read_bytes()


# -- integrity: what the unauthenticated parts can be made to say --------------


def _snapshot_one_file(tmp_path: Path, content: bytes) -> tuple[Path, str]:
    tree = tmp_path / "t"
    make_store(tree)
    (tree / "f.txt").write_bytes(content)
    cas(tree, "snapshot", "-m", "one")
    return tree, hash_path(tree / "f.txt").hex


def test_an_index_record_turned_raw_does_not_make_cat_print_planted_bytes(tmp_path):
    import lmdb

    from cas.objectid import ObjectId
    from cas.storage.encoding import Encoding
    content = b"the user's own words " * 700
    tree, oid = _snapshot_one_file(tmp_path, content)
    with Store.open(str(tree), password=PASSWORD.encode()) as store:
        name = store.sealer.name(ObjectId.parse(oid)).digest
        planted = Path(store.layout.loose_path(ObjectId.parse(oid), Encoding.RAW))
    # The attacker knows no id: any name from the index's keys will do.
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(b"EVIL" * (len(content) // 4) + b"E" * (len(content) % 4))
    env = lmdb.open(str(tree / ".cas" / "index"), max_dbs=16, subdir=True)
    try:
        with env.begin(write=True, db=env.open_db(b"objects")) as txn:
            record = bytearray(txn.get(name))
            record[0:2] = b"\0\0"                    # loose, raw
            record[8:40] = bytes(32)                 # no pack
            txn.put(name, bytes(record[:40]) + (0).to_bytes(8, "little") + record[48:])
    finally:
        env.close()
    r = cas_process("cat", "HEAD:f.txt", cwd=tree, env=ENV)
    one_line_error(r, codes=(1,))
    assert b"EVIL" not in r.stdout, r.stdout[:80]


def test_a_rolled_back_ref_opens_and_is_what_the_threat_model_says(tmp_path):
    """FORMAT §18 threat model: an older sealed copy of a ref put back in its
    place opens (cas cannot tell it from the current one); the newer
    snapshot's record stays and verify passes. Documented, not prevented."""
    tree, _oid = _snapshot_one_file(tmp_path, b"version one")
    heads = tree / ".cas" / "refs" / "heads"
    [ref] = list(heads.iterdir())
    old = ref.read_bytes()
    (tree / "f.txt").write_bytes(b"version two")
    cas(tree, "snapshot", "-m", "two")
    os.chmod(ref, 0o600)
    ref.write_bytes(old)
    log = cas(tree, "log", "--oneline")
    assert "(HEAD -> main) one" in log and "two" in log, log   # the newer record is still listed
    r = cas_process("verify", cwd=tree, env=ENV)
    assert r.returncode == 0 and b"2 snapshots" in r.stdout + r.stderr, r.stderr


def test_sealed_files_from_another_encrypted_store_are_one_line_errors(tmp_path):
    tree, _oid = _snapshot_one_file(tmp_path, b"mine")
    other = tmp_path / "other"
    make_store(other)
    (other / "g.txt").write_text("theirs")
    cas(other, "snapshot", "-m", "theirs")
    [mine] = list((tree / ".cas" / "refs" / "heads").iterdir())
    [theirs] = list((other / ".cas" / "refs" / "heads").iterdir())
    os.chmod(mine, 0o600)
    mine.write_bytes(theirs.read_bytes())       # same layout, other keys, its own place
    one_line_error(cas_process("log", cwd=tree, env=ENV))
    one_line_error(cas_process("verify", cwd=tree, env=ENV), codes=(1,))
    (tree / ".cas" / "HEAD").write_bytes(theirs.read_bytes())
    one_line_error(cas_process("snapshot", "-m", "x", cwd=tree, env=ENV))


@pytest.mark.plain_only
def test_a_plain_store_names_objects_by_the_b3sum_of_their_bytes(tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    # Not chunked, above loose_min_size: a loose file; random, so stored raw.
    Store.init(str(tree / ".cas"), StoreConfig(chunk_min_size=64 << 20)).close()
    (tree / "big.bin").write_bytes(os.urandom(9 << 20))
    (tree / "small.txt").write_text("small")
    cas(tree, "snapshot", "-m", "plain")
    store = tree / ".cas"
    assert not (store / "keys").exists() \
        and json.loads((store / "config.json").read_text()).get("encryption") is None
    loose = [p for p in (store / "objects").rglob("*") if p.is_file()]
    raw = [p for p in loose if "." not in p.name]
    assert raw, loose
    for path in raw:
        assert path.parent.name + path.name == hash_path(path).hex
    assert len((store / "refs" / "heads" / "main").read_text().strip()) == 64


# -- a careless user: plaintext written into the store by a command --------------


@pytest.mark.parametrize("command", [
    "cat", "export"])
def test_outputs_inside_an_encrypted_store_are_refused(tmp_path, command):
    from tests.test_models_trust import make_model_dir
    tree, _oid = _snapshot_one_file(tmp_path, (MARKER + " private\n").encode() * 20)
    if command == "cat":
        target = tree / ".cas" / "snapshots" / "f.txt"
        r = cas_process("cat", "HEAD:f.txt", "-o", str(target), cwd=tree, env=ENV)
    else:
        src = make_model_dir(tmp_path / "model-zq14")
        (src / "config.json").write_text(json.dumps({"model_type": "tiny", "note": MARKER}))
        cas(tree, "model", "import", str(src), "--name", "private-zq14")
        target = tree / ".cas" / "tmp" / "export"
        r = cas_process("model", "export", "private-zq14", str(target), cwd=tree, env=ENV)
    hits = grep_files(tree / ".cas", {"marker": MARKER.encode()})
    assert r.returncode in (1, 2) and not hits, (r.returncode, hits, r.stderr[-400:])


def test_init_with_a_passphrase_set_but_no_encrypt_says_the_store_is_plain(tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    r = cas_process("init", cwd=tree, env={**ENV, "XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert r.returncode == 0, r.stderr
    said = (r.stdout + r.stderr).decode().replace(str(tree), "TREE").lower()
    encrypted = json.loads((tree / ".cas" / "config.json").read_text()).get("encryption") is not None
    assert encrypted or "encrypt" in said, said


# -- a crafted audit log ---------------------------------------------------------


# Starts the command from a small interpreter and prints its peak resident
# size: a child forked straight from the test worker (MLX loaded, hundreds of
# MiB) would count the worker's pages it shared before exec.
_PEAK_OF = ("import resource, subprocess, sys\n"
            "code = subprocess.call(sys.argv[1:], stdin=subprocess.DEVNULL)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(code)\n")


def _run_measured(tree: Path, args: list[str], env: dict, out_dir: Path) -> tuple[int, str, int]:
    """(exit code, stderr, peak resident KiB) of one cas process alone."""
    with open(out_dir / "err", "wb") as err:
        proc = subprocess.run([sys.executable, "-c", _PEAK_OF, sys.executable, "-m", "cas.cli", *args],
                              cwd=tree, env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    return proc.returncode, (out_dir / "err").read_text(), int(proc.stdout.split()[-1])


def test_a_huge_last_audit_line_does_not_cost_each_command_its_size(tmp_path):
    tree, _oid = _snapshot_one_file(tmp_path, b"one")
    log = tree / ".cas" / "audit" / "log"
    with open(log, "ab") as f:                  # a sparse tail: no newline in 128 MiB
        f.truncate(log.stat().st_size + (128 << 20))
    (tree / "f.txt").write_bytes(b"two")
    code, err, peak = _run_measured(tree, ["snapshot", "-m", "two"], {**os.environ, **ENV}, tmp_path)
    assert code == 0, err
    assert peak < 200 << 10, f"{peak >> 10} MiB resident for a snapshot of 3 bytes"


def test_a_planted_unsealed_file_adopted_by_a_rebuild_is_not_printed(tmp_path):
    from cas.objectid import ObjectId
    from cas.storage.encoding import Encoding
    content = b"the user's own words " * 700
    tree, oid = _snapshot_one_file(tmp_path, content)
    with Store.open(str(tree), password=PASSWORD.encode()) as store:
        planted = Path(store.layout.loose_path(ObjectId.parse(oid), Encoding.RAW))
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(b"EVIL" * (len(content) // 4) + b"E" * (len(content) % 4))
    for pack in (tree / ".cas" / "packs").rglob("*.pack"):
        pack.unlink()                       # the sealed copy gone; the index then rebuilt
    rebuilt = cas_process("index", "rebuild", cwd=tree, env=ENV)
    assert b"not the object its name stands for" in rebuilt.stdout + rebuilt.stderr
    r = cas_process("cat", oid, cwd=tree, env=ENV)
    one_line_error(r, codes=(1, 2))   # the object is gone (its pack was deleted): missing, or damaged
    assert b"EVIL" not in r.stdout, r.stdout[:80]
