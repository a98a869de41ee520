"""cas watch in trouble: a full disk, a dead event source, a SQLite lock at
a stop; real watcher processes, a real full filesystem, real SQLite locks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import cas.ops.watch as watch_module
from cas.errors import WatcherFailed
from cas.ops.watch import watch_status

from .conftest import cas_process
from .test_watch import Watch, head_files, wait_for
from .test_watch_trust import InProcess, head_files_elsewhere


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def small_disk(tmp_path):
    """A tree whose store (tree/.cas) is on a 2 MiB tmpfs of its own."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    tree = tmp_path / "tree"
    (tree / ".cas").mkdir(parents=True)
    (tree / "notes.txt").write_text("first\n")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(tree / ".cas")],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert cas_process("init", cwd=tree).returncode == 0
        yield tree
    finally:
        subprocess.run(["umount", "-l", str(tree / ".cas")], capture_output=True)


def _fill(disk: Path) -> Path:
    """Fill the filesystem of ``disk`` to the last byte; returns the filler."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (65536, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_backs_off_is_one_line_and_status_tells_until_it_is_freed(small_disk):
    tree = small_disk
    w = Watch(tree)
    try:
        wait_for(lambda: w.events("snapshot"), what="the first snapshot")
        filler = _fill(tree / ".cas")
        cpu_before, started = _cpu_seconds(w.proc.pid), time.monotonic()
        # A tree that keeps changing while nothing can be stored.
        for i in range(100):
            (tree / "notes.txt").write_text(f"edit {i}\n" + "x" * 4000)
            time.sleep(0.1)
        cpu = (_cpu_seconds(w.proc.pid) - cpu_before) / (time.monotonic() - started)
        print(f"CPU while the disk was full: {cpu:.1%} of a core; "
              f"{len(w.events())} log lines in all")
        trouble = w.events("trouble")
        assert len(trouble) == 1, trouble  # one line for the state, none per retry
        assert trouble[0]["kind"] == "disk full" and trouble[0]["activity"] == "snapshot"
        assert not w.events("problem") and not w.events("fault")
        assert len(w.events()) <= 8
        assert cpu < 0.10
        r = cas_process("watch", "--status", cwd=tree)
        assert r.returncode == 1, r.stdout
        assert b"TROUBLE (snapshot, disk full) since " in r.stdout
        assert b"No space left on device" in r.stdout
        doc = json.loads(cas_process("watch", "--status", "--json", cwd=tree).stdout)
        assert doc["in_trouble"] and doc["trouble"]["snapshot"]["attempts"] >= 3
        assert doc["trouble"]["snapshot"]["since"] == trouble[0]["since"]
        filler.unlink()
        wait_for(lambda: w.events("recovered"), timeout=90, what="the recovery")
        wait_for(lambda: head_files(tree).get("notes.txt", b"").startswith(b"edit 99\n"),
                 what="the last edit in a snapshot")
        assert cas_process("watch", "--status", cwd=tree).returncode == 0
    finally:
        assert w.stop() == 0
    assert cas_process("verify", "--full", cwd=tree).returncode == 0


LOCKER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("UPDATE t SET v = 'second'")
    conn.execute("BEGIN EXCLUSIVE")   # no reader gets in until this process ends
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_is_honoured_at_once_while_a_backup_waits_on_a_lock(tree, tmp_path, sig):
    db = tree / "state.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES ('first')")
    conn.close()
    w = Watch(tree)
    locker = None
    try:
        wait_for(lambda: "state.db" in head_files(tree), what="the database in a snapshot")
        first = head_files(tree)["state.db"]
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(db)], stdout=subprocess.PIPE)
        assert locker.stdout.readline() == b"locked\n"
        time.sleep(1.5)  # the change is settled at once: its backup is waiting by now
        stopped = time.monotonic()
        code = w.stop(sig)
        took = time.monotonic() - stopped
        print(f"{signal.Signals(sig).name} to exit while a backup waited on a lock: {took:.2f} s")
    finally:
        if locker is not None:
            locker.kill()
            locker.wait()
    assert code == 0 and took <= 3.0
    # The database keeps its previous version, and the log says so.
    assert head_files(tree)["state.db"] == first
    kept = [e for e in w.events("problem") if e["path"] == "state.db"]
    assert kept and "locked by another process" in kept[-1]["detail"]
    assert "previous snapshot's version is kept" in kept[-1]["detail"]


def test_an_observer_that_cannot_be_restarted_is_trouble_with_backoff(tree, monkeypatch):
    real_start = watch_module.Watcher._start_observer
    starts: list[float] = []

    def start(self):
        starts.append(time.monotonic())
        if len(starts) > 1:  # every restart fails, as when the watch limit is reached
            raise WatcherFailed(self.source, "its changes cannot be watched (injected)")
        return real_start(self)

    monkeypatch.setattr(watch_module.Watcher, "_start_observer", start)
    w = InProcess(tree)
    try:
        emitter = next(iter(w.watcher._observer.emitters))

        def broken(timeout):
            raise OSError("injected: the event source failed")

        emitter.queue_events = broken  # called again once an event comes
        (tree / "poke.txt").write_text("an event")
        wait_for(lambda: not emitter.is_alive(), what="the emitter thread to die")
        wait_for(lambda: len(starts) >= 4, timeout=30, what="three restart attempts")
        # Without an observer, each attempt scans in full: changes still go in.
        (tree / "unwatched.txt").write_text("seen by a full scan")
        wait_for(lambda: head_files_elsewhere(tree).get("unwatched.txt") == b"seen by a full scan",
                 timeout=30, what="a change seen without an observer")
        state = watch_status(str(tree / ".cas"), str(tree))
        assert state["in_trouble"] and state["trouble"]["observer"]["kind"] == "observer"
    finally:
        w.finish()
    assert w.error is None
    gaps = [b - a for a, b in zip(starts[1:], starts[2:])]
    assert all(later > earlier for earlier, later in zip(gaps, gaps[1:])), gaps  # backing off
    trouble = w.events("trouble")
    # One line when the event source died, one when the restarts started failing.
    assert len(trouble) == 2 and "injected" in trouble[1]["error"]
    assert not w.events("fault")
