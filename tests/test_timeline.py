"""History is the set of recorded snapshots: the timeline, log, HEAD~N, --at, --time."""

import json
import os
import shutil
import subprocess


from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas.model.history import History
from cas.objectid import hash_bytes
from cas.model.snapshot import Snapshot
from cas.model.tree import Tree
from cas.storage.store import Store

from .conftest import cas_process, write

DAY = 86_400 * 10**9
T0 = 1_700_000_000 * 10**9


def history_tree(tmp_path, cas, count=6):
    """A tree with ``count`` snapshots of main, a day apart from T0."""
    root = tmp_path / "tree"
    cas("init", str(root))
    ids = []
    for i in range(count):
        write(root / "a.txt", f"v{i}".encode())
        ids.append(cas("snapshot", "-m", f"s{i}", "--time", _iso(T0 + i * DAY), cwd=root).text.strip())
    return root, ids


def _iso(ns: int) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_ids(cas, root, *args):
    return [s["id"] for s in json.loads(cas("log", "--json", *args, cwd=root).out)]


def test_snapshot_time_is_recorded_and_shown(tmp_path, cas):
    root, ids = history_tree(tmp_path, cas, 2)
    doc = json.loads(cas("show", "--json", ids[0], cwd=root).out)
    assert doc["time_ns"] == T0
    r = cas("snapshot", "--time", "yesterday-ish", "--allow-empty", cwd=root)
    assert r.code == 2 and "not a time" in r.err and "Traceback" not in r.err


def test_forget_in_the_middle_hides_nothing_older(tmp_path, cas):
    root, ids = history_tree(tmp_path, cas)
    assert cas("forget", ids[2], ids[3], cwd=root).code == 0
    assert log_ids(cas, root) == [ids[5], ids[4], ids[1], ids[0]]
    # HEAD~N is the Nth older recorded snapshot, across the gap.
    assert json.loads(cas("show", "--json", "HEAD~2", cwd=root).out)["id"] == ids[1]
    assert json.loads(cas("show", "--json", "HEAD~3", cwd=root).out)["id"] == ids[0]
    r = cas("show", "HEAD~4", cwd=root)
    assert r.code == 2 and "4 snapshots (" in r.err
    # --at chooses among all recorded snapshots, also those before the gap.
    out = tmp_path / "at"
    assert cas("restore", "--at", _iso(T0 + 3 * DAY), "--to", str(out), cwd=root).code == 0
    assert (out / "a.txt").read_bytes() == b"v1"
    assert log_ids(cas, root, "-n", "2") == [ids[5], ids[4]]
    oneline = cas("log", "--oneline", cwd=root).text.splitlines()
    assert oneline[1].startswith(ids[4][:12] + "~ ")  # its parent was forgotten
    assert oneline[0].startswith(ids[5][:12] + "  ") and oneline[0].endswith("s5")
    assert log_ids(cas, root, ids[4]) == [ids[4], ids[1], ids[0]]


def test_log_all_lists_every_branch_newest_first(tmp_path, cas):
    root, ids = history_tree(tmp_path, cas, 2)
    other = tmp_path / "other"
    write(other / "b.txt", b"b")
    cas("snapshot", str(other), "-b", "side", "--time", _iso(T0 + DAY // 2), cwd=root)
    rows = json.loads(cas("log", "--all", "--json", cwd=root).out)
    assert [r["branch"] for r in rows] == ["main", "side", "main"]
    assert cas("log", "--all", "HEAD", cwd=root).code == 2


def test_a_forked_branch_continues_into_its_base(tmp_path, cas):
    root, ids = history_tree(tmp_path, cas, 3)
    cas("branch", "fork", ids[1], cwd=root)
    cas("branch", "--switch", "fork", cwd=root)
    write(root / "a.txt", b"forked")
    new = cas("snapshot", "-b", "fork", "-m", "f", "--time", _iso(T0 + 10 * DAY), cwd=root).text.strip()
    assert log_ids(cas, root, "fork") == [new, ids[1], ids[0]]


def test_the_timeline_follows_records_changed_behind_its_back(tmp_path, cas):
    """A record copied in by hand (or left by a crash before the index
    transaction), one deleted by hand, and a lost index: the next reader
    lists exactly the records on disk."""
    root, ids = history_tree(tmp_path, cas, 4)
    records = root / ".cas" / "snapshots"
    saved = (records / f"{ids[1]}.json").read_bytes()
    os.unlink(records / f"{ids[1]}.json")
    assert log_ids(cas, root) == [ids[3], ids[2], ids[0]]
    (records / f"{ids[1]}.json").write_bytes(saved)
    assert log_ids(cas, root) == [ids[3], ids[2], ids[1], ids[0]]
    assert cas("index", "rebuild", cwd=root).code == 0
    assert log_ids(cas, root) == [ids[3], ids[2], ids[1], ids[0]]
    shutil.rmtree(root / ".cas" / "index")
    assert cas("index", "rebuild", cwd=root).code == 0
    assert log_ids(cas, root, "-n", "1") == [ids[3]]


def test_a_read_only_store_lists_history_it_cannot_index(tmp_path, cas, mount_tmpfs):
    disk = mount_tmpfs("disk", "20m")
    root = disk / "tree"
    cas("init", str(root))
    ids = []
    for i in range(3):
        write(root / "a.txt", f"v{i}".encode())
        ids.append(cas("snapshot", "--time", _iso(T0 + i * DAY), cwd=root).text.strip())
    os.unlink(root / ".cas" / "snapshots" / f"{ids[1]}.json")  # the table is behind now
    assert subprocess.run(["mount", "-o", "remount,ro", str(disk)]).returncode == 0
    r = cas_process("log", "--json", cwd=root)
    assert r.returncode == 0, r.stderr
    assert [s["id"] for s in json.loads(r.stdout)] == [ids[2], ids[0]]
    r = cas_process("show", "--json", "HEAD~1", cwd=root)
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == ids[0]


# -- the timeline against the records, under any sequence of changes ---------------------

OPS = st.lists(st.tuples(st.sampled_from(["record", "forget", "unlink", "restore", "rebuild",
                                          "crashed_record"]),
                         st.integers(0, 50), st.sampled_from(["main", "b", "c"])),
               min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_the_timeline_always_lists_exactly_the_records(tmp_path_factory, ops):
    store_dir = tmp_path_factory.mktemp("tl") / "store"
    store = Store.init(str(store_dir))
    try:
        _run_ops(store, ops)
    finally:
        store.close()


def _run_ops(store, ops):
    history = History(store)
    removed: dict[str, bytes] = {}
    with store.writer() as writer:
        tree = writer.put_bytes(Tree.build([]).to_json())
        writer.flush()
        for i, (op, n, branch) in enumerate(ops):
            recorded = sorted(history._recorded_ids(), key=lambda o: o.hex)
            if op == "record":
                head = history.branch_head(branch)
                history.record(Snapshot(tree=tree, parents=(head.oid,) if head else (),
                                        time_ns=T0 + n * 10**9, message=f"{i}", branch=branch,
                                        host="h", user="u", source="/src/" + branch), writer)
            elif op == "forget" and recorded:
                history.forget_many([recorded[n % len(recorded)]])
            elif op == "unlink" and recorded:
                path = history._record_path(recorded[n % len(recorded)])
                removed[path] = open(path, "rb").read()
                os.unlink(path)
            elif op == "restore" and removed:
                path, data = removed.popitem()
                open(path, "wb").write(data)
            elif op == "rebuild":
                history.reload_index()
            elif op == "crashed_record":
                # A writer that died between its record file and the index
                # transaction, right after another record (often in the same
                # tick of the directory's clock).
                history.record(_snap(tree, T0 + n * 10**9, f"{i}a", branch), writer)
                data = _snap(tree, T0 + n * 10**9, f"{i}b", branch).to_json()
                with open(history._record_path(hash_bytes(data)), "wb") as f:
                    f.write(data)
            _check(history)


def _snap(tree, time_ns, message, branch):
    return Snapshot(tree=tree, parents=(), time_ns=time_ns, message=message, branch=branch,
                    host="h", user="u", source="/src/" + branch)


def _check(history):
    expected = {}
    for oid in history._recorded_ids():
        s = history.load_record(oid)
        expected.setdefault(s.branch, []).append((s.time_ns, s.oid.digest))
    for branch in ("main", "b", "c"):
        want = [d for _, d in sorted(expected.get(branch, []), reverse=True)]
        assert [e.oid.digest for e in history.timeline(branch)] == want
    assert history.branches_in_history() == sorted(expected)
