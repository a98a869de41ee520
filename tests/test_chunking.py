"""Sub-file dedup: chunk boundaries, format-aware cuts, and what changes cost."""

import json
import os
import random
import sqlite3
import struct

import blake3
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from cas.model.history import History
from cas.ops.forget import forget
from cas.ops.gc import gc
from cas.ops.restore import restore
from cas.ops.snapshot import take_snapshot
from cas.storage.chunking import iter_chunks, safetensors_spans
from cas.storage.config import StoreConfig
from cas.storage.store import Store

from .conftest import write


def chunk_ids(store, path):
    oid = store.put_file(str(path))
    return oid, [c for c, _ in store.chunk_list(oid).chunks]


def added_bytes(store, fn) -> int:
    with store.writer() as w:
        fn(w)
        w.flush()
        return w.stored_bytes


def test_a_chunked_file_keeps_its_b3sum_id_and_round_trips(store, tmp_path):
    data = os.urandom(3 << 20) + b"tail" * 1000
    path = write(tmp_path / "f.bin", data)
    oid = store.put_file(str(path))
    assert oid.hex == blake3.blake3(data).hexdigest()
    assert store.chunk_list(oid) is not None
    assert b"".join(store.iter_content(oid)) == data
    with store.open_object(oid) as f:
        f.seek(2_000_000)
        assert f.read(100_000) == data[2_000_000:2_100_000]


def test_inserting_a_byte_at_the_start_changes_only_the_first_chunks(store, tmp_path):
    data = random.Random(1).randbytes(4 << 20)
    _, before = chunk_ids(store, write(tmp_path / "a", data))
    _, after = chunk_ids(store, write(tmp_path / "b", b"!" + data))
    assert len(before) > 30
    shared = set(before) & set(after)
    assert len(shared) >= len(before) - 2
    assert before[-1] == after[-1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 600_000), seed=st.integers(0, 2**32 - 1),
       repeat=st.booleans())
def test_files_across_the_chunking_threshold_round_trip(tmp_path_factory, size, seed, repeat):
    base = tmp_path_factory.mktemp("rt")
    cfg = StoreConfig(loose_min_size=128 << 10, pack_target_size=256 << 10, chunk_min_size=64 << 10)
    rng = random.Random(seed)
    data = (rng.randbytes(997) * (size // 997 + 1))[:size] if repeat else rng.randbytes(size)
    path = write(base / "f", data)
    with Store.init(str(base / "s"), cfg) as s:
        oid = s.put_file(str(path))
        assert oid.hex == blake3.blake3(data).hexdigest()
        assert b"".join(s.iter_content(oid)) == data
        chunks = s.chunk_list(oid)
        if size < 64 << 10:
            assert chunks is None
        elif chunks is not None:  # (a file that is one chunk is stored whole)
            assert len(chunks.chunks) > 1 and sum(n for _, n in chunks.chunks) == size


def test_appending_to_a_log_stores_little_more_than_the_append(store, tmp_path):
    rng = random.Random(2)
    words = [rng.randbytes(6).hex().encode() for _ in range(2000)]
    line = lambda i: b'{"seq":%d,"text":"%s"}\n' % (i, b" ".join(rng.choice(words) for _ in range(12)))  # noqa: E731
    log = b"".join(line(i) for i in range(60_000))
    path = write(tmp_path / "events.jsonl", log)
    store.put_file(str(path))
    appended = b"".join(line(i) for i in range(60_000, 61_500))
    with open(path, "ab") as f:
        f.write(appended)
    cost = added_bytes(store, lambda w: w.put_file(str(path)))
    assert cost < 2 * len(appended) + (256 << 10), (cost, len(appended))


def test_updating_one_percent_of_sqlite_rows_stores_a_few_percent(store, tmp_path):
    path = tmp_path / "state.db"
    rng = random.Random(3)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT, score REAL)")
    conn.executemany("INSERT INTO messages VALUES (?, ?, ?)",
                     [(i, rng.randbytes(300).hex(), rng.random()) for i in range(8000)])
    conn.commit()
    store.put_file(str(path))
    for i in rng.sample(range(8000), 80):
        conn.execute("UPDATE messages SET score=? WHERE id=?", (rng.random(), i))
    conn.commit()
    conn.close()
    size = path.stat().st_size
    cost = added_bytes(store, lambda w: w.put_file(str(path)))
    assert cost < size * 0.10, (cost, size)


def write_safetensors(path, tensors: dict[str, np.ndarray]) -> None:
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        raw = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    head = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_a_fine_tune_sharing_most_tensors_stores_only_the_changed_ones(store, tmp_path):
    rng = np.random.default_rng(4)
    base = {f"layers.{i}.{k}": rng.standard_normal((256, 256), dtype=np.float32)
            for i in range(10) for k in ("q", "k", "v", "o", "mlp")}
    write_safetensors(tmp_path / "base.safetensors", base)
    store.put_file(str(tmp_path / "base.safetensors"))
    tuned = dict(base)
    for name in list(base)[::10]:  # 10% of the tensors change
        tuned[name] = base[name] + 0.01
    tuned = {"extra.bias": np.zeros(7, np.float32), **tuned}  # header and offsets move
    write_safetensors(tmp_path / "tuned.safetensors", tuned)
    size = (tmp_path / "tuned.safetensors").stat().st_size
    cost = added_bytes(store, lambda w: w.put_file(str(tmp_path / "tuned.safetensors")))
    assert cost <= 0.15 * size, (cost, size)
    fd = os.open(tmp_path / "tuned.safetensors", os.O_RDONLY)
    try:
        spans = safetensors_spans(fd, size)
        assert len(spans) == len(tuned) + 1
        assert sum(len(c) for c in iter_chunks(fd, size)) == size
    finally:
        os.close(fd)


def test_shared_chunks_survive_forgetting_one_snapshot(tmp_path):
    src = tmp_path / "src"
    data = random.Random(5).randbytes(3 << 20)
    write(src / "model.bin", data)
    with Store.init(str(tmp_path / "store")) as store:
        history = History(store)
        first = take_snapshot(history, str(src), "main").snapshot
        write(src / "model.bin", data + b"fine-tuned tail" * 5000)
        second = take_snapshot(history, str(src), "main").snapshot
        forget(history, [first.oid])
        gc(history, grace_seconds=0)
        out = tmp_path / "out"
        report = restore(history, second, str(out))
        assert not report.problems
        assert (out / "model.bin").read_bytes() == data + b"fine-tuned tail" * 5000


def test_a_chunk_list_nested_thousands_deep_or_naming_its_own_file_is_malformed():
    import pytest
    from cas.objectid import hash_bytes
    from cas.storage.chunklist import ChunkList, ChunkListError
    with pytest.raises(ChunkListError, match="nested too deeply"):
        ChunkList.from_json(b"[" * 100_000 + b"]" * 100_000)
    oid, other = hash_bytes(b"file"), hash_bytes(b"chunk")
    good = ChunkList(oid, 7, ((other, 3), (other, 4))).to_json()
    assert ChunkList.from_json(good).size == 7
    with pytest.raises(ChunkListError, match="names its own file"):
        ChunkList.from_json(ChunkList(oid, 7, ((other, 3), (oid, 4))).to_json())
