"""cas copy: a store's whole history into another store, plain or encrypted,
keeping snapshot ids; only what the target lacks; refs last; killable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cas.objectid import hash_bytes
from cas.storage.config import ENCRYPTION, StoreConfig
from cas.storage.store import Store

from .conftest import cas_process, stderr_on_a_pty
from .test_models_trust import make_model_dir

MARKER = "MARKER-copy-7d2e-at-rest"
SECRET_NAME = "diary-of-a-copy.txt"
OLD_PW, NEW_PW = "old passphrase 1", "new passphrase 2"
MODEL = "tiny-secret-model"
OTHER = "other-secret-tree"


# -- a source store with some history -------------------------------------------


def write_corpus(root: Path, version: int) -> None:
    """Files of every kind a store cuts differently: small text, a log cut
    by name, a chunked random file, a symlink, an empty directory."""
    (root / "sub" / "empty").mkdir(parents=True, exist_ok=True)
    (root / SECRET_NAME).write_text(f"{MARKER} version {version}\n")
    (root / "sub" / "events.jsonl").write_text(
        "".join(json.dumps({"n": i, "v": version, "m": MARKER}) + "\n" for i in range(3000 + version)))
    big = bytearray(os.urandom(1 << 20)) * 2 + MARKER.encode()
    big[version] = version
    (root / "sub" / "big.bin").write_bytes(bytes(big))
    if not (root / "link").is_symlink():
        (root / "link").symlink_to(SECRET_NAME)


@pytest.fixture
def cli(cas, monkeypatch):
    """The in-process CLI with passphrases in the environment: OLD's in
    CAS_FROM_PASSWORD, the target's in CAS_PASSWORD."""
    monkeypatch.setenv("CAS_PASSWORD", NEW_PW)
    monkeypatch.setenv("CAS_FROM_PASSWORD", OLD_PW)

    def invoke(*args, password: str | None = None):
        if password is not None:
            monkeypatch.setenv("CAS_PASSWORD", password)
        try:
            return cas(*args)
        finally:
            monkeypatch.setenv("CAS_PASSWORD", NEW_PW)
    return invoke


def make_store(cli, path: Path, encrypted: bool, password: str) -> None:
    args = ["--store", str(path), "init"] + (["--encrypt"] if encrypted else [])
    result = cli(*args, password=password)
    assert result.code == 0, result.err


def make_history(cli, tmp_path: Path, encrypted: bool = False) -> Path:
    """OLD: three snapshots of a data tree on main, one of a second tree
    on its own branch, a tag, a policy, two versions of a model."""
    old = tmp_path / "old-store"
    make_store(cli, old, encrypted, OLD_PW)
    data, other = tmp_path / "data", tmp_path / OTHER
    data.mkdir()
    other.mkdir()
    (other / "notes.txt").write_text(f"{MARKER} other\n")
    s = ["--store", str(old)]
    for version in range(3):
        write_corpus(data, version)
        assert cli(*s, "snapshot", str(data), "-m", f"v{version}", password=OLD_PW).code == 0
        if version == 1:
            assert cli(*s, "tag", "first", "data", password=OLD_PW).code == 0
    assert cli(*s, "snapshot", str(other), "-m", "other", password=OLD_PW).code == 0
    assert cli(*s, "policy", "set", "--branch", "data", "--keep-daily", "7",
               password=OLD_PW).code == 0
    for seed in (1, 2):
        src = make_model_dir(tmp_path / f"model-{seed}", seed=seed)
        assert cli(*s, "model", "import", str(src), "--name", MODEL,
                   password=OLD_PW).code == 0, "import"
    return old


def state(cli, store: Path, password: str) -> dict:
    """Everything a copy must keep, as the CLI shows it."""
    s = ["--store", str(store)]
    shown = {}
    for what in (["log", "--all", "--json"], ["tag", "--json"], ["branch", "--json"],
                 ["policy", "show", "--json"], ["model", "log", MODEL, "--json"]):
        result = cli(*s, *what, password=password)
        assert result.code == 0, (what, result.err)
        shown[" ".join(what)] = _without_paths(json.loads(result.out), str(store))
    for version in shown[f"model log {MODEL} --json"]:
        version.pop("stored_bytes")   # what its files take on this disk: sealing adds some
    return shown


def _without_paths(doc, store: str):
    """A listing with the store's own path taken out (it names itself)."""
    text = json.dumps(doc, sort_keys=True).replace(store, "STORE")
    return json.loads(text)


def restored(cli, store: Path, snap: str, to: Path, password: str) -> dict:
    result = cli("--store", str(store), "restore", snap, "--to", str(to), password=password)
    assert result.code == 0, result.err
    found = {}
    for dirpath, dirnames, filenames in os.walk(to):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(to))
            if p.is_symlink():
                found[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                found[rel] = ("dir", p.stat().st_mode & 0o7777)
            else:
                found[rel] = ("file", p.read_bytes(), p.stat().st_mode & 0o7777, p.stat().st_mtime_ns)
    return found


def snapshot_ids(cli, store: Path, password: str) -> list[str]:
    result = cli("--store", str(store), "log", "--all", "--json", password=password)
    return [e["id"] for e in json.loads(result.out)]


def assert_same_history(cli, old: Path, new: Path, tmp_path: Path, old_pw: str, new_pw: str) -> None:
    assert state(cli, new, new_pw) == state(cli, old, old_pw)
    ids = snapshot_ids(cli, old, old_pw)
    assert len(ids) == 6 and snapshot_ids(cli, new, new_pw) == ids
    for n, snap in enumerate(ids):
        want = restored(cli, old, snap, tmp_path / f"want-{n}", old_pw)
        assert restored(cli, new, snap, tmp_path / f"got-{n}", new_pw) == want
    result = cli("--store", str(new), "verify", "--full", password=new_pw)
    assert result.code == 0, result.err + result.text


def copy(cli, old: Path, new: Path, *more: str):
    return cli("--store", str(new), "copy", "--from", str(old), *more)


# -- plain to plain ---------------------------------------------------------------


def test_copy_keeps_every_snapshot_ref_policy_and_model(cli, tmp_path):
    old = make_history(cli, tmp_path)
    new = tmp_path / "new-store"
    make_store(cli, new, False, NEW_PW)
    result = copy(cli, old, new, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["snapshots"] == 6 and doc["refused"] == [] and doc["head"] == "data"
    assert sorted(doc["refs"]) == ["refs/heads/data", f"refs/heads/{OTHER}", "refs/models/" + MODEL,
                                   "refs/tags/first"]
    assert doc["policies"] == ["data"]
    assert_same_history(cli, old, new, tmp_path, OLD_PW, NEW_PW)
    # Copied records keep the old store's audit heads; each log still verifies.
    for store in (old, new):
        result = cli("--store", str(store), "audit", "verify")
        assert result.code == 0, result.err + result.text


def test_models_load_from_the_copy(cli, tmp_path):
    mlx = pytest.importorskip("cas.mlx")
    old = make_history(cli, tmp_path)
    new = tmp_path / "new-store"
    make_store(cli, new, False, NEW_PW)
    assert copy(cli, old, new).code == 0
    for spec in (MODEL, MODEL + "@1"):
        want = mlx.load_weights(spec, store=str(old))
        got = mlx.load_weights(spec, store=str(new))
        assert sorted(got) == sorted(want)
        for k in want:
            assert bytes(memoryview(got[k])) == bytes(memoryview(want[k]))
    # Weights stay raw and whole, as an import stores them: readable in place.
    with Store.open(str(new)) as store:
        from cas.model.history import History
        from cas.ops.models import resolve_model
        files = resolve_model(History(store), MODEL).manifest.files
        weights = [f for f in files if f.path.endswith(".safetensors")]
        assert weights and all(store.plain_path(f.id) is not None for f in weights)


def test_a_second_copy_writes_nothing_and_is_cheap(cli, tmp_path):
    old = make_history(cli, tmp_path)
    new = tmp_path / "new-store"
    make_store(cli, new, False, NEW_PW)
    started = time.perf_counter()
    assert copy(cli, old, new).code == 0
    first = time.perf_counter() - started
    started = time.perf_counter()
    result = copy(cli, old, new, "--json")
    again = time.perf_counter() - started
    doc = json.loads(result.out)
    assert result.code == 0 and doc["objects"] == 0 and doc["snapshots"] == 0
    assert doc["snapshots_present"] == 6 and doc["refs"] == [] and doc["policies"] == []
    print(f"first copy {first:.3f} s, second {again:.3f} s")
    assert again < first


def test_a_new_snapshot_moves_a_branch_forward_and_only_what_is_new_is_copied(cli, tmp_path):
    old = make_history(cli, tmp_path)
    new = tmp_path / "new-store"
    make_store(cli, new, False, NEW_PW)
    assert copy(cli, old, new).code == 0
    (tmp_path / "data" / "added.txt").write_text("one more file\n")
    assert cli("--store", str(old), "snapshot", str(tmp_path / "data"), "-m", "v3",
               password=OLD_PW).code == 0
    result = copy(cli, old, new, "--json")
    doc = json.loads(result.out)
    assert result.code == 0 and doc["snapshots"] == 1 and doc["refs"] == ["refs/heads/data"]
    assert doc["objects"] <= 3     # the new file, its tree, the manifest
    assert snapshot_ids(cli, new, NEW_PW) == snapshot_ids(cli, old, OLD_PW)


def test_refs_that_differ_are_refused_by_name_unless_forced(cli, tmp_path):
    old = make_history(cli, tmp_path)
    new = tmp_path / "new-store"
    make_store(cli, new, False, NEW_PW)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "x").write_text("the target's own\n")
    s = ["--store", str(new)]
    assert cli(*s, "snapshot", str(mine), "--branch", "data", "-m", "own").code == 0
    assert cli(*s, "tag", "first", "data").code == 0
    assert cli(*s, "policy", "set", "--branch", "data", "--keep-last", "2").code == 0
    own_head = json.loads(cli(*s, "branch", "--json").out)
    result = copy(cli, old, new)
    assert result.code == 1
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert "refs/heads/data" in result.err and "refs/tags/first" in result.err
    assert "policies/data" in result.err and "--force" in lines[-1]
    # Every snapshot was copied all the same; the refused refs stayed.
    assert set(snapshot_ids(cli, old, OLD_PW)) <= set(snapshot_ids(cli, new, NEW_PW))
    assert json.loads(cli(*s, "branch", "--json").out)[0] == own_head[0]
    result = copy(cli, old, new, "--force", "--json")
    assert result.code == 0, result.err
    assert set(json.loads(result.out)["refs"]) == {"refs/heads/data", "refs/tags/first"}
    assert state(cli, new, NEW_PW)["tag --json"] == state(cli, old, OLD_PW)["tag --json"]
    assert cli(*s, "verify", "--full").code == 0


def test_head_is_set_when_the_target_has_none(cli, tmp_path):
    old = make_history(cli, tmp_path)
    assert cli("--store", str(old), "branch", "--switch", OTHER, password=OLD_PW).code == 0
    new = tmp_path / "new-store"
    make_store(cli, new, False, NEW_PW)
    doc = json.loads(copy(cli, old, new, "--json").out)
    assert doc["head"] == OTHER
    heads = [b for b in json.loads(cli("--store", str(new), "branch", "--json").out) if b["head"]]
    assert [b["branch"] for b in heads] == [OTHER]
    # A target whose HEAD names a branch it has keeps it.
    assert cli("--store", str(old), "branch", "--switch", "data", password=OLD_PW).code == 0
    assert json.loads(copy(cli, old, new, "--json").out)["head"] is None


def test_a_copy_on_a_terminal_shows_a_bar(cli, tmp_path):
    old = make_history(cli, tmp_path)
    new = tmp_path / "new-store"
    make_store(cli, new, False, NEW_PW)
    shown = stderr_on_a_pty(["--store", str(new), "copy", "--from", str(old)], tmp_path)
    assert "copying" in shown and "copied 6 snapshots" in shown


@pytest.mark.parametrize("args, code, words", [
    (["--from", "MISSING"], 2, "no cas store"),
    (["--from", "SELF"], 2, "both the source and the target"),
])
def test_bad_input_is_one_line(cli, tmp_path, args, code, words):
    new = tmp_path / "new-store"
    make_store(cli, new, False, NEW_PW)
    args = [str(tmp_path / "nowhere") if a == "MISSING" else str(new) if a == "SELF" else a
            for a in args]
    result = cli("--store", str(new), "copy", *args)
    assert result.code == code and words in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def _sealed_objects() -> bool:
    """Whether objects written to an encrypted store are sealed yet."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        config = StoreConfig(encryption=dict(ENCRYPTION))
        with Store.init(os.path.join(d, "s"), config, password=b"probe") as store:
            store.put_bytes(b"probe-marker-4711" * 10)
        return not any(b"probe-marker-4711" in p.read_bytes()
                       for p in Path(d).rglob("*") if p.is_file())


needs_sealing = pytest.mark.skipif(not _sealed_objects(), reason="objects are not sealed yet")


# -- killed -------------------------------------------------------------------------


def _sizable_source(cli, tmp_path: Path) -> Path:
    """A source whose copy takes long enough to be killed at many points."""
    old = make_history(cli, tmp_path)
    bulk = tmp_path / "bulk"
    for n in range(24):
        (bulk / f"d{n % 5}").mkdir(parents=True, exist_ok=True)
        (bulk / f"d{n % 5}" / f"f{n}.bin").write_bytes(os.urandom((1 << 20) + n))
    assert cli("--store", str(old), "snapshot", str(bulk), "-m", "bulk", password=OLD_PW).code == 0
    return old


def _kill_when(proc: subprocess.Popen, ready, limit: float = 60.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; whether it was killed."""
    deadline = time.monotonic() + limit
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    return proc.wait() == -signal.SIGKILL


def _has_entries(directory: Path) -> bool:
    try:
        return any(True for _ in os.scandir(directory))
    except OSError:
        return False


def refs_name_records(store_path: Path) -> bool:
    """Whether every branch, tag and model of a store names a recorded snapshot."""
    from cas.model.history import History
    with Store.open(str(store_path), password=NEW_PW.encode()) as store:
        history = History(store)
        refs = {**history.refs.branches(), **history.refs.tags(), **history.refs.models()}
        return all(history.is_recorded(oid) for oid in refs.values())


def plaintext_in(root: Path, needles: list[bytes]) -> list[str]:
    """Files below ``root`` whose name or bytes hold one of ``needles``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            data = p.read_bytes() if name in filenames and not p.is_symlink() else b""
            found += [str(p) for n in needles if n in str(p.relative_to(root)).encode() or n in data]
    return found


@pytest.mark.parametrize("encrypted", [False, pytest.param(True, marks=needs_sealing)])
def test_sigkill_at_any_point_leaves_the_target_opening_and_verifying(cli, tmp_path, encrypted):
    old = _sizable_source(cli, tmp_path)
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    env = {**os.environ, "CAS_PASSWORD": NEW_PW, "CAS_FROM_PASSWORD": OLD_PW, "TMPDIR": str(system_tmp)}
    probe = tmp_path / "probe"
    make_store(cli, probe, encrypted, NEW_PW)
    started = time.perf_counter()
    assert cas_process("--store", str(probe), "copy", "--from", str(old), cwd=tmp_path,
                       env=env).returncode == 0
    whole = time.perf_counter() - started
    points = [("a temp file in tmp/", lambda new: _has_entries(new / "tmp")),
              ("the first snapshot record", lambda new: _has_entries(new / "snapshots")),
              ("the first ref", lambda new: _has_entries(new / "refs" / "heads"))]
    points += [(f"{f:.0%} of the time", lambda new, f=f, t=time.monotonic: t() - begun[0] > whole * f)
               for f in ((0.5,) if encrypted else (0.3, 0.5, 0.7, 0.9))]
    killed = []
    begun = [0.0]
    for n, (when, ready) in enumerate(points):
        new = tmp_path / f"new-{n}"
        make_store(cli, new, encrypted, NEW_PW)
        begun[0] = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "cas.cli", "--store", str(new), "copy",
                                 "--from", str(old)], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if _kill_when(proc, lambda new=new, ready=ready: ready(new)):
            killed.append(when)
        if encrypted:   # temp files included, and nothing in the system's temp directory
            assert plaintext_in(new, [MARKER.encode(), SECRET_NAME.encode()]) == [], when
            assert list(system_tmp.iterdir()) == [], when
        _check_and_finish(cli, old, new, when)
    # The three moments of write ordering are always hit; the timed ones when
    # the machine's load lets them land before the end.
    assert killed[:3] == [p for p, _ in points[:3]] and len(killed) >= (3 if encrypted else 4), killed


def _check_and_finish(cli, old: Path, new: Path, when: str) -> None:
    """A killed copy's target verifies, its refs name records, its log
    reads; running the copy again completes it."""
    s = ["--store", str(new)]
    result = cli(*s, "verify", "--full")
    assert result.code == 0, (when, result.err, result.text)
    assert refs_name_records(new), when
    assert cli(*s, "log", "--all").code == 0
    assert copy(cli, old, new).code == 0
    assert snapshot_ids(cli, new, NEW_PW) == snapshot_ids(cli, old, OLD_PW)
    assert cli(*s, "verify", "--full").code == 0


# -- encrypted stores --------------------------------------------------------------


@needs_sealing
@pytest.mark.parametrize("old_encrypted, new_encrypted", [(False, True), (True, False), (True, True)])
def test_round_trips_between_plain_and_encrypted_stores(cli, tmp_path, old_encrypted, new_encrypted):
    old = make_history(cli, tmp_path, encrypted=old_encrypted)
    new = tmp_path / "new-store"
    make_store(cli, new, new_encrypted, NEW_PW)
    result = copy(cli, old, new)
    assert result.code == 0, result.err
    assert_same_history(cli, old, new, tmp_path, OLD_PW, NEW_PW)
    mlx = pytest.importorskip("cas.mlx")
    from cas.storage import keys
    keys.set_password_source(NEW_PW.encode())
    try:
        got = mlx.load_weights(MODEL + "@1", store=str(new))
    finally:
        keys.set_password_source(None)
    assert sorted(got) == ["b", "w"]


def _copy_process(new: Path, old: Path, cwd: Path, env: dict, *more: str):
    """``cas copy`` in a new process (this one holds OLD's unlocked key),
    with exactly the passphrase variables of ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CAS_PASSWORD", "CAS_FROM_"))}
    return subprocess.run([sys.executable, "-m", "cas.cli", "--store", str(new), "copy", "--from",
                           str(old), *more], cwd=cwd, env={**full, **env}, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=120)


@needs_sealing
@pytest.mark.parametrize("source_env, words", [
    ({"CAS_FROM_PASSWORD": "not it"}, "wrong passphrase"),
    ({}, "CAS_FROM_PASSWORD"),
    ({"CAS_FROM_PASSWORD_COMMAND": "false"}, "CAS_FROM_PASSWORD_COMMAND"),
])
def test_no_or_a_wrong_source_passphrase_is_one_line_and_writes_nothing(cli, tmp_path, source_env,
                                                                       words):
    old = make_history(cli, tmp_path, encrypted=True)
    new = tmp_path / "new-store"
    make_store(cli, new, True, NEW_PW)
    before = sorted(p for p in new.rglob("*") if "audit" not in str(p))
    result = _copy_process(new, old, tmp_path, {"CAS_PASSWORD": NEW_PW, **source_env})
    err = result.stderr.decode()
    assert result.returncode == 2 and words in err, err
    assert len(err.strip().splitlines()) == 1 and result.stdout == b""
    assert sorted(p for p in new.rglob("*") if "audit" not in str(p)) == before


@needs_sealing
def test_the_source_passphrase_from_a_file(cli, tmp_path):
    old = make_history(cli, tmp_path, encrypted=True)
    new = tmp_path / "new-store"
    make_store(cli, new, False, NEW_PW)
    secret = tmp_path / "old-passphrase"
    secret.write_text(OLD_PW + "\n")
    result = _copy_process(new, old, tmp_path, {}, "--from-password-file", str(secret))
    assert result.returncode == 0, result.stderr
    assert snapshot_ids(cli, new, NEW_PW) == snapshot_ids(cli, old, OLD_PW)


@needs_sealing
def test_after_plain_to_encrypted_no_file_of_the_target_holds_plaintext(cli, tmp_path):
    old = make_history(cli, tmp_path)
    new = tmp_path / "new-store"
    make_store(cli, new, True, NEW_PW)
    assert copy(cli, old, new).code == 0
    needles = {"marker": MARKER.encode(), "file name": SECRET_NAME.encode(),
               "log name": b"events.jsonl", "branch": OTHER.encode(), "model": MODEL.encode()}
    for dirpath, _, filenames in os.walk(tmp_path / "data"):
        for name in filenames:
            p = Path(dirpath, name)
            if not p.is_symlink():
                oid = hash_bytes(p.read_bytes())
                needles[f"id of {name} (hex)"] = oid.hex.encode()
                needles[f"id of {name} (raw)"] = oid.digest
    for snap in snapshot_ids(cli, old, OLD_PW):
        needles[f"snapshot {snap}"] = snap.encode()
        needles[f"snapshot {snap} (raw)"] = bytes.fromhex(snap)
    found = []
    for dirpath, dirnames, filenames in os.walk(new):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(new)).encode()
            found += [f"{p}: name holds {w}" for w, n in needles.items() if n in rel]
            if name in filenames and not p.is_symlink():
                data = p.read_bytes()
                found += [f"{p}: holds {w}" for w, n in needles.items() if n in data]
    assert found == []


@needs_sealing
def test_a_public_model_stays_public_in_an_encrypted_copy(cli, tmp_path):
    old = tmp_path / "old-store"
    make_store(cli, old, False, OLD_PW)
    src = make_model_dir(tmp_path / "model-pub", seed=5)
    s = ["--store", str(old)]
    assert cli(*s, "model", "import", str(src), "--name", "pub", "--public").code == 0
    assert cli(*s, "model", "import", str(make_model_dir(tmp_path / "model-priv", seed=6)),
               "--name", MODEL).code == 0
    new = tmp_path / "new-store"
    make_store(cli, new, True, NEW_PW)
    assert copy(cli, old, new).code == 0
    # The public weights lie raw in the copy, readable in place; the other
    # model's are sealed, so it has no plain directory.
    weights = (src / "model.safetensors").read_bytes()
    assert any(p.read_bytes() == weights for p in (new / "objects").rglob("*") if p.is_file())
    assert cli("--store", str(new), "model", "path", "pub").code == 0
    refused = cli("--store", str(new), "model", "path", MODEL)
    assert refused.code != 0 and "encrypted" in refused.err
    assert cli("--store", str(new), "verify", "--full").code == 0


@pytest.mark.parametrize("new_encrypted", [False, True])
def test_content_past_the_memory_bound_is_streamed_and_copied_whole(cli, tmp_path, monkeypatch,
                                                                    new_encrypted):
    """With the bound below every large file, chunked data files and whole
    model weights are streamed from an encrypted OLD (no raw file to read)
    rather than held in memory: the copy is the same history all the same."""
    from cas.ops import copy as copy_module
    monkeypatch.setattr(copy_module, "MEMORY_FILE_MAX", 64 << 10)
    old = make_history(cli, tmp_path, encrypted=True)
    new = tmp_path / "new-store"
    make_store(cli, new, new_encrypted, NEW_PW)
    streamed = []
    for name in ("put_chunks", "put_stream"):
        real = getattr(copy_module.ObjectWriter, name)

        def spy(self, blocks, _real=real, _name=name):
            streamed.append(_name)
            return _real(self, blocks)
        monkeypatch.setattr(copy_module.ObjectWriter, name, spy)
    assert copy(cli, old, new).code == 0
    assert {"put_chunks", "put_stream"} <= set(streamed)
    assert_same_history(cli, old, new, tmp_path, OLD_PW, NEW_PW)
