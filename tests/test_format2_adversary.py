"""Adversarial tests of store format 2: binary chunk lists and small live files.

Crafted and damaged version 2 chunk lists (docs/FORMAT.md §14) reached
through the parser, the store's read paths and the real ``cas`` commands
(cat, restore, verify, gc, index rebuild, model verify); files that look
like SQLite databases but are not, logs that are binary, files changing
while they are cut; odd ``live_chunk_min_size`` and ``version`` values in
config.json (§2). Real stores, real files, real subprocesses.

``CAS_FUZZ_EXAMPLES`` scales the fuzzers (default 24
examples for the store-level fuzzers, a few CLI runs).
"""

from __future__ import annotations

import json
import os
import random
import resource
import sqlite3
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas.errors import ObjectDamaged, SourceError
from cas.objectid import ObjectId, hash_bytes
from cas.storage.chunklist import MAGIC, ChunkList, ChunkListError, _HEAD
from cas.storage.config import StoreConfig
from cas.storage.encoding import Encoding
from cas.storage.index import IndexEntry
from cas.storage.store import Store

from . import fuzz_support as fz
from .conftest import chunk_list_path, write

EXAMPLES = int(os.environ.get("CAS_FUZZ_EXAMPLES", "24"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
PAGE = 4096
COUNT_AT = _HEAD.size - 4          # the u32 chunk count
SIZE_AT = COUNT_AT - 8             # the u64 file size
IDS_AT = _HEAD.size


def cas(*args: str, cwd: Path, limits=None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_")}
    return subprocess.run([sys.executable, "-m", "cas.cli", *args], cwd=cwd, env=env,
                          capture_output=True, timeout=timeout, preexec_fn=limits)


def one_line_error(done: subprocess.CompletedProcess, codes=(1, 2)) -> str:
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode in codes, (done.returncode, err)
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.strip(), "an error without a word"
    return err


def make_db(path: Path, rows: int, page_size: int = PAGE, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    conn.executemany("INSERT INTO t VALUES (?, ?)",
                     [(i, rng.randbytes(150).hex()) for i in range(rows)])
    conn.commit()
    conn.close()
    return path.read_bytes()


def log_text(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += (json.dumps({"seq": len(out), "text": rng.randbytes(40).hex()}) + "\n").encode()
    return bytes(out[:size])


def replace_list(store_path: Path, oid: ObjectId, raw: bytes, size: int | None = None) -> None:
    """Put ``raw`` in place of ``oid``'s chunk list and record it as an index
    rebuild would (stored length = the file's length), so reads reach the parser."""
    path = chunk_list_path(store_path, oid.hex)
    os.chmod(path, 0o600)
    path.write_bytes(raw)
    with Store.open(str(store_path)) as store:
        entry = store.entry(oid)
        store.index.record([IndexEntry(oid, Encoding.CHUNKED,
                                       entry.size if size is None else size, len(raw))])


# -- the parser -----------------------------------------------------------------

@FUZZ
@given(body=st.binary(max_size=400), count=st.integers(0, 2**32 - 1),
       size=st.integers(0, 2**64 - 1), version=st.sampled_from([2, 2, 2, 1, 3, 2**32 - 1]))
def test_any_bytes_after_the_header_parse_to_a_sound_list_or_chunk_list_error(
        body, count, size, version):
    oid = ObjectId(bytes(range(32)))
    raw = _HEAD.pack(MAGIC, version, oid.digest, size, count) + body
    for data in (raw, raw[:len(raw) // 2]):
        try:
            listed = ChunkList.from_json(data)
        except ChunkListError:
            continue
        # What parses keeps every rule of §14.
        assert listed.oid == oid and version == 2
        assert len(listed.chunks) == count and all(n > 0 for _, n in listed.chunks)
        assert sum(n for _, n in listed.chunks) == listed.size == size
        assert ChunkList.from_json(listed.encode(2)) == listed


@pytest.mark.parametrize("runs", [
    b"\x80" * 9 + b"\x01",                     # a varint longer than 9 bytes
    b"\x01\x80\x00",                           # a length not in its shortest form
    b"\x01" + b"\xff" * 8 + b"\x7f",           # a 63-bit length (2**63 - 1)
    b"\x00\x01",                               # a run of no chunks
    b"\x01\x00",                               # a chunk of no bytes
    b"\x02\x01",                               # more chunks than the count
    b"",                                       # no runs at all
])
def test_odd_length_runs_are_refused(runs):
    oid, chunk = hash_bytes(b"f"), hash_bytes(b"c")
    raw = _HEAD.pack(MAGIC, 2, oid.digest, 1, 1) + chunk.digest + runs
    with pytest.raises(ChunkListError):
        ChunkList.from_json(raw)


def test_a_length_run_summing_past_2_to_the_64_is_refused_not_wrapped():
    oid, chunk = hash_bytes(b"f"), hash_bytes(b"c")
    big = (1 << 63) - 1
    runs = bytes([3]) + b"\xff" * 8 + b"\x7f"    # 3 chunks of 2**63 - 1
    wrapped = (3 * big) % (1 << 64)
    raw = _HEAD.pack(MAGIC, 2, oid.digest, wrapped, 3) + chunk.digest * 3 + runs
    with pytest.raises(ChunkListError, match="add up"):
        ChunkList.from_json(raw)


# -- a store of live files --------------------------------------------------------

class Base:
    """A format 2 store with a database, a log and a large file, snapshotted once."""

    def __init__(self, root: Path):
        self.root = root
        src = root / "src"
        src.mkdir()
        self.files = {
            "live.db": make_db(src / "live.db", 300),                 # ~90 pages of 4 KiB
            "today.jsonl": write(src / "today.jsonl", log_text(random.Random(2), 150_000))
            .read_bytes(),
            "big.bin": write(src / "big.bin", random.Random(3).randbytes(300_000)
                             + log_text(random.Random(4), 1_000_000)).read_bytes(),
            "note.txt": write(src / "note.txt", b"hello\n").read_bytes(),
        }
        Store.init(str(root / "S"), StoreConfig(pack_target_size=256 << 10)).close()
        done = cas("--store", str(root / "S"), "snapshot", str(src), "--no-sqlite-backup",
                   cwd=root)
        assert done.returncode == 0, done.stderr
        self.ids = {name: hash_bytes(data) for name, data in self.files.items()}
        with Store.open(str(root / "S")) as store:
            self.lists = {name: store.chunk_list(oid) for name, oid in self.ids.items()}
        assert all(self.lists[n] is not None for n in ("live.db", "today.jsonl", "big.bin"))
        assert chunk_list_path(root / "S", self.ids["live.db"].hex).read_bytes().startswith(MAGIC)

    def copy(self, dest: Path) -> Path:
        dest.mkdir(parents=True)
        subprocess.run(["cp", "-a", str(self.root / "S"), str(dest / "S")], check=True)
        return dest / "S"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    return Base(tmp_path_factory.mktemp("format2"))


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def runs_of(lengths) -> bytes:
    return b"".join(varint(1) + varint(n) for n in lengths)


@st.composite
def crafted_lists(draw, base: Base, target: str) -> bytes:
    """A damaged or hostile version 2 list for ``target``: header fields,
    chunk ids and length runs each possibly replaced, the result possibly cut
    or extended."""
    listed = base.lists[target]
    oid, size = listed.oid, listed.size
    ids = [c for c, _ in listed.chunks]
    lengths = [n for _, n in listed.chunks]
    other = base.ids["today.jsonl" if target != "today.jsonl" else "live.db"]
    pool = {"self": oid, "other list": other, "missing": hash_bytes(b"nothing"),
            "whole file": base.ids["note.txt"], "another chunk": base.lists["big.bin"].chunks[0][0]}
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(ids) - 1))
        ids[i] = pool[draw(st.sampled_from(sorted(pool)))]
    how = draw(st.sampled_from(["keep", "shift", "split", "huge", "zero", "swap"]))
    if how == "shift" and len(lengths) > 1:       # same total, bytes moved between chunks
        k = draw(st.integers(-lengths[0] + 1, lengths[1] - 1))
        lengths[0] += k
        lengths[1] -= k
    elif how == "split":                          # one more chunk, same total
        ids.insert(1, ids[0])
        lengths[0:1] = [1, lengths[0] - 1] if lengths[0] > 1 else [1, 1]
    elif how == "huge":
        lengths[-1] = draw(st.sampled_from([2**62, 2**63 - 1, size * 1000]))
    elif how == "zero":
        lengths[-1] = 0
    elif how == "swap" and len(ids) > 2:
        ids[1], ids[2] = ids[2], ids[1]
    count = draw(st.sampled_from([len(ids)] * 4 + [len(ids) + 1, max(len(ids) - 1, 0), 2**32 - 1]))
    head_size = draw(st.sampled_from([size] * 4 + [sum(lengths), size + 1, 0, 2**64 - 1]))
    head_id = draw(st.sampled_from([oid] * 4 + [other]))
    raw = (_HEAD.pack(MAGIC, 2, head_id.digest, head_size, count)
           + b"".join(c.digest for c in ids) + runs_of(lengths))
    end = draw(st.sampled_from(["whole"] * 3 + ["cut", "extend"]))
    if end == "cut":
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif end == "extend":
        raw += draw(st.binary(min_size=1, max_size=20))
    return raw


def check_reads(store: Store, oid: ObjectId, original: bytes) -> None:
    """Every read path gives the original bytes or ObjectDamaged, never another error."""
    try:
        got = b"".join(store.iter_content(oid))
        assert got == original
    except ObjectDamaged:
        pass
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        store.write_content(oid, fd)
    except ObjectDamaged:
        pass
    finally:
        os.close(fd)
    for call in (lambda: store.chunk_list(oid), lambda: store.backing_files(oid)):
        try:
            call()
        except ObjectDamaged:
            pass
    # read_into is not checked against ids by design (a list of the same
    # pages in another order reads without error), but it compares each
    # listed length with its chunk's recorded size: it fails only as damage.
    buf = bytearray(min(len(original), 10_000))
    try:
        store.read_into(oid, max(0, len(original) - len(buf)), buf)
    except ObjectDamaged:
        pass


@pytest.mark.plain_only
@FUZZ
@given(data=st.data(), target=st.sampled_from(["live.db", "today.jsonl"]))
def test_crafted_binary_lists_read_as_the_file_or_as_damage(base, tmp_path_factory, data, target):
    store_path = base.copy(tmp_path_factory.mktemp("craft") / "c")
    raw = data.draw(crafted_lists(base, target))
    oid = base.ids[target]
    replace_list(store_path, oid, raw)
    with Store.open(str(store_path)) as store:
        check_reads(store, oid, base.files[target])
    fz.remove_tree(store_path.parent)


@pytest.mark.plain_only
def test_two_lists_naming_each_other_are_damage_not_a_loop(base, tmp_path):
    """A cycle: the database's list names the log as a chunk and the log's
    list names the database. Every command ends, with one-line errors."""
    store_path = base.copy(tmp_path / "c")
    db, log = base.lists["live.db"], base.lists["today.jsonl"]
    replace_list(store_path, db.oid, ChunkList(db.oid, log.size, ((log.oid, log.size),)).to_binary(),
                 size=log.size)
    replace_list(store_path, log.oid, ChunkList(log.oid, db.size, ((db.oid, db.size),)).to_binary(),
                 size=db.size)
    for args in (("cat", "HEAD:live.db"), ("verify", "--full"), ("restore", "HEAD", "--to",
                                                                 str(tmp_path / "out"))):
        one_line_error(cas("--store", str(store_path), *args, cwd=tmp_path, timeout=30))
    done = cas("--store", str(store_path), "gc", "--dry-run", cwd=tmp_path, timeout=30)
    assert done.returncode in (0, 1), done.stderr


# -- the real commands on crafted lists ------------------------------------------

@pytest.mark.plain_only
@settings(max_examples=max(EXAMPLES // 6, 2), deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_commands_on_a_crafted_binary_list_end_cleanly(base, tmp_path_factory, data):
    """cat, restore, verify, gc, index rebuild on a store with one crafted
    list, each a process with time and memory limits: exit 0, 1 or 2, no
    traceback; whatever cat or restore write with exit 0 is the file."""
    work = tmp_path_factory.mktemp("cli")
    store_path = base.copy(work / "c")
    raw = data.draw(crafted_lists(base, "live.db"))
    replace_list(store_path, base.ids["live.db"], raw)
    out = work / "out"
    commands = [("cat", "HEAD:live.db", "-o", str(out / "cat1")),
                ("restore", "HEAD", "--to", str(out / "r1")),
                ("verify",), ("verify", "--full"), ("gc", "--dry-run"),
                ("index", "rebuild"),
                ("cat", base.ids["live.db"].hex, "-o", str(out / "cat2")),
                ("restore", "HEAD", "--to", str(out / "r2"))]
    out.mkdir()
    outcomes = _drive(store_path, work, commands)
    assert not fz.problems(outcomes), fz.problems(outcomes)
    original = base.files["live.db"]
    for o in outcomes:
        if o.code == 0 and o.args[0] == "cat":
            assert Path(o.args[-1]).read_bytes() == original
        if o.code == 0 and o.args[0] == "restore":
            assert (Path(o.args[-1]) / "live.db").read_bytes() == original
    fz.remove_tree(work)


def _drive(store: Path, cwd: Path, commands: list[tuple[str, ...]]) -> list[fz.Outcome]:
    """The fuzzer's driver: one warm interpreter forks a limited child per command."""
    full = [("--store", str(store), *c) for c in commands]
    r = subprocess.run([sys.executable, "-m", "tests.fuzz_support", str(cwd)], cwd=fz.REPO,
                       env=fz._clean_env(), input=json.dumps(full).encode(), capture_output=True,
                       timeout=fz.COMMAND_TIMEOUT * (len(full) + 2))
    assert r.returncode == 0, r.stderr.decode()
    return [fz.Outcome(tuple(o["args"][2:]), o["code"], o["err"], o["seconds"])
            for o in json.loads(r.stdout)]


# -- bugs found ------------------------------------------------------------------

def test_a_page_equal_to_a_chunked_log_still_restores(tmp_path):
    """A 64 KiB log cut by LIVE_CDC, then a database with 64 KiB pages holding
    the same bytes as a page: the page's id names a chunk list, which a new
    list must not name as a chunk (readers refuse it as damage)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    data = make_db(tmp_path / "big.db", 1000, page_size=65536, seed=5)
    page = data[4 * 65536:5 * 65536]
    (tree / "page.log").write_bytes(page)
    assert cas("init", cwd=tree).returncode == 0
    assert cas("snapshot", "-m", "log", cwd=tree).returncode == 0
    with Store.open(str(tree / ".cas")) as store:   # the log was cut: a chunk list under its id
        assert store.chunk_list(hash_bytes(page)) is not None
    os.rename(tmp_path / "big.db", tree / "big.db")
    assert cas("snapshot", "--no-sqlite-backup", "-m", "db", cwd=tree).returncode == 0
    done = cas("cat", "HEAD:big.db", cwd=tree)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data


def _tensor_and_blob(tmp_path: Path) -> tuple[Path, bytes, Path, bytes]:
    """A safetensors file whose second tensor is, byte for byte, a file large
    enough to be stored as chunks of its own."""
    rng = random.Random(11)
    blob = rng.randbytes(1_500_000)
    blob_path = write(tmp_path / "blob.bin", blob)
    data = write_safetensors(tmp_path / "m.safetensors", {"a": rng.randbytes(300_000), "b": blob})
    return blob_path, blob, tmp_path / "m.safetensors", data


def _assert_flat_and_readable(store: Store, oid: ObjectId, data: bytes) -> None:
    assert all(store.entry(c).encoding is not Encoding.CHUNKED and store.entry(c).size == n
               for c, n in store.chunk_list(oid).chunks)
    assert store.read_object(oid) == data
    buf = bytearray(len(data))
    store.read_into(oid, 0, buf)
    assert buf == data


@pytest.mark.parametrize("one_writer", [False, True])
def test_a_tensor_equal_to_a_chunked_file_still_reads(tmp_path, one_writer):
    """The tensor's chunk has the id of the chunked file: stored before the
    model (indexed) or in the same writer (its list still waiting to be
    published), the model's list takes that file's chunks in its place."""
    blob_path, blob, model_path, data = _tensor_and_blob(tmp_path)
    with Store.init(str(tmp_path / "S")) as store:
        if one_writer:
            with store.writer() as w:
                w.put_file(str(blob_path))
                oid = w.put_file(str(model_path))[0]
        else:
            store.put_file(str(blob_path))
            oid = store.put_file(str(model_path))
        assert store.entry(hash_bytes(blob)).encoding is Encoding.CHUNKED
        blob_chunks = store.chunk_list(hash_bytes(blob)).chunks
        assert set(blob_chunks) <= set(store.chunk_list(oid).chunks)
        _assert_flat_and_readable(store, oid, data)
        _assert_flat_and_readable(store, hash_bytes(blob), blob)


def test_a_file_equal_to_a_chunk_stored_whole_before_it_stays_whole(tmp_path):
    """The other order: the tensor's chunk is stored whole first, then the
    file with its bytes is that chunk, not a chunk list of its own."""
    blob_path, blob, model_path, data = _tensor_and_blob(tmp_path)
    with Store.init(str(tmp_path / "S")) as store:
        with store.writer() as w:
            oid = w.put_file(str(model_path))[0]
            assert w.put_file(str(blob_path))[0] == hash_bytes(blob)
        assert store.entry(hash_bytes(blob)).encoding is not Encoding.CHUNKED
        _assert_flat_and_readable(store, oid, data)
        assert store.read_object(hash_bytes(blob)) == blob


@pytest.mark.plain_only
def test_a_chunk_equal_to_a_damaged_chunked_file_is_stored_whole(tmp_path):
    """The chunked file's list is unreadable: the new file's chunk is stored
    whole, and the index takes the whole copy in place of the damaged list."""
    blob_path, blob, model_path, data = _tensor_and_blob(tmp_path)
    with Store.init(str(tmp_path / "S")) as store:
        store.put_file(str(blob_path))
    blob_id = hash_bytes(blob)
    replace_list(tmp_path / "S", blob_id, b"CASLIST\0 not a list")
    with Store.open(str(tmp_path / "S")) as store:
        oid = store.put_file(str(model_path))
        assert store.entry(blob_id).encoding is not Encoding.CHUNKED
        _assert_flat_and_readable(store, oid, data)
        assert store.read_object(blob_id) == blob


@pytest.mark.plain_only
@pytest.mark.parametrize("damage", ["names a chunk list", "lengths disagree"])
def test_quick_verify_reports_a_list_no_read_can_follow(base, tmp_path, damage):
    """Plain verify checks each listed chunk against the index's word: a
    whole object of the listed length, as cat and restore need."""
    store_path = base.copy(tmp_path / "c")
    if damage == "names a chunk list":
        # A new file: the log (a chunk list) then the note (a whole object),
        # each listed with its true size.
        log, note = base.lists["today.jsonl"], base.ids["note.txt"]
        content = base.files["today.jsonl"] + base.files["note.txt"]
        oid = hash_bytes(content)
        raw = ChunkList(oid, len(content), ((log.oid, log.size), (note, 6))).to_binary()
        path = chunk_list_path(store_path, oid.hex)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(raw)
        with Store.open(str(store_path)) as store:
            store.index.record([IndexEntry(oid, Encoding.CHUNKED, len(content), len(raw))])
        target = oid.hex
    else:
        listed = base.lists["live.db"]
        chunks = list(listed.chunks)
        (a, n), (b, m) = chunks[0], chunks[1]
        chunks[0], chunks[1] = (a, n + 100), (b, m - 100)
        replace_list(store_path, listed.oid,
                     ChunkList(listed.oid, listed.size, tuple(chunks)).to_binary())
        target = "HEAD:live.db"
    one_line_error(cas("--store", str(store_path), "cat", target, cwd=tmp_path))
    done = cas("--store", str(store_path), "verify", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    why = "names the chunked object" if damage == "names a chunk list" else "bytes for chunk"
    assert why in (done.stdout + done.stderr).decode(), done


def write_safetensors(path: Path, tensors: dict[str, bytes]) -> bytes:
    header, blobs, offset = {}, [], 0
    for name, blob in tensors.items():
        header[name] = {"dtype": "F16", "shape": [len(blob) // 2],
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return write(path, struct.pack("<Q", len(head)) + head + b"".join(blobs)).read_bytes()


def shift_first_tensor_bytes(store_path: Path, oid: ObjectId, moved: int = 100) -> None:
    """Move ``moved`` bytes from the second chunk's listed length to the first's:
    the same total, so only a reader that compares each chunk with its
    listed length can tell."""
    with Store.open(str(store_path)) as store:
        listed = store.chunk_list(oid)
    chunks = list(listed.chunks)
    (a, n), (b, m) = chunks[1], chunks[2]
    chunks[1], chunks[2] = (a, n + moved), (b, m - moved)
    replace_list(store_path, oid, ChunkList(oid, listed.size, tuple(chunks)).to_binary())


@pytest.mark.plain_only
def test_model_verify_of_a_list_with_shifted_lengths_is_exit_1(tmp_path):
    """Lengths moved between two zstd chunks: read_into compares each listed
    length with the chunk's recorded size, so the damage is reported (once a
    ValueError from a short slice: exit 70)."""
    model = tmp_path / "tiny"
    rng = random.Random(7)
    blob = lambda: bytes(rng.choice(b"\x00\x3c\x40\x42") for _ in range(600_000))  # noqa: E731
    data = write_safetensors(model / "model.safetensors", {"a": blob(), "b": blob()})
    (model / "config.json").write_text('{"model_type": "llama"}')
    store = tmp_path / "S"
    Store.init(str(store)).close()
    # A snapshot first stores the tensors' chunks compressed; the import shares them.
    assert cas("--store", str(store), "snapshot", str(model), cwd=tmp_path).returncode == 0
    assert cas("--store", str(store), "model", "import", "--chunked", str(model),
               cwd=tmp_path).returncode == 0
    oid = hash_bytes(data)
    with Store.open(str(store)) as s:
        assert all(s.entry(c).encoding is Encoding.ZSTD for c, _ in s.chunk_list(oid).chunks)
    shift_first_tensor_bytes(store, oid)
    one_line_error(cas("--store", str(store), "model", "verify", "tiny", cwd=tmp_path))


@pytest.mark.plain_only
def test_read_into_never_reads_past_a_chunk_into_its_neighbour(tmp_path):
    """A list that moves bytes between two raw packed chunks' lengths: reading
    by the list would run past the first chunk into the next object."""
    rng = random.Random(8)
    data = write_safetensors(tmp_path / "m.safetensors",
                             {"a": rng.randbytes(600_000), "b": rng.randbytes(600_000)})
    with Store.init(str(tmp_path / "S")) as store:
        oid = store.put_file(str(tmp_path / "m.safetensors"))
        first = store.chunk_list(oid).chunks[1]
        assert store.entry(first[0]).encoding is Encoding.RAW and store.entry(first[0]).pack
    shift_first_tensor_bytes(tmp_path / "S", oid)
    with Store.open(str(tmp_path / "S")) as store:
        start = len(data) - 1_200_000
        buf = bytearray(first[1] + 100)
        with pytest.raises(ObjectDamaged):
            store.read_into(oid, start, buf)


def _data_limit() -> None:
    # RLIMIT_DATA as in the crafted-store fuzzer: LMDB maps a range it never touches.
    resource.setrlimit(resource.RLIMIT_DATA, (fz.MEMORY_LIMIT, fz.MEMORY_LIMIT))


@pytest.mark.plain_only
def test_index_rebuild_bounds_what_it_reads_of_a_chunk_list(tmp_path):
    """A sparse 3 GiB file planted under objects/ (no disk used) whose header
    claims 90 million chunks: rebuild takes the header's word for the size
    (the count can need that length) and reads nothing more; a read of the
    list under a 2 GiB data limit is damage, not MemoryError and exit 70."""
    store = tmp_path / "S"
    Store.init(str(store)).close()
    oid = ObjectId(bytes([0xAB]) * 32)
    path = chunk_list_path(store, oid.hex)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(_HEAD.pack(MAGIC, 2, oid.digest, 1 << 40, 90_000_000))
        f.truncate(3 << 30)
    done = cas("--store", str(store), "index", "rebuild", cwd=tmp_path, limits=_data_limit)
    assert done.returncode in (0, 1), done.stderr
    assert b"Traceback" not in done.stderr and b"internal error" not in done.stderr
    one_line_error(cas("--store", str(store), "cat", oid.hex, cwd=tmp_path, limits=_data_limit))
    done = cas("--store", str(store), "verify", cwd=tmp_path, limits=_data_limit)
    assert done.returncode == 1 and b"Traceback" not in done.stderr, done


@pytest.mark.plain_only
@pytest.mark.parametrize("form", ["binary", "json"])
def test_index_rebuild_refuses_a_chunk_list_longer_than_its_chunks_need(tmp_path, form):
    """Bytes past what the header's count can need (or a version 1 list past
    the cap) make the file a bad one, reported, not read."""
    store = tmp_path / "S"
    Store.init(str(store)).close()
    oid = ObjectId(bytes([0xCD]) * 32)
    path = chunk_list_path(store, oid.hex)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        if form == "binary":
            f.write(_HEAD.pack(MAGIC, 2, oid.digest, 1 << 20, 16))
        else:
            f.write(b'{"chunks":[')
        f.truncate(3 << 30)
    done = cas("--store", str(store), "index", "rebuild", cwd=tmp_path, limits=_data_limit)
    assert done.returncode in (0, 1), done.stderr
    assert b"Traceback" not in done.stderr and b"internal error" not in done.stderr
    with Store.open(str(store)) as s:
        assert not s.has(oid)


# -- config.json ------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [
    ("live_chunk_min_size", 0), ("live_chunk_min_size", -65536),
    ("live_chunk_min_size", 2**50 + 1), ("live_chunk_min_size", 2**64),
    ("live_chunk_min_size", "65536"), ("live_chunk_min_size", 65536.0),
    ("live_chunk_min_size", True), ("live_chunk_min_size", None),
    ("live_chunk_min_size", [65536]), ("version", 3), ("version", 0), ("version", "2"),
    ("version", 2.0), ("version", True), ("version", 2**70), ("version", None),
])
def test_odd_config_values_are_one_line_errors(tmp_path, key, value):
    store = tmp_path / "S"
    Store.init(str(store)).close()
    doc = json.loads((store / "config.json").read_text())
    doc[key] = value
    os.chmod(store / "config.json", 0o600)
    (store / "config.json").write_text(json.dumps(doc))
    (tmp_path / "src").mkdir()
    err = one_line_error(cas("--store", str(store), "snapshot", str(tmp_path / "src"),
                             cwd=tmp_path))
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("live,expect_cut", [(1, True), (2**50, False)])
def test_extreme_live_thresholds_still_restore_bit_exact(tmp_path, live, expect_cut):
    """live_chunk_min_size at its bounds: 1 (every log and database is cut,
    even a few bytes) and 2**50 (none is)."""
    store = tmp_path / "S"
    Store.init(str(store), StoreConfig(live_chunk_min_size=live)).close()
    src = tmp_path / "src"
    src.mkdir()
    files = {"tiny.log": b"x", "small.jsonl": log_text(random.Random(1), 20_000),
             "db.sqlite": make_db(src / "db.sqlite", 40)}
    for name, data in files.items():
        write(src / name, data)
    # Bytes as they are: the backup API would restamp the database's header.
    assert cas("--store", str(store), "snapshot", "--no-sqlite-backup", str(src),
               cwd=tmp_path).returncode == 0
    with Store.open(str(store)) as s:
        assert (s.chunk_list(hash_bytes(files["small.jsonl"])) is not None) is expect_cut
        assert s.chunk_list(hash_bytes(files["tiny.log"])) is None   # one chunk: stored whole
    done = cas("--store", str(store), "restore", "HEAD", "--to", str(tmp_path / "out"),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert cas("--store", str(store), "verify", "--full", cwd=tmp_path).returncode == 0


# -- what the new cutting takes in --------------------------------------------------

def sqlite_lookalike(page_field: int, size: int, seed: int) -> bytes:
    """The SQLite header's magic and page size field, random bytes after."""
    rng = random.Random(seed)
    head = b"SQLite format 3\0" + struct.pack(">H", page_field) + rng.randbytes(82)
    return (head + rng.randbytes(max(size - len(head), 0)))[:size]


@FUZZ
@given(page_field=st.sampled_from([0, 1, 2, 511, 512, 513, 1024, 4096, 32768, 65535]),
       pages=st.integers(1, 40), extra=st.sampled_from([0, 0, 1, -1, 100]),
       name=st.sampled_from(["x.db", "x.sqlite", "x.jsonl", "x.LOG", "x.bin", "x"]),
       seed=st.integers(0, 1000))
def test_files_that_look_like_databases_or_logs_restore_bit_exact(
        tmp_path_factory, page_field, pages, extra, name, seed):
    """Headers that say SQLite over random bytes, page size fields 0, 1
    (65536), odd or not dividing the size, binary content named as a log:
    whatever way each is cut, it reads back as it was."""
    work = tmp_path_factory.mktemp("look")
    page = 65536 if page_field == 1 else max(page_field, 512)
    data = sqlite_lookalike(page_field, max(pages * page + extra, 100), seed)
    write(work / name, data)
    with Store.init(str(work / "S"), StoreConfig(live_chunk_min_size=4096)) as store:
        oid = store.put_file(str(work / name))
        assert oid == hash_bytes(data)
        assert b"".join(store.iter_content(oid)) == data
        listed = store.chunk_list(oid)
        if listed is not None:
            assert all(n <= 4 << 20 for _, n in listed.chunks)
            buf = bytearray(len(data))
            store.read_into(oid, 0, buf)
            assert bytes(buf) == data
    fz.remove_tree(work)


def test_a_database_rewritten_while_it_is_cut_is_stored_as_one_of_its_states(tmp_path):
    """A writer keeps rewriting pages of a database (and appending a page)
    while it is stored: what is stored is a state the file really had, or
    the file is refused as changing, never a mix."""
    path = tmp_path / "live.db"
    make_db(path, 600)
    states = {hash_bytes(path.read_bytes())}
    stop = threading.Event()
    lock = threading.Lock()

    def churn() -> None:
        rng = random.Random(9)
        fd = os.open(path, os.O_WRONLY)
        try:
            while not stop.is_set():
                size = os.fstat(fd).st_size
                offset = rng.randrange(1, size // PAGE) * PAGE
                with lock:
                    if rng.random() < 0.2:
                        os.pwrite(fd, rng.randbytes(PAGE), size)
                    else:
                        os.pwrite(fd, rng.randbytes(PAGE), offset)
                    states.add(hash_bytes(path.read_bytes()))
        finally:
            os.close(fd)

    thread = threading.Thread(target=churn)
    stored = []
    with Store.init(str(tmp_path / "S")) as store:
        thread.start()
        try:
            for _ in range(30):
                try:
                    stored.append(store.put_file(str(path)))
                except SourceError:
                    pass
        finally:
            stop.set()
            thread.join()
        assert stored, "every attempt refused: the test stored nothing"
        for oid in stored:
            assert oid in states
            assert hash_bytes(b"".join(store.iter_content(oid))) == oid


@pytest.mark.plain_only
def test_a_version_1_store_gets_json_lists_from_every_writer(tmp_path):
    """Snapshot (database, log), model import --chunked, watcher-style
    backup capture: every list a version 1 store gets is JSON."""
    store = tmp_path / "S"
    Store.init(str(store), StoreConfig(version=1)).close()
    src = tmp_path / "src"
    src.mkdir()
    make_db(src / "m.db", 300)
    write(src / "today.jsonl", log_text(random.Random(3), 150_000))
    model = tmp_path / "model"
    rng = random.Random(4)
    write_safetensors(model / "model.safetensors", {"a": rng.randbytes(600_000),
                                                    "b": rng.randbytes(600_000)})
    (model / "config.json").write_text('{"model_type": "llama"}')
    for args in (("snapshot", str(src)), ("snapshot", "--sqlite-backup", str(src)),
                 ("model", "import", "--chunked", str(model))):
        done = cas("--store", str(store), *args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
    lists = list((store / "objects").glob("*/*.chunks"))
    assert len(lists) >= 3
    for path in lists:
        assert path.read_bytes().startswith(b"{"), path
    assert json.loads((store / "config.json").read_text())["version"] == 1
    assert cas("--store", str(store), "verify", "--full", cwd=tmp_path).returncode == 0
