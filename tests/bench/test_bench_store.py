"""Micro-benchmarks of the store's hot paths (pytest-benchmark).

The suite runs them once as plain tests (--benchmark-disable in pytest's
options); time them with:

    .venv/bin/python -m pytest tests/bench --benchmark-enable -p no:xdist
"""

import os

import pytest

from cas.objectid import hash_bytes
from cas.ops.verify import verify
from cas.storage.config import StoreConfig
from cas.storage.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store.init(str(tmp_path / "store"), StoreConfig())
    yield s
    s.close()


def test_bench_put_1000_small_objects(benchmark, store):
    blobs = [os.urandom(200) + b"text " * 400 for _ in range(1000)]

    def put_all():
        with store.writer() as w:
            for b in blobs:
                w.put_bytes(b)

    benchmark(put_all)
    assert store.index.object_count() == 1000


def test_bench_put_a_32_mib_file(benchmark, store, tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(1 << 20) * 16 + b"w" * (16 << 20))
    oid = benchmark(store.put_file, str(path))
    assert store.entry(oid).size == 32 << 20


def test_bench_read_back_a_32_mib_object(benchmark, store):
    data = os.urandom(1 << 20) * 32
    oid = store.put_bytes(data)
    result = benchmark(lambda: b"".join(store.iter_content(oid)))
    assert hash_bytes(result) == oid


def test_bench_verify_full(benchmark, store):
    with store.writer() as w:
        for i in range(2000):
            w.put_bytes(b"%d" % i * 100)
    report = benchmark(verify, store, True)
    assert report.ok and report.objects == 2000
