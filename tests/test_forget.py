"""cas forget and cas policy end to end: rules, tags that protect, refs that
move, history that survives forgetting, stored policies, SIGKILL at any
moment, and the cost of a policy over 100,000 snapshots."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cas.errors import SnapshotReferenced
from cas.model.history import History
from cas.model.policy import Policies
from cas.model.refs import HEADS, TAGS
from cas.model.retention import NS, WATCH_DEFAULT, Policy
from cas.model.snapshot import Snapshot
from cas.objectid import hash_bytes
from cas.ops.forget import apply_policy, ensure_default_policy, forget, thin_branch
from cas.storage.store import Store

from .conftest import cas_process


@pytest.fixture
def utc(monkeypatch):
    """Buckets are local time: the tests' local time is UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def snap(cas, root: Path, when: str) -> str:
    r = cas("snapshot", "--allow-empty", "-m", when, "--time", when + "Z", cwd=root)
    assert r.code == 0, r.err
    return r.text.split()[0]


@pytest.fixture
def days(tmp_path, cas, utc):
    """A tree with a snapshot at 09:00 and 18:00 on Jan 1-4 2025, oldest first."""
    root = tmp_path / "tree"
    root.mkdir()
    (root / "notes.txt").write_text("notes\n")
    assert cas("init", cwd=root).code == 0
    ids = [snap(cas, root, f"2025-01-0{d}T{h}:00") for d in (1, 2, 3, 4) for h in ("09", "18")]
    return root, ids


def logged(cas, root) -> list[str]:
    r = cas("log", "--json", cwd=root)
    assert r.code == 0, r.err
    return [s["id"] for s in json.loads(r.out)]


def one_line_error(r, code: int, *words: str) -> None:
    assert r.code == code, (r.code, r.err)
    assert r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    for w in words:
        assert w in r.err, r.err


# -- rules on the command line ---------------------------------------------------------

def test_dry_run_says_what_it_would_keep_and_why_and_changes_nothing(days, cas):
    root, ids = days
    r = cas("forget", "--keep-daily", "2", "--keep-last", "1", "--dry-run", cwd=root)
    assert r.code == 0, r.err
    lines = r.text.splitlines()
    assert lines[0].split()[:2] == ["keep", ids[7][:12]] and lines[0].endswith("last, daily")
    assert lines[1].split()[:2] == ["keep", ids[5][:12]] and lines[1].endswith("daily")
    assert sum(line.startswith("would forget") for line in lines) == 6
    assert "kept 2, would forget 6" in r.err
    assert logged(cas, root) == ids[::-1]


def test_forget_by_rules_keeps_what_any_rule_keeps_and_history_lists_it(days, cas):
    root, ids = days
    r = cas("forget", "--keep-daily", "2", "--keep-within", "1d", "--json", cwd=root)
    assert r.code == 0, r.err
    [report] = json.loads(r.out)
    assert [k["id"] for k in report["kept"]] == [ids[7], ids[6], ids[5]]
    assert report["kept"][1]["reasons"] == ["within 1d"]   # Jan 4 09:00: within a day of 18:00
    assert {f["id"] for f in report["forgotten"]} == set(ids[:5])
    assert logged(cas, root) == [ids[7], ids[6], ids[5]]
    assert cas("verify", cwd=root).code == 0


def test_forget_in_the_middle_leaves_every_older_snapshot_in_history(days, cas):
    root, ids = days
    assert cas("forget", ids[3], ids[4], cwd=root).code == 0
    assert logged(cas, root) == [ids[7], ids[6], ids[5], ids[2], ids[1], ids[0]]
    older = cas("log", "--json", "HEAD~3", cwd=root)
    assert older.code == 0 and json.loads(older.out)[0]["id"] == ids[2]
    out = root.parent / "restored"
    r = cas("restore", "--at", "2025-01-02T12:00Z", "--to", str(out), cwd=root)
    assert r.code == 0, r.err
    assert cas("verify", cwd=root).code == 0


def test_a_policy_that_would_forget_everything_keeps_the_newest_and_says_so(days, cas):
    root, ids = days
    r = cas("forget", "--keep-tag", "nothing-has-this", cwd=root)
    assert r.code == 0 and "would forget every snapshot of main; the newest is kept" in r.err
    assert logged(cas, root) == [ids[7]]


def test_the_branch_head_moves_to_the_newest_survivor_when_its_snapshot_is_forgotten(days, cas):
    root, ids = days
    r = cas("forget", ids[7], ids[6], cwd=root)
    assert r.code == 0 and f"refs/heads/main -> {ids[5][:12]}" in r.err
    head = json.loads(cas("show", "--json", "HEAD", cwd=root).out)
    assert head["id"] == ids[5] if "id" in head else True
    assert cas("log", "--json", "-n", "1", cwd=root).code == 0
    assert logged(cas, root)[0] == ids[5]


@pytest.mark.parametrize("args, code, words", [
    (("--keep-within", "3x"), 2, ("--keep-within", "'3x' is not a duration")),
    (("--keep-within", "0d"), 2, ("no time at all",)),
    (("--keep-daily", "-1"), 2, ("--keep-daily", "a count")),
    (("--keep-daily", "lots"), 2, ("--keep-daily",)),
    (("--keep-every", "1m:1d"), 2, ("fixed length",)),
    (("--keep-last", "1", "--branch", "nope"), 2, ("no branch 'nope'",)),
    (("--keep-last", "1", "--branch", "../x"), 2, ("not a valid",)),
    (("HEAD", "--keep-last", "1"), 2, ("not both",)),
    (("--force", "--keep-last", "1"), 2, ("--force",)),
    ((), 2, ("no stored policy",)),
])
def test_bad_input_is_one_line_and_changes_nothing(days, cas, args, code, words):
    root, ids = days
    one_line_error(cas("forget", *args, cwd=root), code, *words)
    assert logged(cas, root) == ids[::-1]


# -- tags -------------------------------------------------------------------------------

def test_a_tag_protects_its_snapshot_and_never_moves(days, cas):
    root, ids = days
    assert cas("tag", "release", ids[2], cwd=root).code == 0
    one_line_error(cas("forget", ids[2], ids[3], cwd=root), 2, "release", "--force")
    assert logged(cas, root) == ids[::-1]
    r = cas("forget", "--keep-last", "1", "--json", cwd=root)
    [report] = json.loads(r.out)
    assert [(k["id"], k["reasons"]) for k in report["kept"]] == [(ids[7], ["last"]),
                                                                  (ids[2], ["tagged release"])]
    assert logged(cas, root) == [ids[7], ids[2]]
    r = cas("forget", "--force", ids[2], cwd=root)
    assert r.code == 0 and "deleted tag release" in r.err
    assert cas("tag", cwd=root).text == "" and logged(cas, root) == [ids[7]]


# -- other branches and model refs ---------------------------------------------------------

def _set_ref(root: Path, ref: str, oid_hex: str) -> None:
    from cas.objectid import ObjectId
    with Store.open(str(root / ".cas")) as store:
        History(store).refs.set(ref, ObjectId.parse(oid_hex))


def _branches(cas, root) -> dict[str, str]:
    return {row["branch"]: row["id"] for row in json.loads(cas("branch", "--json", cwd=root).out)}


def test_a_policy_keeps_what_other_branches_and_model_refs_stand_on(days, cas):
    """Only the thinned branch's own ref may move: a fork made from one of
    its snapshots, and a model ref, keep theirs."""
    root, ids = days
    assert cas("branch", "fork", ids[2], cwd=root).code == 0
    _set_ref(root, "refs/models/m", ids[4])
    r = cas("forget", "--keep-last", "1", "--json", cwd=root)
    assert r.code == 0, r.err
    [report] = json.loads(r.out)
    assert [(k["id"], k["reasons"]) for k in report["kept"]] == [
        (ids[7], ["last"]), (ids[4], ["model ref m"]), (ids[2], ["head of branch fork"])]
    assert report["moved"] == {}
    assert _branches(cas, root) == {"main": ids[7], "fork": ids[2]}
    with Store.open(str(root / ".cas")) as store:
        history = History(store)
        assert history.refs.get("refs/models/m").hex == ids[4]
        # the watcher's thinning of main, and a policy of the fork itself, agree
        Policies(history).set("main", Policy(keep_last=1))
        assert not thin_branch(history, "main").forgotten
    assert cas("forget", "--keep-last", "1", "--branch", "fork", cwd=root).code == 0
    assert _branches(cas, root)["fork"] == ids[2]


def test_forgetting_another_branchs_head_by_name_needs_force_which_moves_it(days, cas):
    root, ids = days
    assert cas("branch", "fork", ids[3], cwd=root).code == 0
    one_line_error(cas("forget", ids[3], cwd=root), 2, "refs/heads/fork", "--force")
    assert logged(cas, root) == ids[::-1]
    # a branch's own head moves back without --force, as before
    r = cas("forget", ids[7], cwd=root)
    assert r.code == 0, r.err
    assert _branches(cas, root) == {"main": ids[6], "fork": ids[3]}
    r = cas("forget", "--force", ids[3], cwd=root)
    assert r.code == 0 and f"refs/heads/fork -> {ids[2][:12]}" in r.err, r.err
    assert _branches(cas, root) == {"main": ids[6], "fork": ids[2]}


def test_forcing_away_the_only_snapshot_of_a_forks_history_deletes_it_and_says_so(days, cas):
    root, ids = days
    assert cas("branch", "fork", ids[0], cwd=root).code == 0
    _set_ref(root, "refs/models/m", ids[0])
    one_line_error(cas("forget", ids[0], cwd=root), 2, "refs/heads/fork", "refs/models/m")
    r = cas("forget", "--force", ids[0], "--json", cwd=root)
    assert r.code == 0, r.err
    assert json.loads(r.out)[0]["moved"] == {"refs/heads/fork": None, "refs/models/m": None}
    assert _branches(cas, root) == {"main": ids[7]}


def test_forgetting_a_snapshot_next_to_a_tag_leaves_the_tag_where_it_was(days, cas):
    root, ids = days
    cas("tag", "old", ids[0], cwd=root)
    assert cas("forget", ids[1], cwd=root).code == 0
    assert cas("tag", cwd=root).text.split() == [ids[0][:12], "old"]


# -- stored policies ----------------------------------------------------------------------

def test_policy_set_show_clear_and_forget_applies_the_stored_one(days, cas):
    root, ids = days
    r = cas("policy", "set", "--keep-daily", "2", "--keep-every", "6h:2d", cwd=root)
    assert r.code == 0, r.err
    assert cas("policy", "show", cwd=root).text == "main: keep every 6h within 2d, daily 2\n"
    assert json.loads(cas("policy", "show", "--json", cwd=root).out) == {
        "main": {"daily": 2, "every": [{"every": "6h", "within": "2d"}]}}
    path = root / ".cas" / "policies" / "main.json"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert json.loads(path.read_bytes())["keep"] == {"daily": 2, "every": [{"every": "6h", "within": "2d"}]}
    r = cas("forget", "--dry-run", "--json", cwd=root)
    assert r.code == 0 and json.loads(r.out)[0]["policy"]["daily"] == 2
    assert cas("policy", "clear", cwd=root).code == 0
    assert cas("policy", "show", cwd=root).text == ""
    assert not path.exists()


def test_a_branch_opts_out_of_the_watcher_default_with_keep_all(days, cas):
    root, ids = days
    with Store.open(str(root / ".cas")) as store:
        history = History(store)
        ensure_default_policy(history, "main")
        assert Policies(history).get("main") == WATCH_DEFAULT
    assert cas("policy", "set", "--keep-all", cwd=root).code == 0
    with Store.open(str(root / ".cas")) as store:
        history = History(store)
        ensure_default_policy(history, "main")         # a watcher starting again
        assert Policies(history).get("main") == Policy()
        report = thin_branch(history, "main")
        assert report is not None and not report.forgotten
        assert thin_branch(history, "other") is None
    assert logged(cas, root) == ids[::-1]


@pytest.mark.plain_only
@pytest.mark.parametrize("content", [b"{", b"[]", b'{"type":"policy","version":1,"branch":"x","keep":{}}',
                                     b'{"type":"policy","version":1,"branch":"main","keep":{"last":-5}}',
                                     b'{"type":"policy","version":9,"branch":"main","keep":{}}'])
def test_a_damaged_policy_file_is_a_one_line_error(days, cas, content):
    root, ids = days
    (root / ".cas" / "policies").mkdir()
    (root / ".cas" / "policies" / "main.json").write_bytes(content)
    one_line_error(cas("policy", "show", cwd=root), 1, "policies/main.json")
    one_line_error(cas("forget", cwd=root), 1, "policies/main.json")
    assert logged(cas, root) == ids[::-1]


def test_policy_files_that_are_links_are_refused_and_nothing_is_written_through_them(days, cas,
                                                                                    tmp_path):
    root, ids = days
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / ".cas" / "policies").symlink_to(outside)
    one_line_error(cas("policy", "set", "--keep-last", "1", cwd=root), 1, "policies")
    one_line_error(cas("policy", "show", cwd=root), 1, "policies")
    assert list(outside.iterdir()) == []
    os.unlink(root / ".cas" / "policies")
    (root / ".cas" / "policies").mkdir()
    (outside / "secret").write_text("x" * 10)
    os.symlink(outside / "secret", root / ".cas" / "policies" / "main.json")
    one_line_error(cas("policy", "show", cwd=root), 1, "symbolic link")
    (root / ".cas" / "policies" / "main.json").unlink()
    os.mkfifo(root / ".cas" / "policies" / "main.json")
    one_line_error(cas("policy", "show", cwd=root), 1, "not a regular file")


def test_policy_set_bad_input(days, cas):
    root, _ = days
    one_line_error(cas("policy", "set", cwd=root), 2, "--keep-all")
    one_line_error(cas("policy", "set", "--keep-all", "--keep-last", "1", cwd=root), 2)
    one_line_error(cas("policy", "set", "--keep-hourly", "-3", cwd=root), 2, "--keep-hourly")
    one_line_error(cas("policy", "set", "--branch", "nope", "--keep-last", "1", cwd=root), 2, "nope")


def test_policy_clear_never_follows_a_link_and_set_names_the_policy_not_a_temp_file(days, cas):
    root, ids = days
    policies = root / ".cas" / "policies"
    policies.mkdir()
    outside = root / "outside.json"
    outside.write_text("{}")
    (policies / "main.json").symlink_to(outside)
    assert cas("policy", "clear", cwd=root).code == 0
    assert not os.path.lexists(policies / "main.json") and outside.read_text() == "{}"
    (policies / "main.json").mkdir()
    (policies / "main.json" / "x").write_text("")
    r = cas("policy", "set", "--keep-last", "1", cwd=root)
    one_line_error(r, 2, str(policies / "main.json"), "directory")
    assert ".tmp" not in r.err and "cas-out" not in r.err
    one_line_error(cas("policy", "clear", cwd=root), 2, "by hand")
    assert (policies / "main.json" / "x").exists()
    (policies / "main.json" / "x").unlink()
    assert cas("policy", "clear", cwd=root).code == 0 and not os.path.lexists(policies / "main.json")
    assert cas("policy", "set", "--keep-last", "1", cwd=root).code == 0


# -- JSON nested past the decoder's depth ------------------------------------------------

DEEP = b"[" * 30000 + b"]" * 30000


def test_json_nested_too_deeply_is_damage_in_manifests_and_watch_state(tmp_path):
    from cas.errors import ManifestInvalid
    from cas.model.canonical import loads
    from cas.ops.watch import _read_state
    with pytest.raises(ManifestInvalid, match="nested too deeply"):
        loads(DEEP, "snapshot x", "snapshot", 1)
    state = tmp_path / "watch.json"
    state.write_bytes(b'{"a":' + DEEP + b"}")
    assert _read_state(str(state)) == {}


# -- the library: refs and history --------------------------------------------------------

def record_many(store_path: str, count: int, start_ns: int, step_ns: int,
                branch: str = "main") -> list[str]:
    """``count`` snapshots of one tree on ``branch``, oldest first, through History.record."""
    with Store.open(store_path) as store:
        history = History(store)
        head = history.branch_head(branch)
        ids = []
        with store.writer() as writer:
            for i in range(count):
                snapshot = Snapshot(tree=head.tree, parents=(head.oid,), time_ns=start_ns + i * step_ns,
                                    message=str(i), branch=branch, host="h", user="u",
                                    source=head.source)
                head = history.record(snapshot, writer)
                ids.append(head.oid.hex)
        return ids


def test_forget_moves_branches_to_the_newest_survivor_not_newer_than_their_head(days, cas):
    root, ids = days
    cas("branch", "side", ids[4], cwd=root)   # a branch made at an older snapshot of main
    with Store.open(str(root / ".cas")) as store:
        history = History(store)
        doomed = [history.resolve(ids[4]).oid, history.resolve(ids[7]).oid]
        with pytest.raises(SnapshotReferenced):
            forget(history, doomed)   # side stands on ids[4]
        report = forget(history, doomed, force=True)
        assert {r: t.hex for r, t in report.moved.items()} == {HEADS + "main": ids[6],
                                                               HEADS + "side": ids[3]}
        assert history.refs.get(TAGS + "x") is None


def test_apply_policy_uses_the_clock_it_is_given(days, cas):
    root, ids = days
    with Store.open(str(root / ".cas")) as store:
        history = History(store)
        within = Policy(keep_within=WATCH_DEFAULT.keep_within_hourly)
        # Every snapshot is in the future of this clock: all are within (restic).
        before = apply_policy(history, "main", within, dry_run=True, now_ns=0)
        assert len(before.kept) == 8


# -- SIGKILL ------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_at_any_moment_of_forget_leaves_a_store_that_verifies_and_lists_what_it_keeps(
        tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "f").write_text("x")
    env = {"TZ": "UTC"}
    assert cas_process("init", cwd=base, env=env).returncode == 0
    assert cas_process("snapshot", "--time", "2025-01-01T00:00Z", cwd=base, env=env).returncode == 0
    record_many(str(base / ".cas"), 200, 1735700000 * NS, 60 * NS)
    args = ("forget", "--keep-last", "5", "--keep-hourly", "2", "--json")
    dry = cas_process(*args, "--dry-run", cwd=base, env=env)
    keep = {k["id"] for k in json.loads(dry.stdout)[0]["kept"]}
    assert len(keep) == 6   # the last 5 (06:08-06:12) and the newest of hour 05 (05:59)

    started = time.perf_counter()
    copy = tmp_path / "timing"
    shutil.copytree(base, copy, symlinks=True)
    assert cas_process(*args, cwd=copy, env=env).returncode == 0
    full = time.perf_counter() - started
    interrupted = 0
    for i, fraction in enumerate((0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)):
        tree = tmp_path / f"kill{i}"
        shutil.copytree(base, tree, symlinks=True)
        proc = subprocess.Popen([sys.executable, "-m", "cas.cli", *args], cwd=tree,
                                env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(full * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        verify = cas_process("verify", cwd=tree, env=env)
        assert verify.returncode == 0, (fraction, verify.stdout, verify.stderr)
        listed = {s["id"] for s in json.loads(cas_process("log", "--json", cwd=tree, env=env).stdout)}
        assert keep <= listed, fraction
        interrupted += len(listed) > len(keep)
        with Store.open(str(tree / ".cas")) as store:
            history = History(store)
            assert all(history.is_recorded(o) for o in history.refs.branches().values())
        again = cas_process(*args, cwd=tree, env=env)
        assert again.returncode == 0, again.stderr
        listed = {s["id"] for s in json.loads(cas_process("log", "--json", cwd=tree, env=env).stdout)}
        assert listed == keep
    print(f"\nforget of 195 of 201 snapshots: {full:.2f} s; {interrupted} of 7 kills left it unfinished")


# -- scale --------------------------------------------------------------------------------

COUNT = 20_000


@pytest.mark.slow
def test_applying_a_policy_to_many_snapshots(tmp_path, utc):
    """Deciding over 20,000 recorded snapshots made behind the index's back
    (a dry run). The 100,000-snapshot figure comes from
    tools/bench/history_scale.py; no timed assertion here."""
    root = tmp_path / "tree"
    root.mkdir()
    (root / "f").write_text("x")
    assert cas_process("init", cwd=root).returncode == 0
    assert cas_process("snapshot", cwd=root).returncode == 0
    store_path = str(root / ".cas")
    with Store.open(store_path) as store:
        history = History(store)
        head = history.branch_head("main")
        records = Path(store_path) / "snapshots"
        for i in range(COUNT):   # records made by hand: History.record fsyncs each
            s = Snapshot(tree=head.tree, parents=(head.oid,), time_ns=head.time_ns - (i + 1) * 60 * NS,
                         message="", branch="main", host="h", user="u", source=head.source)
            data = s.to_json()
            (records / (hash_bytes(data).hex + ".json")).write_bytes(data)
        assert len(history.timeline("main")) == COUNT + 1   # the timeline catches up once
        started = time.perf_counter()
        report = apply_policy(history, "main", WATCH_DEFAULT, dry_run=True)
        took = time.perf_counter() - started
        assert len(report.kept) + len(report.forgotten) == COUNT + 1 and len(report.kept) < 1000
        assert len(history.timeline("main")) == COUNT + 1
    print(f"\napply_policy (WATCH_DEFAULT, dry run) to {COUNT + 1} snapshots: {took:.2f} s")


def test_all_branches_applies_the_rules_or_each_stored_policy_to_every_branch(days, cas, tmp_path):
    root, ids = days
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("x")
    store = str(root / ".cas")
    for when in ("2025-02-01T10:00Z", "2025-02-02T10:00Z", "2025-02-03T10:00Z"):
        assert cas("--store", store, "snapshot", str(other), "--allow-empty", "--time", when,
                   cwd=root).code == 0
    r = cas("forget", "--all-branches", "--keep-last", "2", "--json", cwd=root)
    assert r.code == 0, r.err
    assert {rep["branch"]: len(rep["kept"]) for rep in json.loads(r.out)} == {"main": 2, "other": 2}
    assert cas("policy", "set", "--branch", "other", "--keep-last", "1", cwd=root).code == 0
    r = cas("forget", "--all-branches", "--json", cwd=root)
    assert [(rep["branch"], len(rep["kept"])) for rep in json.loads(r.out)] == [("other", 1)]
    assert logged(cas, root) == [ids[7], ids[6]]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (setpriv)")
def test_a_store_the_user_cannot_write_answers_a_dry_run_and_refuses_the_rest_in_one_line():
    public = Path(tempfile.mkdtemp(prefix="cas-forget-", dir="/tmp"))
    try:
        public.chmod(0o755)
        tree = public / "tree"
        tree.mkdir()
        for n in range(3):
            (tree / "f").write_text(str(n))
            assert cas_process("snapshot" if n else "init", cwd=tree).returncode == 0
        cas_process("snapshot", cwd=tree)
        subprocess.run(["chmod", "-R", "a+rX", str(tree)], check=True)
        before = sorted(os.listdir(tree / ".cas" / "snapshots"))

        def as_nobody(*args):
            return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   sys.executable, "-m", "cas.cli", *args], cwd=tree,
                                  capture_output=True, env={**os.environ, "HOME": str(public)})
        dry = as_nobody("forget", "--keep-last", "1", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert len(json.loads(dry.stdout)[0]["forgotten"]) == len(before) - 1
        for args in (("forget", "--keep-last", "1"), ("forget", "HEAD"),
                     ("policy", "set", "--keep-last", "1")):
            r = as_nobody(*args)
            err = [line for line in r.stderr.decode().splitlines() if "warning" not in line]
            assert r.returncode in (1, 2) and len(err) == 1 and "Traceback" not in err[0], r.stderr
        assert sorted(os.listdir(tree / ".cas" / "snapshots")) == before
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(public)], capture_output=True)
        shutil.rmtree(public, ignore_errors=True)
