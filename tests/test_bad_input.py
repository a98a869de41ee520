"""Bad input gets one clear line, a non-zero exit, and loses nothing."""

import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from .conftest import chunk_list_path, damage_first_chunk, write


@pytest.fixture
def ws(tmp_path, cas):
    assert cas("init").code == 0
    write(tmp_path / "in" / "good.txt", b"good content\n")
    return tmp_path


def assert_verified(cas):
    r = cas("verify", "--full")
    assert r.code == 0, r.err


def test_a_missing_path_is_an_error_and_the_rest_is_stored(ws, cas):
    r = cas("add", "nope", "in")
    assert r.code == 2
    assert "nope: no such file or directory" in r.err
    assert r.text.endswith("  in/good.txt\n")
    assert "Traceback" not in r.err


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0,
                    reason="needs root and setpriv to drop the file-permission override")
def test_an_unreadable_file_is_reported_skipped_and_the_rest_is_stored(ws, cas):
    write(ws / "in" / "secret.txt", b"secret").chmod(0)
    import sys
    r = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                        sys.executable, "-m", "cas.cli", "add", "in"],
                       cwd=ws, capture_output=True, timeout=60)
    assert r.returncode == 2
    assert b"in/secret.txt: permission denied" in r.stderr
    assert b"  in/good.txt" in r.stdout
    assert b"Traceback" not in r.stderr
    assert_verified(cas)


def test_special_files_are_skipped_with_a_warning(ws, cas):
    os.mkfifo(ws / "in" / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(ws / "in" / "sock"))
    try:
        r = cas("add", "in", "/dev/null")
    finally:
        sock.close()
    assert r.code == 0, r.err
    assert "in/fifo: is a FIFO; skipped" in r.err
    assert "in/sock: is a socket; skipped" in r.err
    assert "/dev/null: is a device; skipped" in r.err
    assert r.text.count("\n") == 1


def test_symlink_loops_and_directory_links_do_not_hang_the_walk(ws, cas):
    os.symlink("loop", ws / "in" / "loop")
    os.symlink("..", ws / "in" / "up")
    os.symlink("good.txt", ws / "in" / "link.txt")
    r = cas("add", "in")
    assert r.code == 2
    assert "in/loop: symbolic link loop; skipped" in r.err
    assert "in/up: symbolic link to a directory; not followed" in r.err
    assert "  in/link.txt" in r.text and "  in/good.txt" in r.text


def test_non_utf8_names_round_trip_exactly(ws, cas):
    name = b"caf\xe9-\xff.bin"
    with open(os.path.join(os.fsencode(ws / "in"), name), "wb") as f:
        f.write(b"latin-1 name")
    r = cas("add", "in")
    assert r.code == 0, r.err
    line = [l for l in r.out.splitlines() if l.endswith(name)][0]
    oid = line.split(b"  ")[0].decode()
    assert cas("cat", oid).out == b"latin-1 name"
    doc = json.loads(cas("add", "--json", "in").out)
    assert any("\\xff" in f["path"] for f in doc["files"])


def test_a_directory_or_a_bad_id_given_to_cat_is_a_clear_error(ws, cas):
    oid = cas("add", "in/good.txt").text.split()[0]
    r = cas("cat", "in")
    assert r.code == 2 and "not an object id" in r.err
    r = cas("cat", "123456")
    assert r.code == 2 and "no object 123456" in r.err
    r = cas("cat", oid, "-o", "in")
    assert r.code == 2 and "is a directory" in r.err


def test_a_file_that_keeps_changing_is_never_stored_under_a_wrong_id(ws, cas):
    path = ws / "in" / "growing.log"
    write(path, os.urandom(24 << 20))
    stop = threading.Event()

    def append():
        with open(path, "ab") as f:
            while not stop.is_set():
                f.write(b"x" * 4096)
                f.flush()
                time.sleep(0.0005)

    t = threading.Thread(target=append)
    t.start()
    try:
        r = cas("add", "in/growing.log")
    finally:
        stop.set()
        t.join()
    assert r.code == 2
    assert "growing.log: changed while being read" in r.err
    assert_verified(cas)
    # Chunks read on the way may have been stored (gc reclaims them), but no
    # object stands for the file: nothing carries its size or a chunk list.
    objects = json.loads(cas("objects", "--json").out)
    assert all(o["size"] < 24 << 20 and o["encoding"] != "chunked" for o in objects)


def test_a_file_that_changed_once_is_re_read_and_stored_correctly(ws, cas):
    """A single change between attempts is absorbed by re-reading."""
    path = ws / "in" / "db.bin"
    write(path, b"a" * (3 << 20))
    r = cas("add", "in/db.bin")
    assert r.code == 0
    oid = r.text.split()[0]
    assert cas("cat", oid).out == path.read_bytes()


@pytest.mark.plain_only
def test_a_corrupted_object_is_named_by_verify_and_refused_by_cat(ws, cas, tmp_path):
    write(ws / "in" / "big.bin", os.urandom(9 << 20))
    lines = dict(reversed(l.split("  ")) for l in cas("add", "in").text.splitlines())
    big, good = lines["in/big.bin"], lines["in/good.txt"]
    chunk = damage_first_chunk(ws / ".cas", big)
    assert cas("verify").code == 0  # sizes still match: only --full reads bytes
    r = cas("verify", "--full")
    assert r.code == 1
    assert f"object {chunk}: content does not hash to its id" in r.err
    assert f"object {big}" in r.err  # the file made with the chunk
    assert "does not hash to its name" in r.err  # the pack holding it
    assert f"object {good}" not in r.err
    r = cas("cat", big[:10], "-o", "restored.bin")
    assert r.code == 1 and "damaged" in r.err
    assert not (tmp_path / "restored.bin").exists()


def test_a_missing_object_file_is_found_by_the_quick_verify(ws, cas):
    write(ws / "in" / "big.bin", os.urandom(9 << 20))
    oid = cas("add", "in/big.bin").text.split()[0]
    os.unlink(chunk_list_path(ws / ".cas", oid))
    r = cas("verify")
    assert r.code == 1 and f"object {oid}: its file is missing" in r.err


def test_a_newer_store_format_is_refused_with_a_clear_message(ws, cas):
    cfg_path = ws / ".cas" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["version"] = 7
    os.chmod(cfg_path, 0o644)
    cfg_path.write_text(json.dumps(cfg))
    r = cas("stats")
    assert r.code == 2 and "format version 7" in r.err and "upgrade cas" in r.err


def test_a_deleted_or_garbled_index_is_reported_then_rebuilt(ws, cas):
    write(ws / "in" / "big.bin", os.urandom(9 << 20))
    before = set(cas("objects").text.splitlines()) | set()
    cas("add", "in")
    before = cas("objects").out
    shutil.rmtree(ws / ".cas" / "index")
    r = cas("objects")
    assert r.code == 1 and "index" in r.err and "cas index rebuild" in r.err
    assert cas("index", "rebuild").code == 0
    assert cas("objects").out == before
    with open(ws / ".cas" / "index" / "data.mdb", "r+b") as f:
        f.write(b"\xde\xad" * 4096)
    r = cas("objects")
    assert r.code == 1 and "damaged" in r.err and "cas index rebuild" in r.err
    assert "Traceback" not in r.err
    assert cas("index", "rebuild").code == 0
    assert cas("objects").out == before
    assert_verified(cas)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_is_a_clear_error_and_leaves_no_partial_object(tmp_path, cas):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        store = mnt / "store"
        assert cas("--store", str(store), "init").code == 0
        write(tmp_path / "in" / "a.txt", b"fits\n")
        assert cas("--store", str(store), "add", "in/a.txt").code == 0
        write(tmp_path / "in" / "huge.bin", os.urandom(8 << 20))
        for n in range(300):
            write(tmp_path / "in" / "many" / f"{n}.bin", os.urandom(20_000))
        r = cas("--store", str(store), "add", "in")
        assert r.code == 1
        assert "No space left on device" in r.err and "Traceback" not in r.err
        assert os.listdir(store / "tmp") == []
        v = cas("--store", str(store), "verify", "--full")
        assert v.code == 0, v.err
        assert cas("--store", str(store), "cat", r_first_id(cas, store)).out == b"fits\n"
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def r_first_id(cas, store):
    return json.loads(cas("--store", str(store), "objects", "--json").out)[0]["id"]


def test_json_nested_too_deeply_in_a_model_header_or_config_is_bad_input(tmp_path, cas):
    """json.loads raises RecursionError, not ValueError, on deep nesting:
    every parser of untrusted JSON must treat it as bad input."""
    import struct

    from cas.model.model_manifest import parse_safetensors
    from cas.storage.chunking import safetensors_spans

    header = b"[" * 100_000 + b"]" * 100_000
    data = struct.pack("<Q", len(header)) + header
    with pytest.raises(ValueError):
        parse_safetensors(lambda off, n: data[off:off + n], len(data), "x.safetensors")
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert safetensors_spans(fd, len(data)) is None  # not safetensors: cut as anything else
    finally:
        os.close(fd)
    cfg = tmp_path / "home"
    (cfg / "cas").mkdir(parents=True)
    (cfg / "cas" / "config.json").write_bytes(b"[" * 100_000)
    r = subprocess.run([os.sys.executable, "-m", "cas.cli", "stores"], capture_output=True,
                       env={**os.environ, "XDG_CONFIG_HOME": str(cfg), "HOME": str(cfg)})
    assert r.returncode in (1, 2) and b"Traceback" not in r.stderr and b"internal error" not in r.stderr, r.stderr
