"""The object data path of an encrypted store: what is written is sealed,
reads open it, and any changed byte is damage named by verify.

docs/FORMAT.md §18. Real stores, real files, the real CLI for verify.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.errors import ObjectDamaged
from cas.objectid import ObjectId, hash_bytes
from cas.storage.config import ENCRYPTION, StoreConfig
from cas.storage.crypto import FILE_HEADER_SIZE, SEGMENT, Sealer, SealError, plain_size, sealed_size
from cas.storage.encoding import Encoding
from cas.storage.pack import PackFormatError, read_entries
from cas.storage.store import Store
from cas.storage.storedfile import SealedFile, SealedSink
from tests.conftest import cas_process

PASSWORD = b"correct horse"
ENV = {"CAS_PASSWORD": PASSWORD.decode()}
MARKER = b"MARKER-9f2c41d7"


def encrypted_store(path: Path, **settings_) -> Store:
    return Store.init(str(path), StoreConfig(encryption=dict(ENCRYPTION), **settings_), password=PASSWORD)


def every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def assert_nothing_plain(root: Path, needles: list[bytes]) -> None:
    for path in every_file(root):
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle[:20]!r} found in {path}"


def contents() -> dict[str, bytes]:
    """One of each way an object is stored."""
    return {
        "packed raw": MARKER + os.urandom(500),
        "packed zstd": MARKER + b"compressible line\n" * 200,
        "empty": b"",
        "loose raw": MARKER + os.urandom((9 << 20) - len(MARKER)),
        "loose zstd": (MARKER + b"text that compresses well " * 40) * 9000,
        "loose raw, whole segments": os.urandom(9 * SEGMENT),
    }


@pytest.fixture
def filled(tmp_path):
    store = encrypted_store(tmp_path / "s")
    data = contents()
    chunked_file = tmp_path / "big.bin"
    chunked_file.write_bytes(MARKER + os.urandom(3 << 20))
    data["chunked"] = chunked_file.read_bytes()
    ids = {}
    with store.writer() as w:
        for kind, content in data.items():
            if kind != "chunked":
                ids[kind] = w.put_bytes(content)
        ids["chunked"] = w.put_file(str(chunked_file))[0]
    store.close()
    return tmp_path / "s", ids, data


def test_every_kind_of_object_reads_back_and_nothing_on_disk_is_plain(filled):
    root, ids, data = filled
    with Store.open(str(root)) as store:
        for kind, oid in ids.items():
            assert store.read_object(oid) == data[kind], kind
            assert store.open_object(oid).read() == data[kind], kind
            if data[kind]:
                at = len(data[kind]) // 3
                buf = bytearray(min(3 * SEGMENT, len(data[kind]) - at))
                store.read_into(oid, at, buf)
                assert bytes(buf) == data[kind][at:at + len(buf)], kind
            entry = store.entry(oid)
            assert entry.encoding.sealed, kind
            assert store.plain_path(oid) is None
    needles = [MARKER] + [oid.hex.encode() for oid in ids.values()] + [oid.digest for oid in ids.values()]
    assert_nothing_plain(root, needles)


def test_a_store_written_sealed_verifies_and_rebuilds_its_index(filled):
    root, ids, data = filled
    for args in (["verify"], ["verify", "--full"]):
        r = cas_process("--store", str(root), *args, cwd=root.parent, env=ENV)
        assert r.returncode == 0, r.stderr
    r = cas_process("--store", str(root), "index", "rebuild", cwd=root.parent, env=ENV)
    assert r.returncode == 0, r.stderr
    with Store.open(str(root)) as store:
        for kind, oid in ids.items():
            assert store.read_object(oid) == data[kind], kind


def loose_file(root: Path, store_ids: dict, kind: str) -> Path:
    with Store.open(str(root)) as store:
        entry = store.entry(store_ids[kind])
        assert entry.pack is None
        return Path(store.layout.loose_path(entry.oid, entry.encoding))


def flip(path: Path, offset: int) -> None:
    os.chmod(path, 0o600)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# header magic, salt, binding, first segment's body, its tag, the last byte
@pytest.mark.parametrize("where", [0, 20, FILE_HEADER_SIZE - 5, FILE_HEADER_SIZE + 10,
                                   FILE_HEADER_SIZE + SEGMENT + 3, -1])
def test_a_changed_byte_anywhere_in_a_sealed_loose_object_is_damage(filled, where):
    root, ids, _data = filled
    path = loose_file(root, ids, "loose raw")
    flip(path, where if where >= 0 else path.stat().st_size - 1)
    with Store.open(str(root)) as store, pytest.raises(ObjectDamaged):
        store.read_object(ids["loose raw"])
    r = cas_process("--store", str(root), "verify", "--full", cwd=root.parent, env=ENV)
    assert r.returncode == 1
    assert ids["loose raw"].hex[:12] in (r.stdout + r.stderr).decode()


def test_a_sealed_file_renamed_over_another_does_not_open_there(filled):
    root, ids, _data = filled
    a, b = loose_file(root, ids, "loose raw"), loose_file(root, ids, "loose raw, whole segments")
    shutil.copyfile(a, b)
    with Store.open(str(root)) as store:
        with pytest.raises(ObjectDamaged, match="belongs somewhere else"):
            store.read_object(ids["loose raw, whole segments"])
        assert store.read_object(ids["loose raw"])


def test_a_cut_short_sealed_file_is_damage(filled):
    root, ids, _data = filled
    path = loose_file(root, ids, "loose raw, whole segments")
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - (SEGMENT + 16))   # the last segment dropped whole
    with Store.open(str(root)) as store, pytest.raises(ObjectDamaged):
        store.read_object(ids["loose raw, whole segments"])


def pack_of(root: Path, oid: ObjectId) -> tuple[Path, int, int]:
    with Store.open(str(root)) as store:
        entry = store.entry(oid)
        assert entry.pack is not None
        return Path(store.layout.pack_path(entry.pack)), entry.offset, entry.stored_length


@pytest.mark.parametrize("part", ["salt", "body", "tag", "trailer", "footer"])
def test_a_changed_byte_in_a_sealed_pack_is_named_by_verify(filled, part):
    root, ids, _data = filled
    path, offset, length = pack_of(root, ids["packed raw"])
    size = path.stat().st_size
    at = {"salt": 20, "body": offset + 3, "tag": offset + length - 2, "trailer": size - 56 - 10,
          "footer": size - 40}[part]
    flip(path, at)
    r = cas_process("--store", str(root), "verify", "--full", cwd=root.parent, env=ENV)
    assert r.returncode == 1, r.stdout
    out = (r.stdout + r.stderr).decode()
    assert path.stem[:12] in out or ids["packed raw"].hex[:12] in out
    if part in ("salt", "body", "tag"):
        with Store.open(str(root)) as store, pytest.raises(ObjectDamaged):
            store.read_object(ids["packed raw"])
    else:
        with Store.open(str(root)) as store:
            with pytest.raises(PackFormatError):
                read_entries(str(path), store.sealer)


def test_restore_refuses_damaged_sealed_content_and_writes_nothing_under_its_name(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "weights.bin").write_bytes(MARKER + os.urandom(9 << 20))
    assert cas_process("init", "--encrypt", cwd=tree, env=ENV).returncode == 0
    assert cas_process("snapshot", cwd=tree, env=ENV).returncode == 0
    store = tree / ".cas"
    sealed = [p for p in every_file(store / "objects") if p.name.endswith(".sealed")]
    assert len(sealed) == 1
    flip(sealed[0], FILE_HEADER_SIZE + 100)
    r = cas_process("restore", "HEAD", "--to", str(tmp_path / "out"), cwd=tree, env=ENV)
    assert r.returncode == 1
    assert not (tmp_path / "out" / "weights.bin").exists()


def test_a_plain_pack_in_an_encrypted_store_and_a_sealed_one_in_a_plain_store_are_refused(tmp_path, filled):
    root, ids, _data = filled
    sealed_pack, _o, _n = pack_of(root, ids["packed raw"])
    plain = Store.init(str(tmp_path / "plain"))
    oid = plain.put_bytes(b"plain small object")
    entry = plain.entry(oid)
    plain_pack = Path(plain.layout.pack_path(entry.pack))
    with pytest.raises(PackFormatError, match="not sealed"):
        with Store.open(str(root)) as store:
            read_entries(str(plain_pack), store.sealer)
    with pytest.raises(PackFormatError, match="not encrypted"):
        read_entries(str(sealed_pack), plain.sealer)
    plain.close()


def test_the_wrong_key_opens_nothing(filled, tmp_path):
    root, ids, _data = filled
    path = loose_file(root, ids, "loose raw")
    other = Sealer(os.urandom(32))
    with open(path, "rb") as f:
        header = f.read(FILE_HEADER_SIZE)
    with Store.open(str(root)) as store:
        name = store.sealer.name(ids["loose raw"])
    with pytest.raises(SealError):
        other.file_cipher(header, Sealer.object_context(name, Encoding.SEALED_RAW))


@settings(max_examples=60, deadline=None)
@given(size=st.one_of(st.integers(0, 3 * SEGMENT + 17),
                      st.sampled_from([0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT, 3 * SEGMENT])),
       pieces=st.lists(st.integers(1, 3 * SEGMENT), min_size=1, max_size=6),
       window=st.tuples(st.integers(0, 4 * SEGMENT), st.integers(0, 2 * SEGMENT)))
def test_sealed_files_round_trip_at_every_size_and_window(tmp_path_factory, size, pieces, window):
    """Segment boundaries: a sink fed in any pieces, then any window read back."""
    sealer = Sealer(bytes(range(32)))
    data = os.urandom(size) if size else b""
    path = tmp_path_factory.mktemp("sealed") / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        sink = SealedSink(fd, sealer.new_file())
        pos, i = 0, 0
        while pos < size:
            step = pieces[i % len(pieces)]
            sink.write(data[pos:pos + step])
            pos += step
            i += 1
        context = b"ctx"
        file_size = sink.finish(context)
        assert file_size == os.fstat(fd).st_size == sealed_size(size)
        assert plain_size(file_size) == size
        f = SealedFile(fd, file_size, sealer.file_cipher(os.pread(fd, FILE_HEADER_SIZE, 0), context))
        at, length = window
        assert f.pread(length, at) == data[at:at + length]
        buf = bytearray(max(0, min(length, size - at)))
        assert f.readinto(memoryview(buf), min(at, size)) == len(buf)
        assert sealer.open_bytes(context, path.read_bytes()) == data
    finally:
        os.close(fd)
    assert hash_bytes(data) == hash_bytes(sealer.open_bytes(b"ctx", path.read_bytes()))


def test_repair_of_an_encrypted_store_from_a_plain_copy_puts_no_plaintext_under_tmp(tmp_path):
    """A damaged sealed object is replaced from another store through a
    file in memory: nothing named repair-* is ever made under tmp/."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "weights.bin").write_bytes(MARKER + os.urandom(9 << 20))
    (tree / "note.txt").write_bytes(MARKER + b" small")
    assert cas_process("init", "--encrypt", cwd=tree, env=ENV).returncode == 0
    assert cas_process("snapshot", cwd=tree, env=ENV).returncode == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copyfile(tree / "weights.bin", copy / "weights.bin")
    store = tree / ".cas"
    sealed = [p for p in every_file(store / "objects") if p.name.endswith(".sealed")]
    flip(sealed[0], FILE_HEADER_SIZE + 100)
    created: list[str] = []

    class Seen(FileSystemEventHandler):
        def on_created(self, event):
            created.append(os.path.basename(str(event.src_path)))

    observer = Observer()
    observer.schedule(Seen(), str(store / "tmp"))
    observer.start()
    try:
        r = cas_process("repair", "--from", str(copy), cwd=tree, env=ENV)
    finally:
        observer.stop()
        observer.join()
    assert r.returncode == 0, r.stderr
    assert not [n for n in created if n.startswith("repair")]
    assert cas_process("verify", cwd=tree, env=ENV).returncode == 0
    assert cas_process("verify", "--full", cwd=tree, env=ENV).returncode == 0
    assert_nothing_plain(store, [MARKER])


def test_threads_opening_one_sealed_pack_at_once_all_get_its_cipher(filled):
    """The pack's fd is shared by the reading threads: its header must be
    read at an offset, never through the fd's file position."""
    import threading

    root, ids, data = filled
    for _ in range(20):
        with Store.open(str(root)) as store:
            entry = store.entry(ids["packed raw"])
            barrier = threading.Barrier(8)
            errors: list[BaseException] = []

            def read() -> None:
                barrier.wait()
                try:
                    assert store.read_object(ids["packed raw"]) == data["packed raw"]
                    store.contents.pack_cipher(entry)
                except BaseException as e:
                    errors.append(e)

            threads = [threading.Thread(target=read) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors[0]
