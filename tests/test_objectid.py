import shutil
import subprocess

import blake3
import pytest
from hypothesis import given, strategies as st

from cas.objectid import ObjectId, hash_bytes, hash_path


def test_an_id_is_the_blake3_of_the_content():
    assert hash_bytes(b"hello").hex == blake3.blake3(b"hello").hexdigest()


@given(st.binary(max_size=5000))
def test_hashing_a_file_and_its_bytes_agree(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("h") / "f"
    path.write_bytes(data)
    assert hash_path(path) == hash_bytes(data)


def test_large_inputs_hash_the_same_on_all_cores(tmp_path):
    data = bytes(range(256)) * (64 * 1024)  # 16 MiB: above the parallel threshold
    assert hash_bytes(data).hex == blake3.blake3(data).hexdigest()


@pytest.mark.skipif(shutil.which("b3sum") is None, reason="b3sum not installed")
def test_ids_match_b3sum(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 3_000_000)
    out = subprocess.run(["b3sum", str(path)], capture_output=True, check=True).stdout
    assert out.split()[0].decode() == hash_path(path).hex


def test_parse_round_trips_and_rejects_bad_text():
    oid = hash_bytes(b"a")
    assert ObjectId.parse(oid.hex) == oid
    assert oid.fanout() == (oid.hex[:2], oid.hex[2:])
    for bad in ["", "zz" * 32, oid.hex[:-1], oid.hex.upper() + "0"]:
        with pytest.raises(ValueError):
            ObjectId.parse(bad)
