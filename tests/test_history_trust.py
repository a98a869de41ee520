"""History that is crafted, damaged or written concurrently is reported, never trusted blindly.

Each test builds real stores (real files, real LMDB) and runs the real
commands; the crafted ones write history files by hand, as an attacker or a
failing disk would.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cas.model.history import History
from cas.model.snapshot import Snapshot
from cas.model.tree import DIR, FILE, Tree, TreeEntry
from cas.objectid import ObjectId
from cas.storage.store import Store

from .conftest import cas_process, write
from .test_snapshots import snap

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tree(tmp_path, cas):
    root = tmp_path / "tree"
    write(root / "a.txt", b"alpha\n")
    write(root / "sub" / "b.txt", b"beta\n")
    assert cas("init", str(root)).code == 0
    return root


def two_snapshots(cas, root):
    first = snap(cas, root, "-m", "one")
    write(root / "a.txt", b"alpha two\n")
    return first, snap(cas, root, "-m", "two")


def record_path(root, oid: str) -> Path:
    return root / ".cas" / "snapshots" / f"{oid}.json"


def rewrite_record(root, oid: str, **changes) -> None:
    path = record_path(root, oid)
    doc = json.loads(path.read_bytes())
    doc.update(changes)
    os.chmod(path, 0o644)
    path.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def assert_clean_failure(r, codes=(1, 2)):
    err = r.err if isinstance(r.err, str) else r.stderr.decode()
    code = r.code if hasattr(r, "code") else r.returncode
    assert code in codes, err
    assert "Traceback" not in err and "internal error" not in err, err


def craft(store_path, build):
    """Run ``build(history, writer)`` on the store, returning what it returns."""
    with Store.open(str(store_path)) as store:
        history = History(store)
        with store.writer() as writer:
            result = build(history, writer)
            writer.flush()
        return result


def put_tree(writer, entries) -> ObjectId:
    return writer.put_bytes(Tree.build(entries).to_json())


def record_snapshot(history, writer, tree_id, parent=None, time_ns=None, message="crafted"):
    head = history.branch_head("main") if parent is None else parent
    return history.record(Snapshot(
        tree=tree_id, parents=(head.oid,) if head else (), time_ns=time_ns or time.time_ns(),
        message=message, branch="main", host="h", user="u",
        source=head.source if head else "/nowhere"), writer)


# -- item 12: records hash to their names; no loops ----------------------------------------


def test_an_edited_snapshot_record_is_refused_by_readers_rebuild_and_verify(tree, cas):
    first, second = two_snapshots(cas, tree)
    # The edit a user (or bit rot) makes: another message and a parent naming itself.
    rewrite_record(tree, second, message="EDITED", parents=[second])
    r = cas("index", "rebuild", cwd=tree)
    assert r.code == 0
    assert f"{second}.json" in r.err and "do not hash to its name" in r.err
    log = cas("log", "--json", cwd=tree)  # must finish: before the fix it looped forever
    assert "EDITED" not in log.text
    assert_clean_failure(cas("gc", "--dry-run", cwd=tree), (1,))
    v = cas("verify", "--full", "--json", cwd=tree)
    assert v.code == 1
    damage = json.loads(v.out)["damage"]
    assert any(d["id"] == second and d["kind"] == "snapshot" and "hash" in d["why"] for d in damage)


def test_a_record_whose_manifest_object_is_gone_is_still_checked(tree, cas):
    first, second = two_snapshots(cas, tree)
    rewrite_record(tree, second, message="EDITED")
    cas("index", "rebuild", cwd=tree)
    with Store.open(str(tree / ".cas")) as store:
        history = History(store)
        with pytest.raises(Exception) as info:
            history.load_record(ObjectId.parse(second))
        assert "do not hash to its name" in str(info.value)
        assert [s.oid.hex for s in history.ancestors(history.load_snapshot(ObjectId.parse(second)))] \
            == [second, first]


@pytest.mark.parametrize("kind", ["fifo", "devzero", "huge"])
def test_a_record_or_ref_that_is_not_a_small_file_is_an_error_not_a_hang(tree, cas, kind):
    first = snap(cas, tree)
    ref = tree / ".cas" / "refs" / "heads" / "main"
    for path in (record_path(tree, first), ref):
        saved = path.read_bytes()
        os.unlink(path)
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "devzero":
            os.symlink("/dev/zero", path)
        else:
            path.write_bytes(b" " * (64 << 20))
        for args in (["log"], ["verify", "--full"], ["gc", "--dry-run"], ["index", "rebuild"],
                     ["show", first]):
            r = cas_process(*args, cwd=tree, timeout=60)
            assert r.returncode in (0, 1, 2), (args, r.stderr)
            assert b"Traceback" not in r.stderr and b"internal error" not in r.stderr, (args, r.stderr)
        assert cas_process("verify", cwd=tree, timeout=60).returncode == 1
        os.unlink(path)
        path.write_bytes(saved)
    assert cas("verify", "--full", cwd=tree).code == 0


# -- item 19: unknown revisions are errors --------------------------------------------------


def test_an_argument_that_is_neither_a_ref_nor_a_path_is_an_error(tree, cas):
    first, second = two_snapshots(cas, tree)
    for args in (["log", "NOSUCH"], ["diff", "NOSUCH"], ["diff", "HEAD", "NOSUCH"]):
        r = cas(*args, cwd=tree)
        assert r.code == 2, args
        assert "NOSUCH" in r.err and r.text == ""
    r = cas("log", "NOSUCH", cwd=tree)
    assert "ambiguous argument 'NOSUCH': unknown revision or path" in r.err
    for args in (["log", "HEAD~99999"], ["diff", "HEAD~99999", "HEAD"], ["log", "HEAD~" + "9" * 5000]):
        r = cas(*args, cwd=tree)
        assert r.code == 2, (args[:1], r.err[:200])
        assert "goes back further than its history" in r.err
    # After '--' everything is a path, and an existing path needs no '--'.
    assert cas("log", "--", "NOSUCH", cwd=tree).code == 0
    assert cas("log", "--json", "a.txt", cwd=tree).code == 0
    log = json.loads(cas("log", "--json", "HEAD", "--", "a.txt", cwd=tree).out)
    assert [s["id"] for s in log] == [second, first]
    assert json.loads(cas("log", "--json", "HEAD~1", cwd=tree).out)[0]["id"] == first
    diff = json.loads(cas("diff", "--json", "HEAD~1", "HEAD", "--", "a.txt", cwd=tree).out)
    assert [c["path"] for c in diff] == ["a.txt"]


def test_a_path_only_in_history_is_still_a_path(tree, cas):
    first = snap(cas, tree)
    os.unlink(tree / "a.txt")
    snap(cas, tree)
    log = json.loads(cas("log", "--json", "HEAD~1", "a.txt", cwd=tree).out)
    assert [s["id"] for s in log] == [first]


# -- item 20: concurrent snapshots all land ------------------------------------------------


def _snapshot_loop(root: Path, tag: str, rounds: int) -> subprocess.Popen:
    script = f"""
import pathlib, subprocess, sys
root = pathlib.Path({str(root)!r})
for i in range({rounds}):
    (root / "{tag}.txt").write_text(f"{tag} {{i}}")
    r = subprocess.run([sys.executable, "-m", "cas.cli", "snapshot", "-m", "{tag} %d" % i],
                       cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr)
    print(r.stdout.strip(), flush=True)
"""
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_concurrent_snapshots_on_one_branch_are_all_kept(tree, cas):
    base = snap(cas, tree, "-m", "base")
    rounds = 12
    loops = [_snapshot_loop(tree, tag, rounds) for tag in ("left", "right")]
    recorded = []
    for p in loops:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        recorded += [line for line in out.splitlines() if line]
    # A round can record nothing when the other process's snapshot already
    # holds its change; every one that printed an id must be in history.
    assert len(recorded) >= rounds and len(set(recorded)) == len(recorded)
    history = [s["id"] for s in json.loads(cas("log", "--json", cwd=tree).out)]
    assert set(recorded) <= set(history)
    assert len(history) == len(recorded) + 1 and history[-1] == base
    listed = {p.name[:-5] for p in (tree / ".cas" / "snapshots").iterdir()}
    assert listed == set(history)  # no snapshot recorded off the branch
    # Each parent is the next one down: one chain, nothing forked off.
    docs = json.loads(cas("log", "--json", cwd=tree).out)
    assert all(d["parents"] == [n["id"]] for d, n in zip(docs, docs[1:]))
    assert cas("verify", cwd=tree).code == 0


def test_a_watcher_and_manual_snapshots_on_one_branch_lose_nothing(tree, cas):
    snap(cas, tree, "-m", "base")
    log_file = tree.parent / "watch.log"
    watcher = subprocess.Popen([sys.executable, "-m", "cas.cli", "watch", "--quiet-period", "0.1s",
                                "--log-file", str(log_file)], cwd=tree, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (log_file.exists() and log_file.read_text().strip()):
            assert time.monotonic() < deadline and watcher.poll() is None, "the watcher did not start"
            time.sleep(0.05)
        manual = _snapshot_loop(tree, "manual", 10)
        out, err = manual.communicate(timeout=600)
        assert manual.returncode == 0, err
    finally:
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(timeout=60) == 0, watcher.stderr.read().decode()
    events = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    assert any(e["event"] == "snapshot" for e in events)
    history = [s["id"] for s in json.loads(cas("log", "--json", cwd=tree).out)]
    assert set(out.split()) <= set(history)
    listed = {p.name[:-5] for p in (tree / ".cas" / "snapshots").iterdir()}
    assert listed == set(history)  # every snapshot either process recorded is on the branch


def test_a_snapshot_recorded_after_the_branch_moved_is_re_parented(tree, cas):
    first = snap(cas, tree)
    with Store.open(str(tree / ".cas")) as store:
        history = History(store)
        stale_head = history.branch_head("main")
    write(tree / "a.txt", b"moved on\n")
    second = snap(cas, tree)

    def late(history, writer):  # a writer that began before `second` was recorded
        root = history.load_snapshot(ObjectId.parse(first)).tree
        return record_snapshot(history, writer, root, parent=stale_head, message="late")

    late_snap = craft(tree / ".cas", late)
    assert late_snap.parents == (ObjectId.parse(second),)
    log = [s["id"] for s in json.loads(cas("log", "--json", cwd=tree).out)]
    assert log == [late_snap.oid.hex, second, first]


# -- item 17: two directories with one base name -------------------------------------------


def test_two_directories_with_one_base_name_get_branches_of_their_own(tmp_path, cas):
    store = str(tmp_path / "S")
    assert cas("--store", store, "init").code == 0
    x, y = tmp_path / "x" / "models", tmp_path / "y" / "models"
    write(x / "x-only.txt", b"x")
    write(y / "y-only.txt", b"y")
    rx = cas("--store", store, "snapshot", "--json", str(x))
    ry = cas("--store", store, "snapshot", "--json", str(y))
    assert json.loads(rx.out)["branch"] == "models"
    assert json.loads(ry.out)["branch"] == "models-2"
    write(x / "x-only.txt", b"x2")
    assert json.loads(cas("--store", store, "snapshot", "--json", str(x)).out)["branch"] == "models"
    branches = {b["branch"]: b["source"] for b in json.loads(cas("--store", store, "branch", "--json").out)}
    assert branches == {"models": str(x), "models-2": str(y)}
    names = lambda ref: {r.split("  ")[-1] for r in cas("--store", store, "ls", ref).text.splitlines()}  # noqa: E731
    assert names("models") == {"x-only.txt"} and names("models~1") == {"x-only.txt"}
    assert names("models-2") == {"y-only.txt"}


def test_the_second_directory_is_told_its_branch(tmp_path, cas):
    store = str(tmp_path / "S")
    cas("--store", store, "init")
    write(tmp_path / "x" / "data" / "f", b"1")
    write(tmp_path / "y" / "data" / "f", b"2")
    cas("--store", store, "snapshot", str(tmp_path / "x" / "data"))
    r = cas("--store", store, "snapshot", str(tmp_path / "y" / "data"))
    assert r.code == 0
    assert f"branch data tracks another directory: {tmp_path / 'y' / 'data'} is recorded on branch data-2" in r.err


# -- low items ---------------------------------------------------------------------------


def _deep_chain(history, writer, depth):
    leaf = writer.put_bytes(b"at the bottom\n")
    entries = [TreeEntry(b"leaf.txt", FILE, 0o644, 0, 14, leaf)]
    child = put_tree(writer, entries)
    for _ in range(depth):
        child = put_tree(writer, [TreeEntry(b"d", DIR, 0o755, 0, 0, child)])
    return record_snapshot(history, writer, child)


def test_a_tree_chain_deeper_than_the_recursion_limit_is_walked(tree, cas):
    snap(cas, tree)
    depth = max(1100, sys.getrecursionlimit() + 100)
    deep = craft(tree / ".cas", lambda h, w: _deep_chain(h, w, depth))
    for args in (["ls", "-r", "--json", "HEAD"], ["diff", "--json", "HEAD~1", "HEAD"],
                 ["diff", "--json", "HEAD", "HEAD~1"], ["log", "--json", "--", "a.txt"],
                 ["verify", "--full"], ["gc", "--dry-run"], ["du", "--json", "HEAD"], ["stats"]):
        r = cas(*args, cwd=tree)
        assert r.code == 0, (args, r.err)
    rows = json.loads(cas("ls", "-r", "--json", deep.oid.hex, cwd=tree).out)
    assert rows[-1]["path"] == "d/" * depth + "leaf.txt"
    added = json.loads(cas("diff", "--json", "HEAD~1", "HEAD", cwd=tree).out)
    assert "d/" * depth + "leaf.txt" in [c["path"] for c in added]


def test_absurd_times_in_records_and_trees_are_shown_not_crashed_on(tree, cas):
    snap(cas, tree)

    def build(history, writer):
        content = writer.put_bytes(b"x")
        root = put_tree(writer, [TreeEntry(b"ancient.txt", FILE, 0o644, -62_135_596_800 * 10**9, 1,
                                           content)])
        far = record_snapshot(history, writer, root, time_ns=10**30)
        odd = put_tree(writer, [TreeEntry(b"future.txt", FILE, 0o644, 10**30, 1, content)])
        return far, record_snapshot(history, writer, odd, time_ns=-10**30)

    far, odd = craft(tree / ".cas", build)
    # History is in time order: ``far`` (year ~3e13) is the newest, far~1 the first snapshot.
    back = f"{far.oid.hex}~1"
    for args in (["log"], ["log", "--json"], ["show", back], ["show", "--json", back],
                 ["ls", back], ["ls", "--json", back], ["log", "--since", "0001-01-01"],
                 ["log", "--until", "9999-12-31"], ["log", "--since", "9" * 400 + " days ago"],
                 ["show", "HEAD"], ["restore", "--at", "0001-01-01", "--to", "out"]):
        r = cas(*args, cwd=tree)
        assert r.code in (0, 1, 2) if args[0] == "restore" else r.code == 0, (args, r.err)
        assert "internal error" not in r.err
    assert json.loads(cas("show", "--json", far.oid.hex, cwd=tree).out)["time_ns"] == 10**30
    assert "+1000000000000000000000000000000 ns" in cas("log", cwd=tree).text
    # A tree entry's mtime beyond years 1-9999 is refused as invalid, in one line.
    r = cas("ls", odd.oid.hex, cwd=tree)
    assert r.code == 1 and "internal error" not in r.err and "invalid" in r.err
    assert cas("log", "--since", "not a time", cwd=tree).code == 2


def test_verify_checks_a_tree_entrys_size_against_its_object(tree, cas):
    snap(cas, tree)

    def build(history, writer):
        content = writer.put_bytes(b"five!")
        root = put_tree(writer, [TreeEntry(b"liar.txt", FILE, 0o644, 0, 999, content)])
        return record_snapshot(history, writer, root)

    liar = craft(tree / ".cas", build)
    r = cas("verify", "--full", "--json", cwd=tree)
    assert r.code == 1
    [damage] = json.loads(r.out)["damage"]
    assert damage["kind"] == "tree" and "records 999 bytes for 'liar.txt'" in damage["why"]
    assert damage["used_by"] == [{"snapshot": liar.oid.hex, "path": "liar.txt"}]


def test_a_ref_named_like_a_snapshot_id_does_not_hide_it(tree, cas):
    first, second = two_snapshots(cas, tree)
    r = cas("tag", first[:8], second, cwd=tree)
    assert r.code == 2 and "looks like a snapshot id" in r.err
    assert cas("branch", first[:10], cwd=tree).code == 2
    # A store where such a tag exists anyway (older cas, or crafted).
    write(tree / ".cas" / "refs" / "tags" / first[:8], second.encode() + b"\n")
    r = cas("show", "--json", first[:8], cwd=tree)
    assert r.code == 2 and "names both refs/tags/" in r.err
    assert json.loads(cas("show", "--json", first, cwd=tree).out)["id"] == first
    assert json.loads(cas("show", "--json", "refs/tags/" + first[:8], cwd=tree).out)["id"] == second


def test_a_ref_never_names_a_file_outside_the_store(tree, cas, tmp_path):
    first = snap(cas, tree)
    write(tmp_path / "outside", first.encode() + b"\n")
    # <store>/refs/../../../outside is tmp_path/outside: never read as a ref.
    r = cas("show", "refs/../../../outside", cwd=tree)
    assert r.code == 2 and "names no snapshot" in r.err


ESCAPE = "evil\x1b]0;owned\x07\x1b[2J\x9b31m.txt"


def test_escape_sequences_in_names_and_messages_do_not_reach_the_terminal(tree, cas):
    snap(cas, tree)
    write(tree / ESCAPE, b"x")
    write(tree / "sub" / "b.txt", b"beta two\n")
    outputs = [cas("status", cwd=tree), cas("diff", cwd=tree)]
    snap(cas, tree, "-m", "msg \x1b[31mred\x1b[0m")
    outputs += [cas(*args, cwd=tree) for args in (
        ["ls", "HEAD"], ["ls", "-r", "HEAD"], ["log"], ["show", "HEAD"], ["diff", "HEAD~1", "HEAD"],
        ["cat", "HEAD:" + ESCAPE + "x"])]
    for r in outputs:
        raw = r.out + r.err.encode()
        assert b"\x1b" not in raw and b"\x07" not in raw and "\x9b".encode() not in raw, raw
    assert "evil\\x1b]0;owned\\x07" in cas("ls", "HEAD", cwd=tree).text
    assert "msg \\x1b[31mred" in cas("log", cwd=tree).text
    # JSON keeps the exact name.
    rows = json.loads(cas("ls", "--json", "HEAD", cwd=tree).out)
    assert ESCAPE in [row["path"] for row in rows]
    assert json.loads(cas("log", "--json", cwd=tree).out)[0]["message"] == "msg \x1b[31mred\x1b[0m"


# -- verify goes on --------------------------------------------------------------------------


def test_verify_reports_every_problem_and_goes_on(tree, cas):
    first, second = two_snapshots(cas, tree)
    write(tree / "a.txt", b"alpha three\n")
    third = snap(cas, tree, "-m", "three")
    rewrite_record(tree, first, message="EDITED")
    rewrite_record(tree, third, message="EDITED TOO")
    junk = "ab" + "cd" * 31
    write(tree / ".cas" / "packs" / "ab" / f"{junk}.pack", b"not a pack at all" * 10)
    os.symlink("/dev/zero", tree / ".cas" / "refs" / "tags" / "zero")
    r = cas("verify", "--full", "--json", cwd=tree)
    assert r.code == 1
    report = json.loads(r.out)
    found = {(d["kind"], d["id"]) for d in report["damage"]}
    assert {("snapshot", first), ("snapshot", third), ("pack", junk), ("ref", "refs/tags/zero")} <= found
    assert report["unindexed_packs"] == 0  # the junk pack is damage, not a harmless leftover
    text = cas("verify", cwd=tree)
    assert text.code == 1 and "harmless" not in text.err and junk in text.err
    rebuilt = cas("index", "rebuild", cwd=tree)
    assert rebuilt.code == 0 and junk in rebuilt.err


def test_gc_removes_a_stale_view_deeper_than_the_recursion_limit(tree, cas):
    snap(cas, tree)
    stale = tree / ".cas" / "views" / ("ab" * 32 + ".building-1234abcd")
    stale.mkdir(parents=True)
    fd = os.open(stale, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(max(1100, sys.getrecursionlimit() + 100)):  # deeper than PATH_MAX allows by name
        os.mkdir("d", dir_fd=fd)
        fd, old = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(old)
    os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    os.symlink("/etc", stale / "link-out")
    r = cas("gc", "--grace", "0", cwd=tree)
    assert r.code == 0, r.err
    assert not stale.exists() and os.path.isdir("/etc")
