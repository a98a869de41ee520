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
