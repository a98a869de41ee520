"""cas watch: a real watchdog observer in a real subprocess, on real files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cas.model.history import History
from cas.model.tree import FILE
from cas.storage.store import Store

QUIET = "0.3s"


class Watch:
    """One ``cas watch`` child process on ``tree`` (store in tree/.cas)."""

    def __init__(self, tree: Path, *args: str, setpriv: bool = False):
        self.tree = tree
        self.log = tree.parent / f"watch-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "cas.cli", "watch", "--quiet-period", QUIET,
               "--log-file", str(self.log), *args]
        if setpriv:
            cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
        self.proc = subprocess.Popen(cmd, cwd=tree, stderr=subprocess.PIPE)
        wait_for(lambda: self.events("snapshot") or self.events("ingest"), what="first scan")

    def events(self, kind: str | None = None) -> list[dict]:
        try:
            lines = self.log.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = [json.loads(line) for line in lines if line.strip()]
        return [e for e in out if kind is None or e["event"] == kind]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self.stderr = self.proc.stderr.read().decode()
        return code

    def alive(self) -> bool:
        return self.proc.poll() is None


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def head_files(tree: Path, branch: str = "main") -> dict[str, bytes]:
    with Store.open(str(tree / ".cas")) as store:
        history = History(store)
        head = history.branch_head(branch)
        if head is None:
            return {}
        return {p.decode(): store.read_object(e.oid) for p, e in history.walk(head.tree)
                if e.kind == FILE}


def all_versions(tree: Path, path: str, branch: str = "main") -> list[bytes]:
    """The content of ``path`` in every snapshot of the branch, oldest first."""
    with Store.open(str(tree / ".cas")) as store:
        history = History(store)
        head = history.branch_head(branch)
        out = []
        for snap in history.ancestors(head):
            try:
                entry = history.entry_at(snap.tree, path.encode())
            except Exception:  # noqa: BLE001 - not in that snapshot
                continue
            if entry is not None and entry.kind == FILE:
                out.append(store.read_object(entry.oid))
        return out[::-1]


def save_like_an_editor(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.swp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def test_editor_saves_and_new_files_are_snapshotted(tree):
    w = Watch(tree)
    try:
        save_like_an_editor(tree / "notes.txt", b"second\n")
        (tree / "sub").mkdir()
        (tree / "sub" / "new.json").write_text('{"a": 1}')
        wait_for(lambda: head_files(tree).get("notes.txt") == b"second\n"
                 and "sub/new.json" in head_files(tree), what="the save in a snapshot")
        assert ".notes.txt.swp" not in head_files(tree)
    finally:
        assert w.stop() == 0
    snaps = w.events("snapshot")
    assert snaps and all(e["branch"] == "main" for e in snaps)
    assert w.events("ingest")


def test_a_log_appended_while_watching_is_never_half_a_line(tree):
    # A writer stalled mid-line for longer than the quiet period looks done:
    # that is what the quiet period means. A 2 s period keeps a loaded test
    # machine's stalls well inside it.
    w = Watch(tree, "--quiet-period", "2s")
    log = tree / "events.jsonl"
    lines = [json.dumps({"i": i, "text": "x" * (i % 50)}) + "\n" for i in range(400)]
    try:
        with open(log, "w") as f:
            for i, line in enumerate(lines):
                # Half a line, a pause, the rest: a snapshot in between must not see it.
                f.write(line[:10])
                f.flush()
                time.sleep(0.002)
                f.write(line[10:])
                f.flush()
                if i % 100 == 0:
                    (tree / "notes.txt").write_text(f"tick {i}\n")  # keep snapshots coming
        wait_for(lambda: head_files(tree).get("events.jsonl") == "".join(lines).encode(),
                 what="the closed log in a snapshot")
    finally:
        assert w.stop() == 0
    final = "".join(lines).encode()
    for version in all_versions(tree, "events.jsonl"):
        assert final.startswith(version)
        assert version == b"" or version.endswith(b"\n")


WRITER = textwrap.dedent("""
    import sqlite3, sys, time, random
    path, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    conn = sqlite3.connect(path, timeout=30)
    conn.execute(f"PRAGMA journal_mode={mode}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB, n INTEGER)")
    rnd = random.Random(1)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        with conn:
            for _ in range(20):
                conn.execute("INSERT INTO t (v, n) VALUES (?, ?)", (rnd.randbytes(rnd.randint(10, 3000)), n))
            conn.execute("UPDATE t SET n = n + 1 WHERE id % 7 = ?", (n % 7,))
            if n % 10 == 0:
                conn.execute("DELETE FROM t WHERE id % 13 = ?", (n % 13,))
        n += 1
    conn.close()
    print(n)
""")


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_written_by_another_process_is_captured_consistently(tree, tmp_path, journal):
    db = tree / "state.db"
    w = Watch(tree)
    try:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), journal, "4"],
                                  stdout=subprocess.PIPE)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            (tree / "notes.txt").write_text(f"tick {time.monotonic()}\n")
            time.sleep(0.25)
        assert writer.wait(timeout=60) == 0
        wait_for(lambda: len(w.events("snapshot")) >= 4, what="several snapshots")
        time.sleep(1.0)
    finally:
        assert w.stop() == 0
    versions = all_versions(tree, "state.db")
    assert len(versions) >= 2
    rows = []
    for i, data in enumerate(versions):
        copy = tmp_path / f"copy-{i}.db"
        copy.write_bytes(data)
        conn = sqlite3.connect(copy)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows.append(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
        conn.close()
    assert rows[-1] > 0
    # Side files never enter history: the copy already holds what they add.
    assert not any(p.endswith(("-wal", "-shm", "-journal")) for p in head_files(tree))


def test_directory_rename_and_deletion(tree):
    (tree / "old").mkdir()
    for i in range(20):
        (tree / "old" / f"f{i}.txt").write_text(str(i))
    (tree / "gone.txt").write_text("bye")
    w = Watch(tree)
    try:
        wait_for(lambda: "old/f3.txt" in head_files(tree), what="initial tree")
        os.rename(tree / "old", tree / "new")
        os.unlink(tree / "gone.txt")
        wait_for(lambda: "new/f3.txt" in head_files(tree) and "old/f3.txt" not in head_files(tree)
                 and "gone.txt" not in head_files(tree), what="the rename in a snapshot")
        (tree / "new" / "after.txt").write_text("inside the renamed directory")
        wait_for(lambda: "new/after.txt" in head_files(tree), what="a file in the renamed dir")
    finally:
        assert w.stop() == 0


def test_a_burst_of_10000_files_is_fully_snapshotted(tree):
    w = Watch(tree)
    try:
        started = time.monotonic()
        burst = tree / "burst"
        burst.mkdir()
        for i in range(10_000):
            (burst / f"{i:05d}.txt").write_bytes(b"%d\n" % i)
        wait_for(lambda: sum(p.startswith("burst/") for p in head_files(tree)) == 10_000,
                 timeout=120, what="10,000 files in a snapshot")
        print(f"burst snapshotted {time.monotonic() - started:.1f} s after it began")
        assert w.alive()
    finally:
        assert w.stop() == 0
    files = head_files(tree)
    assert files["burst/04242.txt"] == b"4242\n"


def test_sigterm_writes_a_final_snapshot(tree):
    w = Watch(tree, "--quiet-period", "30s", "--max-interval", "60s")
    (tree / "late.txt").write_text("written just before stop")
    time.sleep(0.5)
    assert "late.txt" not in head_files(tree)  # the quiet period has not passed
    assert w.stop(signal.SIGTERM) == 0
    assert head_files(tree)["late.txt"] == b"written just before stop"
    assert w.events("stop")


def test_sigkill_then_restart_loses_nothing(tree, cas):
    w = Watch(tree)
    (tree / "a.txt").write_text("before the kill")
    wait_for(lambda: head_files(tree).get("a.txt") == b"before the kill", what="a.txt")
    w.stop(signal.SIGKILL)
    (tree / "a.txt").write_text("while no watcher ran")
    (tree / "b.txt").write_text("also while down")
    os.unlink(tree / "notes.txt")
    w2 = Watch(tree)
    try:
        files = wait_for(lambda: (f := head_files(tree)).get("a.txt") == b"while no watcher ran"
                         and f, what="the catch-up snapshot")
        assert files.get("b.txt") == b"also while down" and "notes.txt" not in files
    finally:
        assert w2.stop() == 0
    r = cas("verify", "--full", cwd=tree)
    assert r.code == 0, r.err


def test_one_watcher_per_tree_and_status(tree):
    w = Watch(tree)
    try:
        second = subprocess.run([sys.executable, "-m", "cas.cli", "watch"], cwd=tree,
                                capture_output=True, timeout=60)
        assert second.returncode != 0
        assert b"already running" in second.stderr and b"Traceback" not in second.stderr
        status = subprocess.run([sys.executable, "-m", "cas.cli", "watch", "--status", "--json"],
                                cwd=tree, capture_output=True, timeout=60)
        state = json.loads(status.stdout)
        assert status.returncode == 0 and state["running"] and state["pid"] == w.proc.pid
        assert state["last_snapshot"]["id"]
    finally:
        assert w.stop() == 0
    status = subprocess.run([sys.executable, "-m", "cas.cli", "watch", "--status"], cwd=tree,
                            capture_output=True, timeout=60)
    assert status.returncode == 3 and b"no watcher is running" in status.stdout
    alias = subprocess.run([sys.executable, "-m", "cas.cli", "status", "--watch"], cwd=tree,
                           capture_output=True, timeout=60)
    assert alias.returncode == 3 and b"no watcher is running" in alias.stdout


def test_ignored_paths_and_the_store_itself_cause_no_snapshots(tree):
    (tree / ".casignore").write_text("*.log\ncache/\n")
    w = Watch(tree)
    try:
        wait_for(lambda: w.events("snapshot"), what="the first snapshot")
        time.sleep(1.0)
        before = len(w.events("snapshot"))
        for i in range(20):
            (tree / "debug.log").write_text(f"{i}\n" * 100)
            (tree / "cache").mkdir(exist_ok=True)
            (tree / "cache" / f"{i}.bin").write_bytes(os.urandom(100))
            time.sleep(0.05)
        time.sleep(1.5)
        assert len(w.events("snapshot")) == before  # nothing to record, and no loop on .cas/
        assert "debug.log" not in head_files(tree)
    finally:
        assert w.stop() == 0


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0,
                    reason="needs root and setpriv to drop the file-permission override")
def test_unreadable_and_vanishing_files_do_not_stop_the_watcher(tree):
    w = Watch(tree, setpriv=True)
    try:
        secret = tree / "secret.txt"
        secret.write_text("not yet readable")
        secret.chmod(0)
        for i in range(200):  # files that vanish between their event and the scan
            p = tree / f"blink-{i}.tmp"
            p.write_text("x")
            p.unlink()
        (tree / "fine.txt").write_text("ok")
        wait_for(lambda: "fine.txt" in head_files(tree), what="the readable file")
        wait_for(lambda: any(e.get("path") == "secret.txt" for e in w.events("problem")),
                 what="the unreadable file logged")
        assert w.alive()
        secret.chmod(0o644)  # readable again: picked up on a retry
        wait_for(lambda: head_files(tree).get("secret.txt") == b"not yet readable", timeout=60,
                 what="the retry")
    finally:
        assert w.stop() == 0


def test_a_vanished_tree_is_never_recorded_as_empty(tree, tmp_path):
    from cas.errors import SourceError
    from cas.ops.snapshot import take_snapshot
    with Store.open(str(tree / ".cas")) as store:
        history = History(store)
        take_snapshot(history, str(tree), "main")
        with pytest.raises(SourceError, match="cannot be listed"):
            take_snapshot(history, str(tmp_path / "unmounted"), "main")
        assert history.branch_head("main").stats["files"] == 1


def test_a_log_file_inside_the_tree_does_not_feed_itself(tree):
    log = tree / "watch.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "cas.cli", "watch", "--quiet-period", QUIET,
                             "--log-file", str(log)], cwd=tree)
    try:
        wait_for(lambda: log.exists() and b'"snapshot"' in log.read_bytes(), what="first snapshot")
        (tree / "notes.txt").write_text("changed once\n")
        wait_for(lambda: head_files(tree).get("notes.txt") == b"changed once\n", what="the change")
        time.sleep(2.0)
        count = log.read_text().count('"event": "snapshot"')
        time.sleep(2.0)
        assert log.read_text().count('"event": "snapshot"') == count  # no snapshot loop
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_sigkill_in_the_middle_of_a_snapshot_leaves_a_sound_store(tree, cas):
    big = tree / "big"
    big.mkdir()
    w = Watch(tree)
    for i in range(3000):
        (big / f"{i:04d}.bin").write_bytes(os.urandom(2048))
    # Kill as soon as the watcher starts ingesting the burst.
    wait_for(lambda: any(e["changes"] > 0 for e in w.events("ingest")) or
             os.path.exists(tree / ".cas" / "tmp") and os.listdir(tree / ".cas" / "tmp"),
             timeout=60, what="the ingest to begin")
    w.stop(signal.SIGKILL)
    r = cas("verify", "--full", cwd=tree)
    assert r.code == 0, r.err
    w2 = Watch(tree)
    try:
        wait_for(lambda: sum(p.startswith("big/") for p in head_files(tree)) == 3000, timeout=120,
                 what="the catch-up after the kill")
    finally:
        assert w2.stop() == 0
    assert cas("verify", "--full", cwd=tree).code == 0


@pytest.mark.parametrize("args, message", [
    (("watch", "--quiet-period", "soon"), "is not a duration"),
    (("watch", "--quiet-period", "10s", "--max-interval", "1s"), "--quiet-period"),
    (("watch", "/nonexistent/tree"), "does not exist"),
])
def test_watch_bad_input_is_one_clear_error(tree, cas, args, message):
    r = cas(*args, cwd=tree)
    assert r.code == 2 and message in r.err and "Traceback" not in r.err


def test_targeted_snapshots_end_where_a_full_scan_does(tree):
    import random
    from cas.ops.scan import scan
    from .test_scan_targets import _mutate, _random_tree
    rnd = random.Random(5)
    _random_tree(tree, rnd)
    w = Watch(tree)
    try:
        for _ in range(25):
            _mutate(tree, rnd, set())
            time.sleep(rnd.choice([0.05, 0.2, 0.6]))
        time.sleep(1.5)
    finally:
        assert w.stop() == 0
    scans = [e["scan"] for e in w.events("ingest")]
    assert "targeted" in scans  # events, not full rescans, drove the snapshots
    with Store.open(str(tree / ".cas")) as store:
        head = History(store).branch_head("main")
        full = scan(store, str(tree), "main", None)
        history = History(store)

        def load(oid):
            return full.trees.get(oid) or history.load_tree(oid)
        from cas.ops.diff import diff_trees
        missed = [(c.kind, c.path, c.old, c.new)
                  for c in diff_trees(load, head.tree, load, full.root)]
        assert full.root == head.tree, missed
        assert (full.files, full.dirs, full.symlinks, full.bytes) == tuple(
            head.stats[k] for k in ("files", "dirs", "symlinks", "bytes"))


def test_changes_whose_events_are_still_queued_at_sigterm_are_kept(tree):
    w = Watch(tree, "--quiet-period", "30s", "--max-interval", "60s")
    for i in range(300):  # enough that some events are still in flight at the signal
        (tree / f"last-{i:03d}.txt").write_text(str(i))
    assert w.stop(signal.SIGTERM) == 0
    files = head_files(tree)
    assert all(files.get(f"last-{i:03d}.txt") == str(i).encode() for i in range(300))


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0,
                    reason="needs root and setpriv to drop the file-permission override")
def test_a_file_that_turns_unreadable_keeps_its_previous_version(tree):
    data = tree / "data.txt"
    data.write_text("v1")
    w = Watch(tree, setpriv=True)
    try:
        wait_for(lambda: head_files(tree).get("data.txt") == b"v1", what="the first version")
        data.write_text("v2")
        data.chmod(0)
        (tree / "other.txt").write_text("a change beside it")
        wait_for(lambda: "other.txt" in head_files(tree), what="the next snapshot")
        wait_for(lambda: any(e.get("path") == "data.txt" for e in w.events("problem")),
                 what="the unreadable file logged")
        # Not shown deleted: the snapshot keeps what was last read.
        assert head_files(tree).get("data.txt") == b"v1"
        data.chmod(0o644)
        wait_for(lambda: head_files(tree).get("data.txt") == b"v2", timeout=60, what="the retry")
    finally:
        assert w.stop() == 0


# -- thinning and maintenance as the watcher goes -----------------------------------

def _timeline(tree: Path, branch: str = "main") -> list:
    with Store.open(str(tree / ".cas")) as store:
        return History(store).timeline(branch)


def test_the_watcher_thins_its_branch_after_each_snapshot(tree, cas):
    assert cas("snapshot", cwd=tree).code == 0
    assert cas("policy", "set", "--keep-last", "3", cwd=tree).code == 0
    w = Watch(tree)
    try:
        for i in range(6):
            save_like_an_editor(tree / "notes.txt", f"version {i}\n".encode())
            wait_for(lambda: head_files(tree).get("notes.txt") == f"version {i}\n".encode(),
                     what=f"version {i}")
    finally:
        assert w.stop() == 0
    snapshots = len(w.events("snapshot"))
    assert len(_timeline(tree)) == 3
    thinned = w.events("thinned")
    # One line per thinning that forgot something, with its count.
    assert 1 <= len(thinned) <= snapshots
    assert sum(e["forgotten"] for e in thinned) == 1 + snapshots - 3
    assert cas("verify", cwd=tree).code == 0


def test_a_branch_the_watcher_starts_on_gets_the_default_policy(tree, cas):
    w = Watch(tree)
    try:
        wait_for(lambda: w.events("snapshot"), what="the first snapshot")
    finally:
        assert w.stop() == 0
    shown = json.loads(cas("policy", "show", "--json", cwd=tree).out)
    assert "main" in shown
    # A policy of the user's own is never replaced.
    assert cas("policy", "set", "--keep-last", "7", cwd=tree).code == 0
    Watch(tree).stop()
    assert json.loads(cas("policy", "show", "--json", cwd=tree).out) != shown


def test_maintenance_runs_once_an_interval_and_a_restart_remembers_the_last(tree):
    w = Watch(tree, "--maintain-interval", "3s")
    try:
        wait_for(lambda: w.events("maintenance"), timeout=30, what="a maintenance run")
    finally:
        assert w.stop() == 0
    run = w.events("maintenance")[0]
    assert run["summary"]["damaged"] == 0 and run["seconds"] >= 0
    last = _watch_state(tree)["last_maintenance"]
    assert last and _watch_state(tree)["maintenance_from"] == last
    # The next interval counts from that run, not from a restart: a watcher
    # restarted more often than its interval still maintains.
    w2 = Watch(tree, "--maintain-interval", "1h")
    try:
        wait_for(lambda: _watch_state(tree).get("pid") == w2.proc.pid, what="the new state")
        assert _watch_state(tree)["maintenance_from"] == last
    finally:
        assert w2.stop() == 0
    assert not w2.events("maintenance")
    assert _watch_state(tree)["last_maintenance"] == last


def _watch_state(tree: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "cas.cli", "watch", "--status", "--json"],
                       cwd=tree, capture_output=True, timeout=60)
    return json.loads(r.stdout)


HOLD_STORE = textwrap.dedent("""
    import sys, time
    from cas.storage.store import Store
    with Store.open(sys.argv[1]):
        print("open", flush=True)
        sys.stdin.readline()
""")

FAST_RETRY = textwrap.dedent("""
    import sys
    import cas.ops.watch as watch
    from cas.cli.main import run
    watch.MAINTENANCE_BACKOFF = (0.5, 1.0)
    sys.exit(run(["watch", "--quiet-period", "0.3s", "--maintain-interval", "1s",
                  "--log-file", sys.argv[1]]))
""")


def test_a_failing_maintenance_is_trouble_and_retried_not_a_stop(tree, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_STORE, str(tree / ".cas")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"open\n"  # maintenance cannot lock the store
    log = tmp_path / "watch.log"
    proc = subprocess.Popen([sys.executable, "-c", FAST_RETRY, str(log)], cwd=tree)

    def events(kind):
        lines = log.read_text().splitlines() if log.exists() else []
        return [e for e in map(json.loads, lines) if e["event"] == kind]

    try:
        wait_for(lambda: events("trouble"), timeout=30, what="the failed run")
        time.sleep(3)  # several retries
        trouble = events("trouble")
        assert len(trouble) == 1 and trouble[0]["activity"] == "maintenance"
        assert trouble[0]["kind"] == "busy" and proc.poll() is None
        (tree / "meanwhile.txt").write_text("snapshots go on")
        holder.stdin.close()
        holder.wait(timeout=30)
        wait_for(lambda: events("maintenance") and events("recovered"), timeout=30,
                 what="the retry")
        wait_for(lambda: "meanwhile.txt" in head_files(tree), what="a snapshot")
    finally:
        holder.kill()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
