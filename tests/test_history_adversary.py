"""History against a brute-force reading of ``snapshots/*.json``.

Every question the history commands answer (``cas log`` with REF, -n,
--since, --until, --all and -- PATH; ``REF~N``; ``restore --at``) is
recomputed here from the record files alone, parsed as plain JSON, and
compared with what cas says: after random records, forgets, forks, equal
and pre-1970 times, hand edits, crashes (real SIGKILLed processes) and
concurrent writers. CAS_FUZZ_EXAMPLES scales the property test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas.cli.main import run
from cas.model.history import History
from cas.model.snapshot import Snapshot
from cas.model.tree import FILE, Tree, TreeEntry
from cas.objectid import hash_bytes
from cas.storage.store import Store

from .conftest import cas_process, write

EXAMPLES = int(os.environ.get("CAS_FUZZ_EXAMPLES", "20"))
DAY = 86_400 * 10**9
T0 = 1_700_000_000 * 10**9
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# -- the oracle: records read as plain JSON -------------------------------------------

@dataclass(frozen=True)
class Rec:
    id: str
    branch: str
    time_ns: int
    parent: str | None
    tree: str

    @property
    def key(self):
        return (self.time_ns, bytes.fromhex(self.id))


def records(store_dir: Path) -> dict[str, Rec]:
    out = {}
    for name in os.listdir(store_dir / "snapshots"):
        if not name.endswith(".json") or len(name) != 69:
            continue
        data = (store_dir / "snapshots" / name).read_bytes()
        if hash_bytes(data).hex != name[:-5]:
            continue
        doc = json.loads(data)
        out[name[:-5]] = Rec(name[:-5], doc["branch"], doc["time_ns"],
                             (doc["parents"] or [None])[0], doc["tree"])
    return out


def oracle_lineage(recs: dict[str, Rec], start: Rec, whole: bool,
                   every: dict[str, Rec] | None = None) -> list[Rec]:
    """FORMAT §10.3: the start's branch newest first (all of it, or from the
    start back), continued into the branch a fork came from (found through
    forgotten snapshots, ``every``, whose manifests are still stored)."""
    out = []
    for branch, bound in oracle_stretches(recs, start, whole, every or recs):
        out += sorted((r for r in recs.values() if r.branch == branch and (bound is None or r.key <= bound)),
                      key=lambda r: r.key, reverse=True)
    return out


def oracle_stretches(recs, start, whole, every):
    seen, snap = {start.id}, start
    while True:
        yield snap.branch, None if whole else snap.key
        rows = sorted((r for r in recs.values() if r.branch == snap.branch
                       and (whole or r.key <= snap.key)), key=lambda r: r.key)
        whole = False
        oldest = rows[0] if rows else snap
        parent, pid = None, oldest.parent
        while pid is not None and pid not in seen and pid in every:
            seen.add(pid)
            if pid in recs:
                parent = recs[pid]
                break
            pid = every[pid].parent
        if parent is None or parent.branch == snap.branch:
            return
        snap = parent


def oracle_at(recs: dict[str, Rec], branch: str, t: int, head: Rec | None = None,
              every: dict[str, Rec] | None = None) -> str | None:
    stretches = oracle_stretches(recs, head, head.branch == branch, every or recs) if head \
        else [(branch, None)]
    for name, bound in stretches:
        rows = [r for r in recs.values() if r.branch == name and r.time_ns <= t
                and (bound is None or r.key <= bound)]
        if rows:
            return max(rows, key=lambda r: r.key).id
    return None


def iso(ns: int) -> str:
    return (_EPOCH + timedelta(microseconds=ns // 1000)).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- building stores through the API, querying through the CLI ------------------------

FILE_VARIANTS = [b"zero", b"one", b"two", None]  # None: no file 'a' in the tree


def make_trees(writer) -> list[str]:
    trees = []
    for content in FILE_VARIANTS:
        entries = []
        if content is not None:
            blob = writer.put_bytes(content)
            entries.append(TreeEntry(b"a", FILE, 0o644, 0, len(content), blob))
        trees.append(writer.put_bytes(Tree.build(entries).to_json()))
    writer.flush()
    return trees


def record(history, writer, tree, branch, time_ns, parent=None, msg="m"):
    head = history.branch_head(branch) if parent is None else None
    parents = (parent,) if parent is not None else ((head.oid,) if head else ())
    snap = Snapshot(tree=tree, parents=parents, time_ns=time_ns, message=msg, branch=branch,
                    host="h", user="u", source="/src/" + branch)
    return history.record(snap, writer)


def cli(store_dir: Path, *args: str) -> tuple[int, bytes, str]:
    """The CLI in this process (a subprocess costs 0.3 s), output captured."""
    out, err = io.BytesIO(), io.BytesIO()
    so, se = io.TextIOWrapper(out, "utf-8"), io.TextIOWrapper(err, "utf-8")
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        code = run(["--store", str(store_dir), *args])
        so.flush()
        se.flush()
    return code, out.getvalue(), err.getvalue().decode("utf-8", "replace")


def log_ids(store_dir: Path, *args: str) -> list[str]:
    code, out, err = cli(store_dir, "log", "--json", *args)
    assert code == 0, err
    return [s["id"] for s in json.loads(out)]


# -- the property: cas log, ~N and --at against the oracle ----------------------------

TIMES = st.one_of(st.integers(-3, 3).map(lambda d: T0 + d * DAY),   # equal times are common
                  st.integers(-2, 2).map(lambda d: -T0 + d * DAY),  # before 1970
                  st.integers(0, 10**6).map(lambda s: T0 + s * 10**9))
STEP = st.tuples(st.sampled_from(["snap", "snap", "snap", "fork", "forget", "forget_many"]),
                 st.sampled_from(["main", "side", "br"]), TIMES,
                 st.integers(0, len(FILE_VARIANTS) - 1), st.integers(0, 10**6))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=14), query=st.integers(0, 10**6))
def test_log_tilde_and_at_match_the_records(tmp_path_factory, steps, query):
    store_dir = tmp_path_factory.mktemp("adv") / "store"
    every = _build(store_dir, steps)
    recs = records(store_dir)
    rng = random.Random(query)
    with Store.open(str(store_dir)) as store:
        history = History(store)
        for branch in ("main", "side", "br"):
            want = sorted((r for r in recs.values() if r.branch == branch), key=lambda r: r.key,
                          reverse=True)
            assert [e.oid.hex for e in history.timeline(branch)] == [r.id for r in want]
            t = rng.choice([r.time_ns for r in recs.values()] + [T0, -T0, 0])
            got = history.at_time(branch, t)
            ref = history.refs.get("refs/heads/" + branch)
            head = every.get(ref.hex) if ref else None
            assert (got.oid.hex if got else None) == oracle_at(recs, branch, t, head, every)
        for start in rng.sample(sorted(recs.values(), key=lambda r: r.id), min(3, len(recs))):
            line = oracle_lineage(recs, start, whole=False, every=every)
            assert [e.oid.hex for e in history.lineage(history.load_snapshot(_oid(start.id)))] \
                == [r.id for r in line]
            n = rng.randint(1, len(line) + 1)
            older = [r.id for r in line if r.id != start.id]
            if n <= len(older):
                assert history.resolve(f"{start.id}~{n}").oid.hex == older[n - 1]
            else:
                with pytest.raises(Exception, match="goes back further"):
                    history.resolve(f"{start.id}~{n}")
        heads = {b: history.refs.get("refs/heads/" + b) for b in ("main", "side", "br")}
        trees = {r.tree for r in recs.values()}
        file_of = {t: _file_a(history, t) for t in trees}
    for branch, head in heads.items():
        if head is None:
            continue
        _check_cli_log(store_dir, recs, branch, head.hex, file_of, rng, every)
    _check_cli_all(store_dir, recs)


def _oid(hexid):
    from cas.objectid import ObjectId
    return ObjectId.parse(hexid)


def _file_a(history, tree_hex):
    e = history.load_tree(_oid(tree_hex)).get(b"a")
    return e.oid.hex if e else None


def _build(store_dir: Path, steps) -> dict[str, Rec]:
    """Build the store; returns every snapshot recorded, forgotten or not."""
    every: dict[str, Rec] = {}
    store = Store.init(str(store_dir))
    try:
        history = History(store)
        with store.writer() as writer:
            trees = make_trees(writer)
            made = []
            for i, (op, branch, t, variant, pick) in enumerate(steps):
                alive = sorted(o.hex for o in history._recorded_ids())
                if op == "snap":
                    made.append(record(history, writer, trees[variant], branch, t, msg=f"s{i}").oid)
                elif op == "fork" and alive:
                    # cas branch NAME SNAP, then a snapshot on NAME: its parent is on another branch.
                    base = history.load_snapshot(_oid(alive[pick % len(alive)]))
                    if base.branch != branch and history.refs.get("refs/heads/" + branch) is None:
                        history.refs.set("refs/heads/" + branch, base.oid)
                        # Not older than its base: see test_since_across_a_fork_back_in_time.
                        made.append(record(history, writer, trees[variant], branch,
                                           max(t, base.time_ns), parent=base.oid, msg=f"f{i}").oid)
                elif op == "forget" and alive:
                    history.forget_many([_oid(alive[pick % len(alive)])])
                elif op == "forget_many" and alive:
                    history.forget_many([e for j, e in enumerate(history.timeline(branch))
                                         if (j + pick) % 3 == 0])
            for oid in made:
                s = history.load_snapshot(oid)
                every[oid.hex] = Rec(oid.hex, s.branch, s.time_ns, s.parent.hex if s.parent else None,
                                     s.tree.hex)
    finally:
        store.close()
    return every


def _check_cli_log(store_dir, recs, branch, head_hex, file_of, rng, every):
    head = recs.get(head_hex)
    if head is None or head.branch != branch:
        return  # a ref left on a forgotten snapshot by forget_many (the ops layer moves it)
    line = oracle_lineage(recs, head, whole=True, every=every)
    assert log_ids(store_dir, branch) == [r.id for r in line]
    times = sorted({r.time_ns for r in line} | {T0})
    since, until = sorted(rng.choice(times) for _ in range(2))
    n = rng.randint(0, len(line) + 1)
    changed = [file_of[r.tree] != (file_of[line[i + 1].tree] if i + 1 < len(line) else None)
               for i, r in enumerate(line)]
    want = [r.id for r, c in zip(line, changed) if c and since <= r.time_ns <= until][:n]
    got = log_ids(store_dir, branch, "-n", str(n), "--since", iso(since), "--until", iso(until),
                  "--", "a")
    assert got == want


def _check_cli_all(store_dir, recs):
    want = sorted(recs.values(), key=lambda r: r.key, reverse=True)
    assert log_ids(store_dir, "--all") == [r.id for r in want]


# -- bugs found and fixed: each test failed before its fix -----------------------------------------

def test_times_beyond_64_bits_keep_their_order(tmp_path):
    store_dir = tmp_path / "store"
    store = Store.init(str(store_dir))
    years = [2000, 2300, 2400, 2200, 1600, 1500]
    try:
        history = History(store)
        with store.writer() as writer:
            tree = make_trees(writer)[0]
            for y in years:
                t = (datetime(y, 1, 1, tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1) * 1000
                record(history, writer, tree, "main", t, msg=str(y))
    finally:
        store.close()
    recs = records(store_dir)
    want = [r.id for r in sorted(recs.values(), key=lambda r: r.key, reverse=True)]
    assert log_ids(store_dir) == want
    at = (datetime(2350, 1, 1, tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1) * 1000
    assert log_ids(store_dir, "-n", "1", "--until", "2350-01-01T00:00:00Z") == \
        [oracle_at(recs, "main", at)]
    with Store.open(str(store_dir)) as store:
        assert History(store).at_time("main", at).oid.hex == oracle_at(recs, "main", at)


def test_snapshot_time_far_out_through_the_cli(tmp_path, cas):
    """Through `cas snapshot --time` and `cas restore --at`: refusing a time the
    timeline cannot order (exit 2) or restoring the right snapshot both pass."""
    root = tmp_path / "t"
    cas("init", str(root))
    for y in (2000, 2200, 2300, 2400):
        write(root / "a", str(y).encode())
        r = cas("snapshot", "-m", str(y), "--time", f"{y}-01-01T00:00:00Z", cwd=root)
        assert r.code in (0, 2) and "Traceback" not in r.err, r.err
        if r.code == 2:
            return
    r = cas("restore", "--at", "2350-01-01T00:00:00Z", "--to", str(tmp_path / "out"), cwd=root)
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "a").read_bytes() == b"2300"


def test_a_record_with_a_lone_surrogate_branch_is_bad_input(tmp_path):
    store_dir = tmp_path / "store"
    store = Store.init(str(store_dir))
    try:
        history = History(store)
        with store.writer() as writer:
            tree = make_trees(writer)[0]
            good = record(history, writer, tree, "main", T0)
    finally:
        store.close()
    doc = json.loads((store_dir / "snapshots" / f"{good.oid.hex}.json").read_bytes())
    doc["branch"] = "\ud800x"
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()  # \ud800 escaped
    (store_dir / "snapshots" / f"{hash_bytes(data).hex}.json").write_bytes(data)
    for args in (["log"], ["log", "--all"], ["show", "HEAD~1"]):
        code, out, err = cli(store_dir, *args)
        assert code in (0, 1, 2) and "internal error" not in err, (args, code, err)
    assert log_ids(store_dir) == [good.oid.hex]


def test_a_new_fork_lists_only_its_base(tmp_path, cas):
    root = tmp_path / "t"
    cas("init", str(root))
    ids = []
    for d in range(4):
        write(root / "a", f"d{d}".encode())
        ids.append(cas("snapshot", "-m", f"d{d}", "--time", iso(T0 + d * DAY), cwd=root).text.strip())
    assert cas("branch", "fork", ids[1], cwd=root).code == 0
    rows = json.loads(cas("log", "--json", "fork", cwd=root).out)
    assert [r["id"] for r in rows] == [ids[1], ids[0]]
    r = cas("restore", "--at", iso(T0 + 10 * DAY), "-b", "fork", "--to", str(tmp_path / "o"), cwd=root)
    assert r.code == 0, r.err
    assert (tmp_path / "o" / "a").read_bytes() == b"d1"


def test_log_all_with_a_path_compares_within_each_branch(tmp_path):
    store_dir = tmp_path / "store"
    store = Store.init(str(store_dir))
    try:
        history = History(store)
        with store.writer() as writer:
            trees = make_trees(writer)
            made = [record(history, writer, trees[0 if i % 2 == 0 else 1], "main" if i % 2 == 0
                           else "side", T0 + i * DAY).oid.hex for i in range(6)]
    finally:
        store.close()
    # 'a' never changes within a branch: only each branch's first snapshot adds it.
    assert log_ids(store_dir, "--all", "--", "a") == [made[1], made[0]]


def test_since_across_a_fork_back_in_time(tmp_path, cas):
    root = tmp_path / "t"
    cas("init", str(root))
    write(root / "a", b"1")
    base = cas("snapshot", "-m", "base", "--time", iso(T0 + 9 * DAY), cwd=root).text.strip()
    assert cas("branch", "fork", base, cwd=root).code == 0
    write(root / "a", b"2")
    imported = cas("snapshot", "-b", "fork", "--time", iso(T0), cwd=root).text.strip()
    assert [r["id"] for r in json.loads(cas("log", "--json", "fork", cwd=root).out)] == [imported, base]
    rows = json.loads(cas("log", "--json", "fork", "--since", iso(T0 + 5 * DAY), cwd=root).out)
    assert [r["id"] for r in rows] == [base]


def test_forgetting_a_forks_first_snapshot_keeps_its_base(tmp_path, cas):
    root = tmp_path / "t"
    cas("init", str(root))
    main = []
    for d in range(2):
        write(root / "a", f"m{d}".encode())
        main.append(cas("snapshot", "--time", iso(T0 + d * DAY), cwd=root).text.strip())
    assert cas("branch", "fork", main[1], cwd=root).code == 0
    fork = []
    for d in range(2, 5):
        write(root / "a", f"f{d}".encode())
        fork.append(cas("snapshot", "-b", "fork", "--time", iso(T0 + d * DAY), cwd=root).text.strip())
    assert cas("forget", fork[0], cwd=root).code == 0
    rows = json.loads(cas("log", "--json", "fork", cwd=root).out)
    assert [r["id"] for r in rows] == [fork[2], fork[1], main[1], main[0]]


def test_the_property_test_makes_forks(tmp_path):
    """The generator's fork step must give a snapshot whose parent is on another branch."""
    store_dir = tmp_path / "store"
    _build(store_dir, [("snap", "main", T0, 0, 0), ("fork", "side", T0, 1, 0)])
    recs = records(store_dir)
    side = [r for r in recs.values() if r.branch == "side"]
    assert len(side) == 1 and recs[side[0].parent].branch == "main"
    assert log_ids(store_dir, "side") == [side[0].id, side[0].parent]


# -- the stamp on a filesystem with whole-second times ----------------------------------

@pytest.fixture
def coarse_fs(tmp_path):
    """An ext4 with 128-byte inodes (whole-second times, like HFS+, ext3 or a FAT USB disk)."""
    img, mnt = tmp_path / "img", tmp_path / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "128", str(img)], **quiet).returncode or \
            subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], **quiet).returncode:
        pytest.skip("cannot make and mount an ext4 image here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], **quiet)


@pytest.mark.parametrize("change", ["crashed_record", "crashed_forget"])
def test_a_change_in_the_same_second_is_seen(coarse_fs, change):
    """A writer SIGKILLed after its record file (or a forget after its unlink),
    before the index transaction, in the second in which a reader settled the stamp."""
    store_dir = coarse_fs / "store"
    store = Store.init(str(store_dir))
    try:
        history = History(store)
        with store.writer() as writer:
            tree = make_trees(writer)[0]
            first = record(history, writer, tree, "main", T0)
            second = record(history, writer, tree, "main", T0 + DAY)
        snapdir = store_dir / "snapshots"
        kept = snapdir / f"{second.oid.hex}.json"
        data = kept.read_bytes()
        crashed = Snapshot(tree=tree, parents=(second.oid,), time_ns=T0 + 2 * DAY, message="x",
                           branch="main", host="h", user="u", source="/src/main").to_json()
        crashed_path = snapdir / f"{hash_bytes(crashed).hex}.json"
        for _ in range(5):
            _wait_for_fraction(0.02)
            (snapdir / "junk").write_bytes(b"")  # any change: the directory's mtime is this second
            os.unlink(snapdir / "junk")
            now_second = int(os.stat(snapdir).st_mtime)
            _wait_for_fraction(0.3)
            assert len(History(store).timeline("main")) == 2  # a resync, its stamp settled
            if change == "crashed_record":
                crashed_path.write_bytes(crashed)
            else:
                os.unlink(kept)
            listed = [e.oid.hex for e in History(store).timeline("main")]
            if int(time.time()) == now_second:
                break
            crashed_path.unlink(missing_ok=True)
            kept.write_bytes(data)
        else:
            pytest.skip("could not do it within one second")
    finally:
        store.close()
    assert listed == [r.id for r in sorted(records(store_dir).values(), key=lambda r: r.key,
                                           reverse=True)]


def _wait_for_fraction(frac: float) -> None:
    now = time.time()
    target = int(now) + frac if now % 1 < frac else int(now) + 1 + frac
    time.sleep(max(0.0, target - time.time()))


# -- real processes: SIGKILL and concurrent writers ---------------------------------------

def _env(store_dir: Path) -> dict:
    return {"CAS_STORE": str(store_dir)}


def _spawn(store_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cas.cli", "-q", *args],
                            env={**os.environ, **_env(store_dir)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _cli_log_matches_records(store_dir: Path, cwd: Path) -> None:
    recs = records(store_dir)
    r = cas_process("log", "--all", "--json", cwd=cwd, env=_env(store_dir))
    assert r.returncode == 0, r.stderr
    assert [s["id"] for s in json.loads(r.stdout)] == \
        [x.id for x in sorted(recs.values(), key=lambda x: x.key, reverse=True)]
    r = cas_process("verify", cwd=cwd, env=_env(store_dir))
    assert r.returncode == 0, r.stderr


def test_sigkilled_snapshots_and_forgets_leave_every_record_listed(tmp_path):
    src = tmp_path / "src"
    write(src / "a", b"0")
    assert cas_process("init", str(src), cwd=tmp_path).returncode == 0
    store_dir = src / ".cas"
    rng = random.Random(12)
    for i in range(int(os.environ.get("CAS_KILL_ROUNDS", "4"))):
        write(src / "a", f"{i}".encode())
        p = _spawn(store_dir, "snapshot", str(src), "--time", iso(T0 + rng.randrange(20) * DAY))
        if i % 2:
            ids = sorted(records(store_dir))
            q = _spawn(store_dir, "forget", *ids[: rng.randint(1, 2)]) if ids else None
        else:
            q = None
        time.sleep(rng.uniform(0.15, 0.6))
        for proc in (p, q):
            if proc is not None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        _cli_log_matches_records(store_dir, tmp_path)


def test_log_while_snapshots_and_forgets_run(tmp_path):
    """Each listing is newest first without repeats and names only snapshots
    that were recorded at some time; once quiet, exactly the records."""
    src = tmp_path / "src"
    write(src / "a", b"0")
    assert cas_process("init", str(src), cwd=tmp_path).returncode == 0
    store_dir = src / ".cas"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(src), str(store_dir)],
                              env=os.environ.copy())
    ever: set[str] = set()
    try:
        deadline = time.time() + 4
        while time.time() < deadline:
            ever |= set(records(store_dir))
            r = cas_process("log", "--json", cwd=tmp_path, env=_env(store_dir))
            ever |= set(records(store_dir))
            assert r.returncode in (0, 2), r.stderr  # 2: no snapshot yet
            if r.returncode:
                continue
            rows = json.loads(r.stdout)
            ids = [s["id"] for s in rows]
            assert len(ids) == len(set(ids))
            assert set(ids) <= ever
            keys = [(s["time_ns"], s["id"]) for s in rows]
            assert keys == sorted(keys, reverse=True)
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    _cli_log_matches_records(store_dir, tmp_path)


# Snapshots with random (often equal) --time, and forgets of random records, as real processes.
_WRITER = r"""
import json, os, random, subprocess, sys, time
src, store = sys.argv[1], sys.argv[2]
env = {**os.environ, "CAS_STORE": store}
rng = random.Random(5)
def cas(*a):
    return subprocess.run([sys.executable, "-m", "cas.cli", "-q", *a], env=env, capture_output=True)
end = time.time() + 3.5
i = 0
while time.time() < end:
    i += 1
    open(os.path.join(src, "a"), "w").write(str(i))
    t = 1_700_000_000 + rng.randrange(6) * 86400
    r = cas("snapshot", src, "--time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)))
    assert r.returncode == 0, r.stderr
    if i % 3 == 0:
        names = sorted(n[:-5] for n in os.listdir(os.path.join(store, "snapshots")) if n.endswith(".json"))
        if len(names) > 2:
            r = cas("forget", rng.choice(names[:-1]))
            assert r.returncode in (0, 1), r.stderr
"""
