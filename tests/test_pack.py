import errno
import os

import pytest

from cas.objectid import hash_bytes
from cas.storage.encoding import Encoding
from cas.storage.pack import FOOTER, PackFormatError, PackWriter, read_entries


def make_pack(tmp_path, blobs):
    w = PackWriter(str(tmp_path))
    for b in blobs:
        w.add(hash_bytes(b), Encoding.RAW, b, len(b))
    pack_id = w.finish()
    return pack_id, w.temp_path


def test_a_pack_describes_its_entries_and_is_named_by_its_hash(tmp_path):
    blobs = [b"one", b"two" * 100, b""]
    pack_id, path = make_pack(tmp_path, blobs)
    data = open(path, "rb").read()
    assert hash_bytes(data) == pack_id
    entries = read_entries(path)
    assert [e.oid for e in entries] == [hash_bytes(b) for b in blobs]
    for e, b in zip(entries, blobs):
        assert data[e.offset:e.offset + e.stored_length] == b
        assert e.size == len(b)


def test_a_truncated_pack_is_refused(tmp_path):
    _, path = make_pack(tmp_path, [b"abc" * 50])
    os.truncate(path, os.path.getsize(path) - 10)
    with pytest.raises(PackFormatError, match="footer"):
        read_entries(path)


def test_a_damaged_trailer_is_detected(tmp_path):
    _, path = make_pack(tmp_path, [b"abc" * 50, b"def"])
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size - FOOTER.size - 40)  # inside the last trailer record
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(PackFormatError, match="checksum"):
        read_entries(path)


def test_a_pack_that_failed_to_write_refuses_further_writes(tmp_path):
    # /dev/full fails every write with ENOSPC, as a full disk does.
    writer = PackWriter(str(tmp_path))
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, writer._fd)
    finally:
        os.close(full)
    big = os.urandom(3 << 20)
    with pytest.raises(OSError) as first:
        writer.add(hash_bytes(big), Encoding.RAW, big, len(big))
    assert first.value.errno == errno.ENOSPC
    # The traceback of the first failure is still alive here; later writes
    # must fail the same clear way instead of tripping on the buffer.
    small = b"x" * 100
    with pytest.raises(OSError) as again:
        for _ in range(20_000):
            writer.add(hash_bytes(small), Encoding.RAW, small, len(small))
    assert again.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        writer.finish()
    writer.abandon()
    assert not os.path.exists(writer.temp_path)


# -- decoding stored bytes is bounded, and damage is always ObjectDamaged ------

import shutil
import stat
import struct
import tempfile

import zstandard
from hypothesis import HealthCheck, given, settings, strategies as st

from cas.errors import ObjectDamaged
from cas.storage.config import StoreConfig
from cas.storage.encoding import ZstdError, decode
from cas.storage.seekable import SeekTableError, read_seek_table
from cas.storage.store import Store

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def zstd_frame_claiming(size: int, content: bytes = b"hello" * 100) -> bytes:
    """A valid frame whose header's content size is replaced by ``size``."""
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(content)
    # Single segment, 2-byte content size: magic, descriptor, size, then blocks.
    assert frame[4] == 0x60
    return frame[:4] + bytes([0xE0]) + struct.pack("<Q", size) + frame[7:]


def test_a_frame_claiming_a_terabyte_is_damage_before_anything_is_allocated():
    for claimed in (2**40, 2**62, 2**64 - 3):
        frame = zstd_frame_claiming(claimed)
        assert zstandard.get_frame_parameters(frame).content_size == claimed
        for recorded in (claimed, 500):
            with pytest.raises(ZstdError):
                decode(Encoding.ZSTD, frame, recorded)
    # A frame without a content size in its header, recorded as huge: its
    # output is bounded by what it really holds, not allocated up front.
    bare = zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 100_000)
    for recorded in (2**40, 4, len(bare) * 32768):
        with pytest.raises(ZstdError):
            decode(Encoding.ZSTD, bare, recorded)
    assert decode(Encoding.ZSTD, bare, 100_000) == b"x" * 100_000


def pack_with_raw_entry(tmp_path, size: int, encoding=Encoding.RAW) -> str:
    w = PackWriter(str(tmp_path))
    w.add(hash_bytes(b"abc"), encoding, b"abc", size)
    w.finish()
    return w.temp_path


def test_pack_entries_whose_sizes_cannot_be_their_stored_bytes_are_refused(tmp_path):
    with pytest.raises(PackFormatError, match="raw but records"):
        read_entries(pack_with_raw_entry(tmp_path, 2**40))
    with pytest.raises(PackFormatError, match="can hold"):
        read_entries(pack_with_raw_entry(tmp_path, 2**40, Encoding.ZSTD))
    with pytest.raises(PackFormatError, match="never packed"):
        read_entries(pack_with_raw_entry(tmp_path, 3, Encoding.CHUNKED))


def test_a_pack_that_is_a_fifo_or_a_link_to_a_device_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "fifo.pack")
    with pytest.raises(PackFormatError, match="not a regular file"):
        read_entries(str(tmp_path / "fifo.pack"))   # opening it for reading used to wait forever
    os.symlink("/dev/zero", tmp_path / "zero.pack")
    with pytest.raises(PackFormatError, match="symbolic link"):
        read_entries(str(tmp_path / "zero.pack"))


def test_a_seek_table_frame_claiming_more_than_it_can_hold_is_refused(tmp_path):
    from cas.storage.seekable import seek_table
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(b"a" * 1000)
    path = tmp_path / "obj.zst"
    path.write_bytes(frame + seek_table([(len(frame), 2**32 - 1)]))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(SeekTableError, match="cannot hold"):
            read_seek_table(fd)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def packed_store(tmp_path_factory):
    """A real store whose small objects, raw and zstd, sit in one pack."""
    root = tmp_path_factory.mktemp("packed")
    blobs = [b"", b"x", os.urandom(300), b"compressible " * 200, bytes(5000), os.urandom(40)]
    with Store.init(str(root / "S"), StoreConfig(loose_min_size=64 << 10)) as s:
        oids = [s.put_bytes(b) for b in blobs]
        entry = s.entry(oids[3])
        assert entry.pack is not None and entry.encoding is Encoding.ZSTD
        pack = s.layout.pack_path(entry.pack)
        entries = {e.oid: e for e in read_entries(pack)}
    return root / "S", dict(zip(oids, blobs)), pack, entries


def damaged_copy(src, mutate):
    """A copy of the store with ``mutate(path_in_copy)`` applied to one file."""
    tmp = tempfile.mkdtemp()
    dst = os.path.join(tmp, "S")
    shutil.copytree(src, dst)
    return tmp, dst


def flip(path: str, at: int, mask: int) -> None:
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ mask]))


def assert_each_object_intact_or_damaged(store_path, objects, damaged_ids=()):
    with Store.open(store_path) as s:
        for oid, content in objects.items():
            try:
                got = b"".join(s.iter_content(oid))
            except ObjectDamaged:
                continue
            assert got == content
            assert oid not in damaged_ids, "a changed raw byte went unnoticed"


@pytest.mark.plain_only
@PROPERTY
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255), truncate=st.booleans())
def test_every_pack_flip_and_truncation_is_object_damage_or_harmless(packed_store, where, mask,
                                                                     truncate):
    src, objects, pack, entries = packed_store
    size = os.path.getsize(pack)
    at = int(where * size)
    tmp, dst = damaged_copy(src, None)
    try:
        copy = os.path.join(dst, os.path.relpath(pack, src))
        if truncate:
            os.chmod(copy, 0o600)
            os.truncate(copy, at)
        else:
            flip(copy, at, mask)
        hit = {oid for oid, e in entries.items()
               if e.encoding is Encoding.RAW and e.offset <= at < e.offset + e.stored_length}
        assert_each_object_intact_or_damaged(dst, objects, set() if truncate else hit)
        try:
            found = read_entries(copy)
        except PackFormatError:
            found = None
        # A pack's trailer describes it whole: truncation is always seen,
        # and a flip is seen unless it lies in a blob.
        assert found is None or (not truncate and at < min(e.offset + e.stored_length
                                                             for e in entries.values()
                                                             if e.stored_length) + size)
        if found is not None:
            assert {e.oid: e for e in found} == entries
    finally:
        shutil.rmtree(tmp)


@pytest.fixture(scope="module")
def seekable_store(tmp_path_factory):
    """A real store holding one compressed loose object of three frames."""
    root = tmp_path_factory.mktemp("seekable")
    content = b"".join(b"line %d of a log that compresses well\n" % i for i in range(260_000))
    assert len(content) > 8 << 20
    with Store.init(str(root / "S"), StoreConfig(loose_min_size=64 << 10,
                                                 chunk_min_size=1 << 40)) as s:
        oid = s.put_bytes(content)
        entry = s.entry(oid)
        assert entry.pack is None and entry.encoding is Encoding.ZSTD
        path = s.layout.loose_path(oid, entry.encoding)
        fd = os.open(path, os.O_RDONLY)
        assert len(read_seek_table(fd)) == 3
        os.close(fd)
    return root / "S", oid, content, path


@pytest.mark.plain_only
@PROPERTY
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255), truncate=st.booleans(),
       window=st.tuples(st.integers(0, 9 << 20), st.integers(1, 64 << 10)))
def test_every_seekable_flip_and_truncation_is_object_damage_or_harmless(seekable_store, where,
                                                                         mask, truncate, window):
    src, oid, content, path = seekable_store
    size = os.path.getsize(path)
    at = int(where * size)
    # Most of the file is frames; aim half the examples at the seek table.
    if where < 0.5:
        at = size - 1 - int(where * 2 * min(size, 64))
    tmp, dst = damaged_copy(src, None)
    try:
        copy = os.path.join(dst, os.path.relpath(path, src))
        if truncate:
            os.chmod(copy, 0o600)
            os.truncate(copy, at)
        else:
            flip(copy, at, mask)
        fd = os.open(copy, os.O_RDONLY)
        try:
            read_seek_table(fd)
        except SeekTableError:
            pass
        finally:
            os.close(fd)
        assert_each_object_intact_or_damaged(dst, {oid: content})
        start, length = window
        start = min(start, len(content) - 1)
        length = min(length, len(content) - start)
        buf = bytearray(length)
        with Store.open(dst) as s:
            try:
                s.read_into(oid, start, buf)
            except ObjectDamaged:
                return
        # read_into does not hash: undamaged frames read back as they were.
        if bytes(buf) != content[start:start + length]:
            assert not truncate, "a truncated object read back wrong bytes without an error"
    finally:
        shutil.rmtree(tmp)
