"""The store itself under hostile or odd conditions: long paths, other local
users, read-only media, crafted config and chunk lists, a full disk at the
index commit, stores named by their own directory.

Every test runs the real ``cas`` in a subprocess (as root, and where it
matters as the unprivileged user 65534 through ``setpriv``) against real
files, a real LMDB index and, for read-only and full disks, a real tmpfs.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from cas.errors import ObjectDamaged, StoreWriteError
from cas.objectid import hash_bytes
from cas.storage.chunklist import ChunkList
from cas.storage.encoding import Encoding
from cas.storage.index import Index
from cas.storage.store import Store, find_store, locate_store

from .conftest import write

ROOT = os.geteuid() == 0
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (setpriv, mount)")


def cas(*args: str, cwd: Path, umask: int | None = None, as_nobody: bool = False,
        timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cas.cli", *args]
    if as_nobody:
        cmd = NOBODY + cmd
    full_env = {k: v for k, v in os.environ.items() if k != "CAS_STORE"}
    full_env.update(env or {})
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, timeout=timeout,
                          preexec_fn=preexec)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode()
    assert "Traceback" not in err and r.returncode in (1, 2), (r.returncode, err)
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def public_tmp():
    """A directory every user can reach (pytest's own is root-only, which would
    hide what a store's own modes let other users do)."""
    path = Path(tempfile.mkdtemp(prefix="cas-trust-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    subprocess.run(["chmod", "-R", "u+rwx", str(path)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


# -- item 4: keys of any length in the index -----------------------------------------------


def make_deep_file(root: Path, total: int, data: bytes) -> str:
    """A file about ``total`` bytes of path below ``root``, through directories
    of 255-byte names; made with directory fds, since the absolute path may
    be longer than PATH_MAX. Returns its path relative to ``root``."""
    names = []
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while sum(len(n) + 1 for n in names) < total - 520:
            name = f"{len(names):03d}" + "d" * 252
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
            names.append(name)
        names.append("f" * 200)
        out = os.open(names[-1], os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, data)
        os.close(out)
        # Older than the scan's clock tick, so the stat cache may trust it.
        os.utime(names[-1], (1_600_000_000, 1_600_000_000), dir_fd=fd)
    finally:
        os.close(fd)
    return "/".join(names)


def test_a_4000_byte_path_is_snapshotted_cached_and_survives_an_index_rebuild(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    rel = make_deep_file(tree, 4000, b"deep content\n")
    assert 3700 < len(rel) < 4000
    write(tree / "short.txt", b"short\n")
    assert cas("init", cwd=tree).returncode == 0
    first = cas("snapshot", cwd=tree)
    assert first.returncode == 0, first.stderr
    assert b"2 read" in first.stderr + first.stdout
    # The second run finds the deep file in the stat cache: only the changed one is read.
    write(tree / "short.txt", b"changed\n")
    second = cas("snapshot", cwd=tree)
    assert second.returncode == 0, second.stderr
    assert b"2 files" in second.stderr and b"1 read" in second.stderr, second.stderr
    assert cas("cat", f"HEAD:{rel}", cwd=tree).stdout == b"deep content\n"
    rebuilt = cas("index", "rebuild", cwd=tree)
    assert rebuilt.returncode == 0, rebuilt.stderr
    third = cas("snapshot", cwd=tree)
    assert third.returncode == 0, third.stderr
    assert cas("cat", f"HEAD:{rel}", cwd=tree).stdout == b"deep content\n"


def test_index_tables_take_keys_of_any_length_and_scan_them_in_order(store):
    index = store.index
    keys = [b"b\0" + b"x" * n for n in (1, 400, 510, 511, 512, 600, 4096)] + \
           [b"b\0" + b"x" * 600 + b"y", b"a\0" + b"z" * 5000, b"c\0short"]
    index.update(b"statcache", put=[(k, b"v" + k[-8:]) for k in keys] + [(b"", b"empty")])
    for k in keys:
        assert index.get(b"statcache", k) == b"v" + k[-8:]
    assert index.get(b"statcache", b"") == b"empty"
    assert index.get(b"statcache", b"b\0" + b"x" * 700) is None
    scanned = index.scan(b"statcache", b"b\0")
    assert [k for k, _ in scanned] == sorted(k for k in keys if k.startswith(b"b\0"))
    long_prefix = b"b\0" + b"x" * 600
    assert [k for k, _ in index.scan(b"statcache", long_prefix)] == \
        [b"b\0" + b"x" * 600, b"b\0" + b"x" * 4096, b"b\0" + b"x" * 600 + b"y"]
    # Other tables do not see these keys.
    assert index.scan(b"snapshots") == []
    index.update(b"statcache", delete=[b"b\0" + b"x" * 4096, b"a\0" + b"z" * 5000])
    assert index.get(b"statcache", b"b\0" + b"x" * 4096) is None
    index.clear(b"statcache", b"b\0")
    assert [k for k, _ in index.scan(b"statcache")] == [b"", b"c\0short"]


# -- item 9: a private store, whatever the umask ------------------------------------------


def modes_below(root: Path) -> dict[str, int]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def make_history(tree: Path, umask: int, *init_args: str) -> Path:
    write(tree / "small.txt", b"small\n")
    write(tree / "big.bin", os.urandom(3 << 20))   # chunked: a chunk list file in objects/
    write(tree / "secret", b"root only\n").chmod(0o600)
    for args in (("init", *init_args), ("snapshot", "-m", "one"), ("tag", "first")):
        r = cas(*args, cwd=tree, umask=umask)
        assert r.returncode == 0, r.stderr
    return tree / ".cas"


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_store_is_private_whatever_the_umask(tmp_path, umask):
    store = make_history(tmp_path / "tree", umask)
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    modes = modes_below(store)
    assert any(p.startswith("packs/") and p.endswith(".pack") for p in modes)
    assert any(p.endswith(".chunks") for p in modes)
    for path, mode in modes.items():
        if (store / path).is_dir():
            assert mode == 0o700, path
        elif path.startswith(("objects/", "packs/")):
            assert mode == 0o400, path
        else:
            assert mode == 0o600, path


@needs_root
def test_another_user_can_neither_read_nor_lock_a_store_root_made(public_tmp):
    store = make_history(public_tmp / "tree", 0o022)
    (public_tmp / "tree").chmod(0o755)
    r = cas("--store", str(store), "cat", "HEAD:secret", cwd=public_tmp, as_nobody=True)
    assert r.returncode != 0 and b"root only" not in r.stdout
    # Every file of the store, the object files included, is out of reach.
    probe = ("import os, sys\n"
             "for dirpath, _, names in os.walk(sys.argv[1]):\n"
             "    for n in names:\n"
             "        try: open(os.path.join(dirpath, n), 'rb').read(); print(n)\n"
             "        except OSError: pass\n"
             "try:\n"
             "    import fcntl; fd = os.open(sys.argv[1] + '/lock', os.O_RDONLY)\n"
             "    fcntl.flock(fd, fcntl.LOCK_EX); print('locked')\n"
             "except OSError: pass\n")
    seen = subprocess.run(NOBODY + [sys.executable, "-c", probe, str(store)],
                          capture_output=True, timeout=30)
    assert seen.returncode == 0 and seen.stdout == b"", seen


def test_a_shared_store_gives_its_group_access(tmp_path):
    store = make_history(tmp_path / "tree", 0o077, "--shared")
    assert json.loads((store / "config.json").read_text())["shared"] is True
    assert stat.S_IMODE(store.stat().st_mode) == 0o2770
    modes = modes_below(store)
    for path in ("objects", "packs", "index", "refs", "snapshots", "tmp"):
        assert modes[path] == 0o2770, path
    for path in ("config.json", "lock", "index/data.mdb", "index/lock.mdb"):
        assert modes[path] == 0o660, path
    chunk_lists = [p for p in modes if p.endswith(".chunks")]
    assert chunk_lists and all(modes[p] == 0o440 for p in chunk_lists)
    fan_out = [p for p in modes if p.startswith(("objects/", "packs/")) and p.count("/") == 1]
    assert fan_out and all(modes[p] == 0o2770 for p in fan_out)


def test_an_open_store_warns_once_with_the_command_that_closes_it(tmp_path):
    store = make_history(tmp_path / "tree", 0o022)
    quiet = cas("log", cwd=tmp_path / "tree")
    assert quiet.returncode == 0 and b"warning" not in quiet.stderr
    # Inside a closed store directory, nothing can be reached: no warning.
    (store / "objects").chmod(0o755)
    assert b"warning" not in cas("log", cwd=tmp_path / "tree").stderr
    # What an older cas left: world-readable directories and files.
    subprocess.run(["chmod", "-R", "go+rX", str(store)], check=True)
    r = cas("log", cwd=tmp_path / "tree")
    assert r.returncode == 0
    warning = r.stderr.decode()
    assert len(warning.splitlines()) == 1 and "other users" in warning
    command = re.search(r"close it with: (.*)$", warning.strip()).group(1)
    subprocess.run(command, shell=True, check=True)
    assert all(m & 0o077 == 0 for m in modes_below(store).values())
    assert b"warning" not in cas("log", cwd=tmp_path / "tree").stderr


@pytest.mark.parametrize("recorded,umask,expected", [
    (0o640, 0o022, 0o640), (0o755, 0o022, 0o755), (0o644, 0o077, 0o600),
    (0o4755, 0o022, 0o755), (0o666, 0o000, 0o666)])
def test_cat_o_writes_the_recorded_mode_less_the_umask(tmp_path, recorded, umask, expected):
    tree = tmp_path / "tree"
    write(tree / "f", b"data\n").chmod(recorded)
    for args in (("init",), ("snapshot",)):
        assert cas(*args, cwd=tree).returncode == 0
    r = cas("cat", "HEAD:f", "-o", str(tmp_path / "out"), cwd=tree, umask=umask)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == expected


def test_cat_o_of_an_object_by_id_is_private(tmp_path):
    tree = tmp_path / "tree"
    write(tree / "f", b"data\n")
    assert cas("init", cwd=tree).returncode == 0
    oid = cas("add", "f", cwd=tree).stdout.split()[0].decode()
    assert cas("cat", oid, "-o", str(tmp_path / "out"), cwd=tree, umask=0).returncode == 0
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o600


def test_every_file_of_a_shared_store_is_readable_by_its_group(tmp_path):
    store = make_history(tmp_path / "tree", 0o077, "--shared")
    modes = modes_below(store)
    assert [p for p, m in modes.items() if m & 0o040 == 0] == []


# -- item 15: read-only stores -------------------------------------------------------------

READS = [("log",), ("ls", "-r", "HEAD"), ("cat", "HEAD:d/b"), ("verify", "--full"),
         ("objects",), ("status",), ("diff", "HEAD", "HEAD")]
WRITES = [("snapshot", "."), ("tag", "later"), ("gc",), ("index", "rebuild"), ("forget", "HEAD")]


def check_read_only(tree: Path, store: Path, out: Path, as_nobody: bool) -> None:
    env = {"CAS_STORE": str(store)}
    before = modes_below(store)
    for args in READS:
        r = cas(*args, cwd=tree, as_nobody=as_nobody, env=env)
        assert r.returncode == 0 and b"Traceback" not in r.stderr, (args, r.stderr)
    r = cas("restore", "HEAD", "--to", str(out / "restored"), cwd=tree, as_nobody=as_nobody,
            env=env)
    assert r.returncode == 0, r.stderr
    assert (out / "restored" / "d" / "b").read_bytes() == b"x" * 5000
    write(tree / "new.txt", b"new\n")
    for args in WRITES:
        one_line_error(cas(*args, cwd=tree, as_nobody=as_nobody, env=env))
    assert modes_below(store) == before
    assert cas("log", cwd=tree, as_nobody=as_nobody, env=env).stdout.count(b"\n") == 1


def small_history(tree: Path, store: Path) -> None:
    write(tree / "a", b"hi\n")
    write(tree / "d" / "b", b"x" * 5000)
    for args in (("init",), ("snapshot", ".")):
        assert cas(*args, cwd=tree, env={"CAS_STORE": str(store)}).returncode == 0


@needs_root
def test_a_store_on_a_read_only_mount_can_be_read(mount_tmpfs, tmp_path):
    disk = mount_tmpfs("disk", "20m")
    small_history(tmp_path / "tree", disk / "store")
    assert subprocess.run(["mount", "-o", "remount,ro", str(disk)]).returncode == 0
    with pytest.raises(OSError):
        (disk / "probe").write_bytes(b"")
    check_read_only(tmp_path / "tree", disk / "store", tmp_path, as_nobody=False)


@needs_root
def test_a_write_protected_store_can_be_read_by_its_unprivileged_owner(public_tmp):
    tree = public_tmp / "tree"
    small_history(tree, tree / ".cas")
    out = public_tmp / "out"
    out.mkdir()
    subprocess.run(["chown", "-R", "65534:65534", str(public_tmp)], check=True)
    subprocess.run(["chmod", "-R", "a-w", str(tree / ".cas")], check=True)
    check_read_only(tree, tree / ".cas", out, as_nobody=True)


# -- item 7: config values, and metadata files that are not small regular files -----------

def edit_config(store: Path, **changes) -> None:
    doc = json.loads((store / "config.json").read_text())
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            doc[outer][inner] = value
        else:
            doc[key] = value
    (store / "config.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("key,value,code", [
    ("id_hash", "sha256", 2), ("id_hash", "blake3-256-keyed", 2), ("id_hash", 7, 1),
    ("compression.algorithm", "lz4", 2), ("compression.small_level", 99, 1),
    ("compression.large_level", "1", 1), ("compression.min_saving", -0.5, 1),
    ("compression.min_saving", float("nan"), 1), ("compression.bogus", 1, 1),
    ("compression", [], 1), ("loose_min_size", -1, 1), ("loose_min_size", True, 1),
    ("pack_target_size", 1.5, 1), ("pack_target_size", 10 ** 30, 1),
    ("chunk_min_size", 0, 1), ("chunk_min_size", "1MiB", 1), ("store_id", 5, 1),
    ("store_id", "../x", 1), ("created", None, 1), ("shared", "yes", 1), ("version", "1", 1)])
def test_a_config_with_an_odd_value_is_one_clear_error(tmp_path, key, value, code):
    tree = tmp_path / "tree"
    write(tree / "f", b"data\n")
    assert cas("init", cwd=tree).returncode == 0
    edit_config(tree / ".cas", **{key: value})
    # Every command reads the config the same way, when it opens the store.
    r = cas("snapshot", cwd=tree)
    assert r.returncode == code, r.stderr
    err = one_line_error(r)
    assert "config" in err or "upgrade cas" in err


def replace_with(path: Path, kind: str) -> None:
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "huge":
        with open(path, "wb") as f:
            f.write(b'{"format": "cas-store", "pad": "' + b" " * (4 << 20) + b'"}')
    elif kind == "deep":
        path.write_bytes(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("name,kind", [
    ("config.json", "fifo"), ("config.json", "zero"), ("config.json", "huge"),
    ("config.json", "deep"), ("lock", "fifo"), ("lock", "zero"),
    ("index/data.mdb", "fifo"), ("index/data.mdb", "zero"), ("index/lock.mdb", "fifo")])
def test_a_store_file_that_is_a_fifo_a_link_or_huge_is_refused_without_hanging(
        tmp_path, name, kind):
    tree = tmp_path / "tree"
    write(tree / "f", b"data\n")
    assert cas("init", cwd=tree).returncode == 0
    assert cas("snapshot", cwd=tree).returncode == 0
    replace_with(tree / ".cas" / name, kind)
    for args in (("log",), ("cat", "HEAD:f")):
        r = cas(*args, cwd=tree, timeout=20)
        err = one_line_error(r)
        assert name.split("/")[-1] in err, err


# -- items 5 and 6: what read_object returns is what its id names; chunk lists cannot loop --


@pytest.fixture
def chunky_store(tmp_path):
    from cas.storage.config import StoreConfig
    s = Store.init(str(tmp_path / "store"), StoreConfig(
        loose_min_size=128 << 10, pack_target_size=256 << 10, chunk_min_size=64 << 10,
        version=1))  # JSON chunk lists, which rewrite_chunk_list edits in place
    yield s
    s.close()


def put_chunked(store: Store, tmp_path: Path, name: str, size: int = 300_000):
    path = write(tmp_path / name, os.urandom(size))
    oid = store.put_file(str(path))
    assert store.entry(oid).encoding is Encoding.CHUNKED
    return oid


def rewrite_chunk_list(store: Store, oid, chunks) -> None:
    """Replace a chunk list with one naming ``chunks``, padded to the recorded
    length so that only what it names is wrong."""
    entry = store.entry(oid)
    data = ChunkList(oid, entry.size, tuple(chunks)).to_json()
    assert len(data) <= entry.stored_length
    path = store.layout.loose_path(oid, Encoding.CHUNKED)
    os.chmod(path, 0o600)
    Path(path).write_bytes(data + b" " * (entry.stored_length - len(data)))


def every_read_is_damage(store: Store, oid) -> None:
    reads = [lambda: store.read_object(oid), lambda: b"".join(store.iter_content(oid)),
             lambda: b"".join(store.iter_content(oid, check_chunks=True)),
             lambda: store.open_object(oid).read(), lambda: store.backing_files(oid),
             lambda: store.read_into(oid, 1000, bytearray(5000)),
             lambda: store.write_content(oid, os.open(os.devnull, os.O_WRONLY))]
    for read in reads:
        with pytest.raises(ObjectDamaged, match="chunk"):
            read()


@pytest.mark.plain_only
def test_a_chunk_list_naming_itself_is_damage_not_a_recursion_error(chunky_store, tmp_path):
    oid = put_chunked(chunky_store, tmp_path, "a")
    rewrite_chunk_list(chunky_store, oid, [(oid, chunky_store.entry(oid).size)])
    every_read_is_damage(chunky_store, oid)


@pytest.mark.plain_only
def test_a_loop_of_chunk_lists_is_damage(chunky_store, tmp_path):
    a = put_chunked(chunky_store, tmp_path, "a")
    b = put_chunked(chunky_store, tmp_path, "b")
    rewrite_chunk_list(chunky_store, a, [(b, chunky_store.entry(a).size)])
    rewrite_chunk_list(chunky_store, b, [(a, chunky_store.entry(b).size)])
    every_read_is_damage(chunky_store, a)
    every_read_is_damage(chunky_store, b)


@pytest.mark.plain_only
def test_cat_and_verify_report_a_self_naming_chunk_list_in_one_line(tmp_path):
    tree = tmp_path / "tree"
    write(tree / "big", os.urandom(3 << 20))
    for args in (("init",), ("snapshot",)):
        assert cas(*args, cwd=tree).returncode == 0
    with Store.open(str(tree / ".cas")) as store:
        oid = hash_bytes((tree / "big").read_bytes())
        rewrite_chunk_list(store, oid, [(oid, store.entry(oid).size)])
    for args in (("cat", "HEAD:big"), ("cat", oid.hex), ("verify", "--full"),
                 ("restore", "HEAD", "--to", str(tmp_path / "out"))):
        r = cas(*args, cwd=tree)
        assert r.returncode == 1 and b"RecursionError" not in r.stderr, (args, r.stderr)
        assert b"Traceback" not in r.stderr


@pytest.mark.plain_only
def test_read_object_refuses_bytes_that_do_not_hash_to_the_id(chunky_store):
    small = os.urandom(2000)            # incompressible: packed raw
    large = os.urandom(200_000)         # a loose raw file
    with chunky_store.writer() as w:
        small_id, large_id = w.put_bytes(small), w.put_bytes(large)
    entry = chunky_store.entry(small_id)
    assert entry.pack is not None and entry.encoding is Encoding.RAW
    from .conftest import flip_byte
    flip_byte(chunky_store.layout.pack_path(entry.pack), entry.offset + 100)
    flip_byte(chunky_store.layout.loose_path(large_id, Encoding.RAW), 100)
    for oid in (small_id, large_id):
        with pytest.raises(ObjectDamaged, match="does not hash to its id"):
            chunky_store.read_object(oid)


def test_an_index_record_claiming_a_huge_length_is_damage_not_memory_error(chunky_store):
    from cas.storage.index import IndexEntry
    oid = chunky_store.put_bytes(os.urandom(2000))
    entry = chunky_store.entry(oid)
    chunky_store.index.record([IndexEntry(oid, entry.encoding, entry.size, 1 << 45,
                                          entry.pack, entry.offset)])
    with pytest.raises(ObjectDamaged, match="outside pack"):
        chunky_store.read_object(oid)


# -- item 18: a store named by its own directory -------------------------------------------


def test_a_store_made_with_store_path_is_found_from_its_own_directory(tmp_path):
    store = tmp_path / "disk" / "backups"
    tree = tmp_path / "models"
    write(tree / "config.json", b'{"model_type": "llama"}')   # a model's, not a store's
    assert cas("--store", str(store), "init", cwd=tmp_path).returncode == 0
    assert cas("--store", str(store), "snapshot", str(tree), cwd=tmp_path).returncode == 0
    assert locate_store(str(store)) == str(store)
    assert find_store(str(store)) == str(store)
    assert find_store(str(store / "objects")) == str(store)
    # Inside the store, or pointing at it by its own directory, commands find it.
    for cwd, env in ((store, {}), (store / "objects", {}), (tmp_path, {"CAS_STORE": str(store)})):
        r = cas("log", "models", cwd=cwd, env=env)
        assert r.returncode == 0 and r.stdout.count(b"\n") == 1, r.stderr
    # A model directory's config.json does not make it a store.
    with pytest.raises(Exception, match="no cas store"):
        find_store(str(tree))


def test_store_given_as_a_tree_means_its_dot_cas_and_never_one_further_up(tmp_path):
    outer = tmp_path / "outer"
    inner = outer / "inner"
    write(inner / "f", b"data\n")
    assert cas("init", cwd=outer).returncode == 0
    assert cas("init", "--nested", cwd=inner).returncode == 0
    assert locate_store(str(inner)) == str(inner / ".cas")
    assert locate_store(str(inner / ".cas")) == str(inner / ".cas")
    with pytest.raises(Exception, match="no cas store"):
        locate_store(str(inner / "sub-that-is-not-a-store"))
    r = cas("--store", str(inner), "snapshot", str(inner), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Store.open(str(inner)).path == str(inner / ".cas")


# -- item 8: a full disk at the index commit -----------------------------------------------


@needs_root
def test_a_full_disk_at_the_index_commit_is_a_write_error(mount_tmpfs):
    disk = mount_tmpfs("disk", "4m")
    store = Store.init(str(disk / "store"))
    try:
        # Fill the disk, so the next commit that grows data.mdb cannot.
        with open(disk / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
        many = [(b"main\0" + b"p" * 200 + str(n).encode(), os.urandom(80)) for n in range(20_000)]
        with pytest.raises(StoreWriteError):
            store.index.update(b"statcache", put=many)
        (disk / "filler").unlink()
        store.index.update(b"statcache", put=many[:10])
        assert store.index.get(b"statcache", many[0][0]) == many[0][1]
    finally:
        store.close()


@needs_root
def test_a_snapshot_that_fills_the_disk_at_the_index_commit_exits_1(mount_tmpfs, tmp_path):
    disk = mount_tmpfs("disk", "4m")
    tree = tmp_path / "tree"
    old = time.time_ns() - 86400 * 10**9
    for n in range(3000):
        path = write(tree / f"d{n % 30}" / f"{n:05d}-{'n' * 150}", b"same")
        # Old enough for the stat cache, whose 3,000 long keys are what fills the disk.
        os.utime(path, ns=(old, old))
    env = {"CAS_STORE": str(disk / "store")}
    assert cas("init", cwd=tree, env=env).returncode == 0
    # Room for the packs (one copy of "same", the trees), not for the index.
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * (free - (150 << 10)))
    r = cas("snapshot", ".", cwd=tree, env=env)
    err = one_line_error(r)
    assert r.returncode == 1 and ("space" in err or "write" in err), err
