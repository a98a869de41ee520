"""cas purge: paths out of every snapshot, and not one byte of them left in
any file of the store; history keeps its shape; SIGKILL at any moment."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cas.storage.config import StoreConfig
from cas.storage.store import Store

from .conftest import cas_process, write

MARKER = b"PURGE-MARKER-" + os.urandom(8).hex().encode()
# Names found nowhere else: a leftover tree or stat cache key would show them.
SMALL, LOOSE, CHUNKED = "pn-small-q7zx.bin", "pn-loose-k3vw.bin", "pn-chunked-j8ty.bin"
SECRET_DIR = "private-pj5u"
NAMES = [SMALL.encode(), LOOSE.encode(), CHUNKED.encode(), SECRET_DIR.encode()]


def marked(size: int, copies: int = 1) -> bytes:
    """Incompressible bytes (so stored raw, where a grep could find them)
    with the marker at ``copies`` places (a chunk boundary may cut one)."""
    data = bytearray(os.urandom(size))
    for i in range(1, copies + 1):
        at = size * i // (copies + 1)
        data[at:at + len(MARKER)] = MARKER
    return bytes(data)


def new_tree(tmp_path: Path, config: StoreConfig | None = None) -> Path:
    """A tracked tree whose store keeps files of 64 KiB and up loose: the
    three ways content is stored (packed, loose, chunked) all at hand."""
    root = tmp_path / "tree"
    root.mkdir()
    config = config or StoreConfig(loose_min_size=64 << 10)
    password = b"pw" if config.encryption is not None else None
    Store.init(str(root / ".cas"), config, password=password).close()
    return root


def secret_files(root: Path) -> None:
    paths = [write(root / SECRET_DIR / SMALL, marked(3000)),          # packed
             write(root / SECRET_DIR / LOOSE, marked(200_000)),       # one loose object
             write(root / "notes" / CHUNKED, marked(3 << 20, 8))]     # a chunk list and chunks
    # Enough stat cache records to fill index pages of their own, which
    # LMDB keeps, freed, in its file: only compaction drops them.
    paths += [write(root / SECRET_DIR / "many" / f"f{i:03}", b"%d" % i) for i in range(300)]
    old = time.time() - 3600   # older than the racy window: the stat cache records them
    for p in paths:
        os.utime(p, (old, old))


def snap(cas, root: Path, *args: str) -> str:
    r = cas("snapshot", *args, cwd=root)
    assert r.code == 0, r.err
    return r.text.strip()


def history_with_secrets(tmp_path: Path, cas) -> tuple[Path, dict[str, str]]:
    """Secrets snapshotted on main (tagged), on a fork, and in a snapshot
    only recorded in history (no ref names it)."""
    root = new_tree(tmp_path)
    write(root / "keep" / "a.txt", b"kept a\n")
    write(root / "keep" / "big.bin", os.urandom(300_000))
    # Kept, and packed with the small secret: most of that pack stays live,
    # so gc alone would keep the pack whole, secret and all.
    for i in range(60):
        write(root / "keep" / "packed" / f"p{i}.bin", os.urandom(50_000))
    secret_files(root)
    ids = {"s1": snap(cas, root, "-m", "one")}
    write(root / "keep" / "a.txt", b"kept a, again\n")
    ids["s2"] = snap(cas, root, "-m", "two")
    assert cas("tag", "release", ids["s2"], cwd=root).code == 0
    assert cas("branch", "fork", ids["s1"], cwd=root).code == 0
    write(root / "keep" / "fork.txt", b"on the fork\n")
    ids["f1"] = snap(cas, root, "-b", "fork", "-m", "fork one")
    os.unlink(root / "keep" / "fork.txt")
    write(root / "keep" / "b.txt", b"kept b\n")
    ids["s3"] = snap(cas, root, "-b", "main", "-m", "three")
    assert cas("branch", "gone", ids["s3"], cwd=root).code == 0
    write(root / "keep" / "c.txt", b"only in history\n")
    ids["g1"] = snap(cas, root, "-b", "gone", "-m", "unnamed later")
    assert cas("branch", "-d", "gone", cwd=root).code == 0
    return root, ids


def store_files(store: Path) -> list[Path]:
    return [Path(d) / f for d, _, files in os.walk(store) for f in files]


def grep_store(store: Path, needles: list[bytes]) -> dict[str, list[str]]:
    """Which files under the store hold each needle (bytes, every file)."""
    found: dict[str, list[str]] = {}
    for path in store_files(store):
        data = path.read_bytes()
        for n in needles:
            if n in data:
                found.setdefault(n.decode(), []).append(str(path.relative_to(store)))
    return found


def tree_state(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".cas" not in p.parts}


def restored(cas, root: Path, spec: str, out: Path) -> dict[str, bytes]:
    r = cas("restore", spec, "--to", str(out), cwd=root)
    assert r.code == 0, r.err
    return tree_state(out)


def listed(cas, root: Path) -> list[dict]:
    return json.loads(cas("log", "--all", "--json", cwd=root).out)


@pytest.mark.plain_only
def test_purge_leaves_no_byte_of_the_paths_in_any_file(tmp_path, cas):
    root, ids = history_with_secrets(tmp_path, cas)
    store = root / ".cas"
    before = {s: restored(cas, root, i, tmp_path / f"before-{s}") for s, i in ids.items()}
    # Meaningful only if the store held them: packed, loose and chunked.
    found = grep_store(store, [MARKER, *NAMES])
    assert len(found[MARKER.decode()]) >= 3, found
    r = cas("purge", SECRET_DIR, f"notes/{CHUNKED}", cwd=root)
    assert r.code == 0, r.err
    assert "rewrite" in r.text and "refs/tags/release" in r.text
    left = grep_store(store, [MARKER, *NAMES])
    # The audit trail records which paths were purged (never their content).
    assert left.pop(MARKER.decode(), None) is None
    assert all(files == ["audit/log"] for files in left.values()), left
    log = (store / "audit" / "log").read_bytes().splitlines()
    assert b'"purge"' in log[-1] and SECRET_DIR.encode() in log[-1]
    assert cas_process("verify", "--full", cwd=root).returncode == 0
    # Everything else comes back bit for bit, from the same places in history.
    after = listed(cas, root)
    assert len(after) == len(ids)
    by_message = {e["message"]: e["id"] for e in after}
    for name, message in (("s1", "one"), ("s2", "two"), ("f1", "fork one"), ("s3", "three"),
                          ("g1", "unnamed later")):
        expect = {k: v for k, v in before[name].items()
                  if not k.startswith(SECRET_DIR) and k != f"notes/{CHUNKED}"}
        assert restored(cas, root, by_message[message], tmp_path / f"after-{name}") == expect


def test_history_keeps_its_shape(tmp_path, cas):
    root, _ = history_with_secrets(tmp_path, cas)
    old = {e["id"]: e for e in listed(cas, root)}
    assert cas("purge", SECRET_DIR, cwd=root).code == 0
    new = {e["message"]: e for e in listed(cas, root)}
    for entry in old.values():
        now = new[entry["message"]]
        assert now["id"] != entry["id"]
        for key in ("time", "branch"):
            assert now[key] == entry[key]
    shown = {m: json.loads(cas("show", "--json", e["id"], cwd=root).out) for m, e in new.items()}
    # Parents point at the new records: main's chain, the fork and the unnamed one.
    assert shown["two"]["parents"] == [new["one"]["id"]]
    assert shown["fork one"]["parents"] == [new["one"]["id"]]
    assert shown["three"]["parents"] == [new["two"]["id"]]
    assert shown["unnamed later"]["parents"] == [new["three"]["id"]]
    assert shown["one"]["stats"]["files"] == 63   # the secret directory's 302 files fewer
    for ref, message in (("main", "three"), ("fork", "fork one"), ("release", "two")):
        assert json.loads(cas("show", "--json", ref, cwd=root).out)["id"] == new[message]["id"]


@pytest.mark.plain_only
def test_content_kept_under_another_path_stays_and_is_named(tmp_path, cas):
    root = new_tree(tmp_path)
    secret = marked(5000)
    write(root / "secret.bin", secret)
    write(root / "copy" / "same.bin", secret)
    snap(cas, root, "-m", "one")
    r = cas("purge", "secret.bin", cwd=root)
    assert r.code == 0
    assert "secret.bin: its content stays" in r.err and "copy/same.bin" in r.err
    assert cas("cat", "HEAD:copy/same.bin", cwd=root).out == secret
    assert cas("cat", "HEAD:secret.bin", cwd=root).code != 0
    assert grep_store(root / ".cas", [MARKER])   # still held: live, so kept
    assert cas_process("verify", "--full", cwd=root).returncode == 0


def test_branch_only_leaves_other_branches(tmp_path, cas):
    root = new_tree(tmp_path)
    write(root / "s.bin", marked(4000))
    write(root / "k.txt", b"k")
    main = snap(cas, root, "-m", "main one")
    assert cas("branch", "side", main, cwd=root).code == 0
    write(root / "k.txt", b"k2")
    snap(cas, root, "-b", "side", "-m", "side one")
    r = cas("purge", "s.bin", "--branch", "side", "--json", cwd=root)
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert [w["branch"] for w in doc["rewritten"]] == ["side"]
    assert doc["kept"] and doc["kept"][0]["elsewhere"] == "s.bin"
    assert cas("cat", "main:s.bin", cwd=root).code == 0
    assert cas("cat", "side:s.bin", cwd=root).code != 0
    assert cas("cat", "side:k.txt", cwd=root).out == b"k2"


def test_dry_run_changes_nothing(tmp_path, cas):
    root, _ = history_with_secrets(tmp_path, cas)
    store = root / ".cas"
    files = {str(p): p.read_bytes() for p in store_files(store) if "audit" not in p.parts}
    r = cas("purge", SECRET_DIR, "--dry-run", cwd=root)
    assert r.code == 0 and "would rewrite" in r.text and "would move refs/heads/main" in r.text
    assert {str(p): p.read_bytes() for p in store_files(store) if "audit" not in p.parts} == files
    # The ids a dry run shows are the ones the purge then makes.
    planned = {line.split()[4] for line in r.text.splitlines() if line.startswith("would rewrite")}
    done = cas("purge", SECRET_DIR, cwd=root).text
    assert planned == {line.split()[3] for line in done.splitlines() if line.startswith("rewrite")}


def test_the_checked_out_snapshot_is_followed_to_its_new_record(tmp_path, cas):
    root = new_tree(tmp_path)
    write(root / "s.bin", marked(2000))
    write(root / "a.txt", b"1")
    s1 = snap(cas, root, "-m", "one")
    write(root / "a.txt", b"2")
    snap(cas, root, "-m", "two")
    assert cas("checkout", s1, cwd=root).code == 0
    r = cas("purge", "s.bin", "--json", cwd=root)
    new1 = next(w["new"] for w in json.loads(r.out)["rewritten"] if w["old"] == s1)
    # Status still compares with the checked-out snapshot, now its new record.
    status = json.loads(cas("status", "--json", cwd=root).out)
    assert new1 in json.dumps(status)


def test_bad_arguments_are_one_line_errors(tmp_path, cas):
    root = new_tree(tmp_path)
    write(root / "a.txt", b"a")
    snap(cas, root)
    for args in (["."], ["/"], ["a.txt", "--branch", "-x"], ["a.txt", "--branch", "a/b"],
                 ["a.txt", "--branch", "mian"]):
        r = cas("purge", *args, cwd=root)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, (args, r.err)
    r = cas("purge", "nothing-here", cwd=root)
    assert r.code == 0 and "in no recorded snapshot" in r.err
    assert cas("cat", "HEAD:a.txt", cwd=root).out == b"a"


def test_a_store_its_user_cannot_write_is_refused_in_one_line(cas):
    import tempfile
    top = Path(tempfile.mkdtemp(prefix="cas-purge-ro-"))   # reachable by another user
    try:
        root = new_tree(top)
        write(root / "a.txt", b"a")
        snap(cas, root)
        subprocess.run(["chown", "-R", "65534:65534", str(top)], check=True)
        subprocess.run(["chmod", "-R", "a-w", str(root / ".cas")], check=True)
        before = {str(p): p.read_bytes() for p in store_files(root / ".cas")}
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-m", "cas.cli", "purge", "a.txt"], cwd=root,
                           capture_output=True)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert b"cannot write to the store" in r.stderr
        assert {str(p): p.read_bytes() for p in store_files(root / ".cas")} == before
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=True)
        shutil.rmtree(top)


def test_purge_waits_for_no_one(tmp_path, cas):
    """Purge takes the store's exclusive lock: a reader holding the store
    makes it fail at once, having changed nothing."""
    root = new_tree(tmp_path)
    write(root / "a.txt", b"a")
    snap(cas, root)
    with Store.open(str(root / ".cas")):
        r = cas_process("purge", "a.txt", cwd=root)
    assert r.returncode != 0 and b"Traceback" not in r.stderr
    assert cas("cat", "HEAD:a.txt", cwd=root).out == b"a"


def many_snapshots(tmp_path: Path, cas, count: int, config: StoreConfig | None = None) -> Path:
    root = new_tree(tmp_path, config)
    secret_files(root)
    for i in range(count):
        write(root / "keep" / f"f{i % 7}.txt", f"version {i}\n".encode() * 50)
        write(root / "keep" / f"blob{i}.bin", os.urandom(20_000))
        snap(cas, root, "-m", f"s{i}")
        if i % 5 == 0:
            assert cas("tag", f"t{i}", cwd=root).code == 0
    return root


def recorded(root: Path, password: bytes | None) -> dict[str, set[str]]:
    """The ids of the recorded snapshots by message, read from the records."""
    from cas.model.history import History
    found: dict[str, set[str]] = {}
    with Store.open(str(root / ".cas"), password=password) as s:
        for snapshot in History(s).snapshots():
            found.setdefault(snapshot.message, set()).add(snapshot.stored_id.hex)
    return found


@pytest.mark.parametrize("encrypted", [
    False, pytest.param(True, marks=pytest.mark.skipif("not _sealed_objects()"))])
def test_sigkill_during_purge_leaves_a_store_that_verifies_and_purge_finishes(
        tmp_path, cas, monkeypatch, encrypted):
    config, password, env = StoreConfig(loose_min_size=64 << 10), None, dict(os.environ)
    if encrypted:
        from cas.storage.config import ENCRYPTION
        config = StoreConfig(loose_min_size=64 << 10, encryption=dict(ENCRYPTION))
        password, env["CAS_PASSWORD"] = b"pw", "pw"
        monkeypatch.setenv("CAS_PASSWORD", "pw")
    root = many_snapshots(tmp_path, cas, 20 if encrypted else 30, config)
    pristine = tmp_path / "pristine"
    shutil.copytree(root / ".cas", pristine, symlinks=True)
    expected = {m: tree_state_of(cas, root, i, tmp_path / f"x-{m}")
                for m, (i,) in recorded(root, password).items()}
    purge = [sys.executable, "-m", "cas.cli", "purge", SECRET_DIR, f"notes/{CHUNKED}"]
    t0 = time.monotonic()
    assert subprocess.run(purge, cwd=root, env=env, capture_output=True).returncode == 0
    duration = time.monotonic() - t0
    rng = random.Random(14)
    killed = 0
    for attempt in range(3 if encrypted else 5):
        shutil.rmtree(root / ".cas")
        shutil.copytree(pristine, root / ".cas", symlinks=True)
        proc = subprocess.Popen(purge, cwd=root, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # Early in the run more often than not: a busy machine may make it
        # faster or slower than the timed run, and a kill that comes after
        # the end tests nothing.
        time.sleep(rng.uniform(0.1, max(0.2, duration * 0.6)))
        killed += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        v = cas_process("verify", "--full", cwd=root, env=env)
        assert v.returncode == 0, (attempt, v.stdout, v.stderr)
        # Every snapshot is still recorded (old record, new one, or both).
        assert set(recorded(root, password)) == set(expected)
        r = subprocess.run(purge, cwd=root, env=env, capture_output=True)
        assert r.returncode == 0, r.stderr
        assert cas_process("verify", "--full", cwd=root, env=env).returncode == 0
        left = grep_store(root / ".cas", [MARKER, *NAMES])
        assert all(files == ["audit/log"] for files in left.values()), (attempt, left)
        after = recorded(root, password)
        assert set(after) == set(expected) and all(len(i) == 1 for i in after.values())
        message = rng.choice(sorted(after))
        assert tree_state_of(cas, root, after[message].pop(), tmp_path / f"y{attempt}") == \
            expected[message]
    assert killed >= 2, killed


def tree_state_of(cas, root: Path, spec: str, out: Path) -> dict[str, bytes]:
    state = restored(cas, root, spec, out)
    return {k: v for k, v in state.items()
            if not k.startswith(SECRET_DIR) and k != f"notes/{CHUNKED}"}


def _sealed_objects() -> bool:
    """Whether objects in an encrypted store are written sealed yet."""
    try:
        from cas.storage.config import ENCRYPTION
    except ImportError:
        return False
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        try:
            with Store.init(os.path.join(d, ".cas"), StoreConfig(encryption=dict(ENCRYPTION)),
                            password=b"pw") as s, s.writer() as w:
                w.put_bytes(MARKER * 4)
                w.flush()
        except Exception:   # the data path is half built: not yet
            return False
        return not grep_store(Path(d) / ".cas", [MARKER])


def purged_ids(tmp_path: Path) -> list[bytes]:
    """The plain BLAKE3 of each purged file, hex and raw (as a copy of the
    files hashes them)."""
    from cas.objectid import hash_bytes
    copy = tmp_path / "copies"
    ids = [hash_bytes(p.read_bytes()) for p in sorted(copy.rglob("*")) if p.is_file()]
    return [i.hex.encode() for i in ids] + [i.digest for i in ids]


@pytest.mark.skipif(not _sealed_objects(), reason="objects are not sealed in encrypted stores yet")
def test_purge_in_an_encrypted_store(tmp_path, cas, monkeypatch):
    from cas.storage.config import ENCRYPTION
    monkeypatch.setenv("CAS_PASSWORD", "pw")
    root = new_tree(tmp_path, StoreConfig(loose_min_size=64 << 10, encryption=dict(ENCRYPTION)))
    write(root / "keep.txt", b"kept\n")
    secret_files(root)
    shutil.copytree(root, tmp_path / "copies", ignore=shutil.ignore_patterns(".cas", "keep.txt"))
    snap(cas, root, "-m", "one")
    write(root / "keep.txt", b"kept, again\n")
    snap(cas, root, "-m", "two")
    assert cas("tag", "t", cwd=root).code == 0
    assert grep_store(root / ".cas", [MARKER]) == {}   # sealed from the start
    r = cas("purge", SECRET_DIR, f"notes/{CHUNKED}", "--json", cwd=root)
    assert r.code == 0, r.err
    rewritten = sorted(json.loads(r.out)["rewritten"], key=lambda w: w["time_ns"])
    assert [w["paths"] for w in rewritten] == [[f"notes/{CHUNKED}", SECRET_DIR]] * 2
    # Not a name, not an id of the purged content, in any file.
    assert not grep_store(root / ".cas", [MARKER, *NAMES, *purged_ids(tmp_path)])
    first, second = (w["new"] for w in rewritten)
    assert cas("cat", "HEAD:keep.txt", cwd=root).out == b"kept, again\n"
    assert cas("cat", f"{second}:keep.txt", cwd=root).out == b"kept, again\n"
    assert cas("cat", f"{first}:keep.txt", cwd=root).out == b"kept\n"
    assert cas("cat", f"{first}:{SECRET_DIR}/{SMALL}", cwd=root).code != 0
    assert cas_process("verify", "--full", cwd=root, env={"CAS_PASSWORD": "pw"}).returncode == 0
