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
