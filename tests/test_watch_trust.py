"""The watcher, .casignore and SQLite side files under odd input and faults.

Real watchdog observers, real `cas` subprocesses, real files and SQLite
databases. Faults are injected into our own code (a function made to
raise) or into watchdog's emitter thread; storage is never mocked.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import cas.ops.watch as watch_module
from cas.errors import WatcherFailed
from cas.model.history import History
from cas.ops.ignore import MAX_IGNORE_BYTES, load_ignore
from cas.ops.sqlite_capture import sqlite_side_files
from cas.ops.watch import WatchOptions, Watcher, state_paths, watch_status
from cas.storage.store import Store

from .conftest import cas_process
from .test_watch import Watch, head_files, wait_for

BAD_LINES = "*.log\n!\nfoo\\\n[z-a]\ncache/\n!keep.log\n"


def _files(tree: Path) -> None:
    (tree / "a.log").write_text("ignored")
    (tree / "keep.log").write_text("kept by a negation after the bad lines")
    (tree / "cache").mkdir()
    (tree / "cache" / "x.bin").write_bytes(b"ignored")


# -- item 5: .casignore ---------------------------------------------------------

def test_bad_casignore_lines_are_warned_about_and_skipped(tree, cas):
    _files(tree)
    (tree / ".casignore").write_text(BAD_LINES)
    r = cas("snapshot", cwd=tree)
    assert r.code == 0, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err
    for number in (2, 3, 4):
        assert f".casignore: line {number}:" in r.err
    files = head_files(tree)
    # The good lines still apply, in order: the negation after the bad ones works.
    assert "a.log" not in files and "cache/x.bin" not in files
    assert files["keep.log"] == b"kept by a negation after the bad lines"


def test_load_ignore_keeps_order_and_negation_of_the_good_lines(tmp_path):
    (tmp_path / ".casignore").write_text("# comment\n\n*.tmp\n[z-a]\n!important.tmp\nbuild/\n")
    rules = load_ignore(str(tmp_path))
    assert [p.message.split(":")[0] for p in rules.problems] == ["line 4"]
    assert all(p.severity == "warning" for p in rules.problems)
    assert rules.matches("x.tmp", False) and not rules.matches("important.tmp", False)
    assert rules.matches("build", True) and not rules.matches("build", False)


def _make_odd_casignore(tree: Path, kind: str) -> None:
    path = tree / ".casignore"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "link-to-a-file":
        (tree / "patterns").write_text("*.log\n")
        path.symlink_to(tree / "patterns")
    elif kind == "directory":
        path.mkdir()
    elif kind == "huge":
        path.write_bytes(b"*.log\n" + b"#" * MAX_IGNORE_BYTES)


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "link-to-a-file", "directory", "huge"])
def test_an_odd_casignore_never_hangs_and_ignores_nothing(tree, kind):
    _files(tree)
    _make_odd_casignore(tree, kind)
    r = cas_process("snapshot", cwd=tree, timeout=60)  # a hang fails here
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert "Traceback" not in err and ".casignore" in err and "nothing is ignored" in err
    files = head_files(tree)
    assert "a.log" in files and "cache/x.bin" in files  # backing up too much loses nothing


def test_an_unreadable_casignore_is_a_warning(tree):
    _files(tree)
    (tree / ".casignore").write_text("*.log\n")
    (tree / ".casignore").chmod(0)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-c",
                        "from cas.ops.ignore import load_ignore; import sys; "
                        "r = load_ignore(sys.argv[1]); print(r.spec is None, r.problems[0].message)",
                        str(tree)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"True cannot be opened (Permission denied)")


# -- the watcher: no thread dies silently ----------------------------------------

HEAD_FILES = textwrap.dedent("""
    import json, sys
    from tests.test_watch import head_files
    print(json.dumps({p: d.decode("latin-1") for p, d in head_files(__import__("pathlib").Path(sys.argv[1])).items()}))
""")


def head_files_elsewhere(tree: Path) -> dict[str, bytes]:
    """``head_files`` from another process: LMDB refuses a second open of a
    store in the process where an in-process watcher has it open."""
    r = subprocess.run([sys.executable, "-c", HEAD_FILES, str(tree)], capture_output=True,
                       timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0, r.stderr
    return {p: d.encode("latin-1") for p, d in json.loads(r.stdout).items()}


class InProcess:
    """A Watcher run on a thread of this process, with a real observer."""

    def __init__(self, tree: Path, quiet: float = 0.3):
        self.tree = tree
        self.lines: list[dict] = []
        self.watcher = Watcher(str(tree / ".cas"), str(tree), WatchOptions("main", quiet, 60.0),
                               self.lines.append)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-watcher")
        self.thread.start()
        wait_for(lambda: self.events("ingest") or self.error, what="the first scan")

    def _run(self) -> None:
        try:
            self.watcher.run(self.stop)
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            self.error = e

    def events(self, kind: str) -> list[dict]:
        return [e for e in list(self.lines) if e["event"] == kind]

    def finish(self) -> None:
        self.stop.set()
        self.watcher.wake()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def test_a_bad_casignore_written_while_watching_stops_nothing(tree):
    w = Watch(tree)
    try:
        (tree / ".casignore").write_text(BAD_LINES)
        (tree / "a.log").write_text("ignored")
        wait_for(lambda: any(".casignore" in e.get("path", "") for e in w.events("problem")),
                 what="the bad lines reported")
        (tree / "later.txt").write_text("written after the bad .casignore")
        wait_for(lambda: head_files(tree).get("later.txt") == b"written after the bad .casignore",
                 what="a later change in a snapshot")
        save = tree / "notes.txt"
        save.write_text("and another\n")
        wait_for(lambda: head_files(tree).get("notes.txt") == b"and another\n", what="one more")
        assert w.alive()
        assert "a.log" not in head_files(tree)
    finally:
        assert w.stop() == 0
    assert "Traceback" not in w.stderr
    warnings = [e for e in w.events("problem") if e.get("severity") == "warning"]
    # Each bad line is logged once, not at every snapshot, and never retried.
    assert sorted(e["detail"].split(":")[0] for e in warnings) == ["line 2", "line 3", "line 4"]


def test_a_fault_in_the_event_handler_is_logged_and_recovered_by_a_full_scan(tree, monkeypatch):
    real_note = Watcher.note

    def note(self, path, *args, **kwargs):
        if "poison" in os.fsdecode(path):
            raise RuntimeError("injected fault for a poison name")
        return real_note(self, path, *args, **kwargs)

    monkeypatch.setattr(Watcher, "note", note)
    w = InProcess(tree)
    try:
        (tree / "poison.txt").write_text("the handler fails on this one")
        wait_for(lambda: w.events("fault"), what="the fault logged")
        # The event was lost, the full scan that answers the fault is not.
        wait_for(lambda: head_files_elsewhere(tree).get("poison.txt") == b"the handler fails on this one",
                 what="the full scan after the fault")
        (tree / "after.txt").write_text("later")
        wait_for(lambda: head_files_elsewhere(tree).get("after.txt") == b"later", what="later changes")
        state = watch_status(str(tree / ".cas"), str(tree))
        assert state["running"] and state["faults"] >= 1
        assert state["last_fault"]["thread"] == "events"
        assert "injected fault" in state["last_fault"]["error"]
    finally:
        w.finish()
    assert w.error is None
    fault = w.events("fault")[0]
    assert fault["thread"] == "events" and "RuntimeError" in fault["traceback"]


def test_a_dead_observer_thread_is_restarted(tree):
    w = InProcess(tree)
    try:
        old = w.watcher._observer
        emitter = next(iter(old.emitters))

        def broken(timeout):
            raise OSError("injected: the event source failed")

        emitter.queue_events = broken  # its thread calls this and dies
        wait_for(lambda: not emitter.is_alive(), what="the emitter thread to die")
        wait_for(lambda: any(e["activity"] == "observer" for e in w.events("trouble")),
                 what="the trouble logged")
        wait_for(lambda: w.watcher._observer not in (None, old) and w.watcher._observer.is_alive(),
                 what="a new observer")
        (tree / "after.txt").write_text("seen by the new observer")
        wait_for(lambda: head_files_elsewhere(tree).get("after.txt") == b"seen by the new observer",
                 what="changes after the restart")
        wait_for(lambda: w.events("recovered"), what="the recovery logged")
    finally:
        w.finish()
    assert w.error is None
    trouble = w.events("trouble")
    assert len(trouble) == 1 and "injected" in trouble[0]["error"]  # the thread's own error
    assert not w.events("fault")  # restarted by the loop, not counted towards giving up


def test_a_failing_snapshot_is_retried_then_succeeds(tree, monkeypatch):
    monkeypatch.setattr(watch_module, "RETRY_SECONDS", 0.2)
    real = watch_module.take_snapshot
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if 2 <= len(calls) <= 3:
            raise RuntimeError("injected snapshot fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(watch_module, "take_snapshot", flaky)
    w = InProcess(tree)
    try:
        (tree / "a.txt").write_text("written while snapshots fail")
        wait_for(lambda: head_files_elsewhere(tree).get("a.txt") == b"written while snapshots fail",
                 what="the change after the faults")
    finally:
        w.finish()
    assert w.error is None
    faults = w.events("fault")
    assert faults and all(e["thread"] == "snapshot" for e in faults)
    assert w.watcher.faults == 2 and w.watcher._faults_in_a_row == 0


def test_a_snapshot_that_always_fails_makes_the_watcher_exit_non_zero(tree, monkeypatch):
    monkeypatch.setattr(watch_module, "RETRY_SECONDS", 0.1)

    def broken(*args, **kwargs):
        raise RuntimeError("injected: every snapshot fails")

    monkeypatch.setattr(watch_module, "take_snapshot", broken)
    w = InProcess(tree)
    w.thread.join(timeout=60)
    assert isinstance(w.error, WatcherFailed)
    assert "every snapshot fails" in str(w.error) and w.error.exit_code == 1
    state = watch_status(str(tree / ".cas"), str(tree))
    assert not state["running"] and "every snapshot fails" in state["failed"]
    assert state["faults"] == watch_module.MAX_FAULTS
    assert w.events("stop")[0]["failed"]


GIVE_UP = textwrap.dedent("""
    import sys
    import cas.ops.watch as watch
    from cas.cli.main import run
    watch.RETRY_SECONDS = 0.1
    def broken(*args, **kwargs):
        raise RuntimeError("injected: every snapshot fails")
    watch.take_snapshot = broken
    sys.exit(run(["watch", "--quiet-period", "0.3s", "--log-file", sys.argv[1]]))
""")


def test_a_watcher_process_that_gives_up_exits_1_with_one_line(tree, tmp_path):
    log = tmp_path / "watch.log"
    r = subprocess.run([sys.executable, "-c", GIVE_UP, str(log)], cwd=tree, capture_output=True,
                       timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert err.count("\n") == 1 and "stopped" in err and "Traceback" not in err
    status = cas_process("watch", "--status", cwd=tree)
    assert status.returncode == 3
    assert b"faults: 5" in status.stdout and b"every snapshot fails" in status.stdout


def test_status_reports_a_watcher_that_stopped_beating(tree):
    w = Watch(tree)
    try:
        os.kill(w.proc.pid, signal.SIGSTOP)  # alive, holding its lock, doing nothing
        _, state_path = state_paths(str(tree / ".cas"), str(tree))
        state = json.loads(Path(state_path).read_text())
        state["updated"] = "2000-01-01T00:00:00.000000Z"  # as if time had passed
        Path(state_path).write_text(json.dumps(state))
        r = cas_process("watch", "--status", cwd=tree)
        assert r.returncode == 1 and b"STALLED" in r.stdout
        r = cas_process("watch", "--status", "--json", cwd=tree)
        doc = json.loads(r.stdout)
        assert doc["running"] and doc["stalled"] and doc["heartbeat_age"] > 300
        os.kill(w.proc.pid, signal.SIGCONT)
    finally:
        os.kill(w.proc.pid, signal.SIGCONT)
        assert w.stop() == 0
    r = cas_process("watch", "--status", "--json", cwd=tree)
    assert r.returncode == 3 and not json.loads(r.stdout)["stalled"]


def test_status_of_a_crafted_state_file_does_not_hang(tree):
    lock_path, state_path = state_paths(str(tree / ".cas"), str(tree))
    os.makedirs(os.path.dirname(state_path), exist_ok=True)
    os.mkfifo(state_path)
    os.mkfifo(lock_path)
    r = cas_process("watch", "--status", "--json", cwd=tree, timeout=60)
    assert r.returncode == 3 and json.loads(r.stdout)["running"] is False


# -- item 6: SQLite side files only beside a database -----------------------------

def _diary_and_database(tree: Path) -> sqlite3.Connection:
    (tree / "diary").write_text("dear diary\n")
    (tree / "diary-journal").write_text("a text file, not a journal\n")
    (tree / "notes-wal").write_text("no notes file beside it\n")
    conn = sqlite3.connect(tree / "state.db")
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (v TEXT)")
    with conn:
        conn.execute("INSERT INTO t VALUES ('committed, still in the WAL')")
    assert (tree / "state.db-wal").stat().st_size > 0
    return conn


def _assert_captured(tree: Path, tmp_path: Path) -> None:
    files = head_files(tree)
    assert files["diary"] == b"dear diary\n"
    assert files["diary-journal"] == b"a text file, not a journal\n"
    assert files["notes-wal"] == b"no notes file beside it\n"
    assert "state.db-wal" not in files and "state.db-shm" not in files
    copy = tmp_path / "copy.db"
    copy.write_bytes(files["state.db"])
    rows = sqlite3.connect(copy).execute("SELECT v FROM t").fetchall()
    assert rows == [("committed, still in the WAL",)]


def test_snapshot_sqlite_backup_reads_a_non_database_and_its_lookalike_side_file(tree, tmp_path,
                                                                                  cas):
    conn = _diary_and_database(tree)
    try:
        r = cas("snapshot", "--sqlite-backup", cwd=tree)
        assert r.code == 0, r.err
        _assert_captured(tree, tmp_path)
    finally:
        conn.close()


def test_the_watcher_reads_a_non_database_and_its_lookalike_side_file(tree, tmp_path):
    conn = _diary_and_database(tree)
    w = Watch(tree)
    try:
        wait_for(lambda: "diary-journal" in head_files(tree), what="the first scan")
        _assert_captured(tree, tmp_path)
        # Changes of the lookalike are its own, seen by targeted snapshots.
        with open(tree / "diary-journal", "a") as f:
            f.write("appended\n")
        wait_for(lambda: head_files(tree).get("diary-journal", b"").endswith(b"appended\n"),
                 what="the appended lookalike")
        with conn:
            conn.execute("INSERT INTO t VALUES ('second row')")

        def rows() -> int:
            copy = tmp_path / "again.db"
            copy.write_bytes(head_files(tree)["state.db"])
            return sqlite3.connect(copy).execute("SELECT COUNT(*) FROM t").fetchone()[0]

        wait_for(lambda: rows() == 2, what="the database change seen through its WAL")
        assert "state.db-wal" not in head_files(tree)
    finally:
        assert w.stop() == 0
        conn.close()
    scans = [e["scan"] for e in w.events("ingest")]
    assert "targeted" in scans


def test_sqlite_side_files_needs_the_header_of_a_regular_file(tmp_path):
    real = sqlite3.connect(tmp_path / "real.db")
    real.execute("CREATE TABLE t (x)")
    real.commit()
    real.close()
    (tmp_path / "real.db-journal").write_bytes(b"")
    (tmp_path / "text").write_text("SQLite format 2 is not it")
    (tmp_path / "text-wal").write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "real.db")
    (tmp_path / "link-wal").write_bytes(b"")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "pipe-shm").write_bytes(b"")
    names = {os.fsencode(n) for n in os.listdir(tmp_path)}
    assert sqlite_side_files(os.fsencode(tmp_path), names) == {b"real.db-journal"}


# -- item 11: a head moved by someone else is not a base ----------------------------

def _same_as_a_full_scan(tree: Path) -> None:
    from cas.ops.scan import scan
    with Store.open(str(tree / ".cas")) as store:
        head = History(store).branch_head("main")
        full = scan(store, str(tree), "main", None)
        assert full.root == head.tree
        assert full.files == head.stats["files"]


@pytest.mark.parametrize("how", ["forget", "branch"])
def test_the_watcher_rescans_after_the_head_moved_back(tree, cas, how):
    w = Watch(tree)
    try:
        (tree / "a.txt").write_text("v1")
        wait_for(lambda: head_files(tree).get("a.txt") == b"v1", what="v1")
        older = w.events("snapshot")[-1]["id"]
        (tree / "a.txt").write_text("v2")
        wait_for(lambda: head_files(tree).get("a.txt") == b"v2", what="v2")
        time.sleep(0.5)
        args = ("forget", "HEAD") if how == "forget" else ("branch", "main", older)
        assert cas(*args, cwd=tree).code == 0
        assert head_files(tree).get("a.txt") == b"v1"  # the head moved back
        (tree / "b.txt").write_text("a change elsewhere")
        wait_for(lambda: "b.txt" in head_files(tree), what="the next snapshot")
        # The tree as it is, not v1 from the moved-back head.
        assert head_files(tree)["a.txt"] == b"v2"
        assert any(e["event"] == "rescan" for e in w.events())
    finally:
        assert w.stop() == 0
    _same_as_a_full_scan(tree)



def test_watch_files_and_the_log_are_private_whatever_the_umask(tree):
    old = os.umask(0o022)
    try:
        w = Watch(tree)  # the child inherits the umask
    finally:
        os.umask(old)
    try:
        lock_path, state_path = state_paths(str(tree / ".cas"), str(tree))
        wait_for(lambda: os.path.exists(state_path), what="the state file")
        assert os.stat(os.path.dirname(lock_path)).st_mode & 0o077 == 0
        assert os.stat(lock_path).st_mode & 0o077 == 0
        assert os.stat(state_path).st_mode & 0o077 == 0
        assert os.stat(w.log).st_mode & 0o077 == 0
    finally:
        assert w.stop() == 0


def test_a_database_in_its_first_transaction_is_still_one_database(tree, tmp_path):
    # SQLite writes a new database's header when it commits: until then the
    # file is empty beside a journal. That is an (empty) database; an empty
    # file beside a text "-journal" is not.
    conn = sqlite3.connect(tree / "new.db", isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE t (v)")
    assert (tree / "new.db").stat().st_size == 0 and (tree / "new.db-journal").exists()
    (tree / "blank").write_bytes(b"")
    (tree / "blank-journal").write_text("text beside an empty file\n")
    try:
        r = cas_process("snapshot", "--sqlite-backup", cwd=tree)
        assert r.returncode == 0, r.stderr
    finally:
        conn.execute("COMMIT")
        conn.close()
    files = head_files(tree)
    assert "new.db" in files and "new.db-journal" not in files
    assert files["blank"] == b"" and files["blank-journal"] == b"text beside an empty file\n"
