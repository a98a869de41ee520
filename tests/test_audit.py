"""The audit trail: commands that read content or change the store are
recorded with their outcome, listing commands are not, the hash chain names
the first bad record, and a read-only store still works and says so."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CAS = [sys.executable, "-m", "cas.cli"]


def cas(cwd, *args, check=True):
    proc = subprocess.run([*CAS, *args], cwd=cwd, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def records(cwd):
    return json.loads(cas(cwd, "audit", "log", "--json").stdout)


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.txt").write_text("alpha\n")
    cas(root, "init")
    return root


def log_path(root: Path) -> Path:
    return root / ".cas" / "audit" / "log"


def test_reads_and_changes_are_recorded_with_outcome(data):
    cas(data, "snapshot", "-m", "one")
    (data / "a.txt").write_text("beta\n")
    cas(data, "snapshot", "-m", "two")
    cas(data, "cat", "HEAD:a.txt")
    assert cas(data, "cat", "HEAD:missing", check=False).returncode != 0
    cas(data, "tag", "t1")
    cas(data, "forget", "HEAD~1")
    got = records(data)
    commands = [r["command"][1:] for r in got]
    assert commands == [["snapshot", "-m", "one"], ["snapshot", "-m", "two"],
                        ["cat", "HEAD:a.txt"], ["cat", "HEAD:missing"], ["tag", "t1"],
                        ["forget", "HEAD~1"]]
    assert [r["seq"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert got[0]["snapshots_created"] and got[0]["outcome"] == \
        {"status": "ok", "exit_code": 0, "message": None}
    assert got[3]["outcome"]["status"] == "error" and got[3]["outcome"]["exit_code"] != 0
    assert "missing" in got[3]["outcome"]["message"]
    assert got[2]["refs"] == ["HEAD:a.txt"]
    assert got[5]["snapshots_removed"] == got[0]["snapshots_created"]
    assert got[0]["prev"] == "0" * 64 and got[0]["mac"] is None
    for key in ("time", "time_ns", "user", "uid", "host", "pid"):
        assert key in got[0]


def test_listing_commands_are_not_recorded(data):
    cas(data, "snapshot", "-m", "one")
    for args in (["log"], ["status"], ["ls"], ["stats"], ["tag"], ["branch"], ["audit", "log"],
                 ["audit", "verify"]):
        cas(data, *args)
    assert [r["command"][1] for r in records(data)] == ["snapshot"]


def _broken(data, edit):
    for _ in range(4):
        cas(data, "cat", "HEAD:a.txt")
    lines = log_path(data).read_bytes().splitlines(keepends=True)
    log_path(data).write_bytes(b"".join(edit(lines)))
    return cas(data, "audit", "verify", check=False)


@pytest.fixture
def snapped(data):
    cas(data, "snapshot", "-m", "one")
    return data


def test_verify_passes_an_intact_chain(snapped):
    cas(snapped, "cat", "HEAD:a.txt")
    assert cas(snapped, "audit", "verify").stdout.strip() == "2 records, chain intact"


def _flip(lines):
    # Change the pid's last digit: the record stays valid JSON whatever the
    # pid was (changing its first digit could make a leading zero).
    line = lines[2]
    at = line.index(b'"pid":') + 6
    while line[at + 1:at + 2].isdigit():
        at += 1
    digit = b"%d" % ((line[at] - ord("0") + 1) % 10)
    lines[2] = line[:at] + digit + line[at + 1:]
    return lines


@pytest.mark.plain_only
def test_verify_names_a_changed_byte(snapped):
    proc = _broken(snapped, _flip)
    assert proc.returncode == 1
    assert "record 4: does not follow record 3" in proc.stdout


def test_verify_names_a_removed_line(snapped):
    proc = _broken(snapped, lambda lines: lines[:2] + lines[3:])
    assert proc.returncode == 1 and "record 3: missing" in proc.stdout


def test_verify_names_a_swapped_pair(snapped):
    proc = _broken(snapped, lambda lines: [lines[0], lines[2], lines[1], *lines[3:]])
    assert proc.returncode == 1 and "record 2:" in proc.stdout


def test_since_and_json(snapped):
    assert len(records(snapped)) == 1
    future = cas(snapped, "audit", "log", "--since", "2100-01-01", "--json").stdout
    assert json.loads(future) == []
    text = cas(snapped, "audit", "log", "--since", "1 hour ago").stdout
    assert "cas snapshot -m one [ok]" in text


def test_read_only_store_works_and_warns_once(tmp_path, mount_tmpfs):
    disk = mount_tmpfs("disk", "64m")
    (disk / "a.txt").write_text("alpha\n")
    cas(disk, "init")
    cas(disk, "snapshot", "-m", "one")
    before = log_path(disk).read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    proc = cas(disk, "cat", "HEAD:a.txt")
    assert proc.stdout == "alpha\n"
    warnings = [line for line in proc.stderr.splitlines() if "not being logged" in line]
    assert len(warnings) == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert log_path(disk).read_bytes() == before
    assert "not being logged" not in cas(disk, "log").stderr


def test_unwritable_log_warns_and_the_command_works(snapped):
    log_path(snapped).unlink()
    log_path(snapped).mkdir()   # a directory where the log should be: cannot append
    proc = cas(snapped, "cat", "HEAD:a.txt")
    assert proc.stdout == "alpha\n" and proc.stderr.count("not being logged") == 1


def test_a_thousand_appends_stay_fast(tmp_path):
    import time

    from cas.storage.audit import AuditLog, new_record
    root = tmp_path / "store"
    root.mkdir()
    log = AuditLog(str(root))
    took = []
    for _ in range(1000):
        record = new_record(["cas", "cat", "x"], refs=["x"], paths=[], created=[], removed=[],
                            exit_code=0, message=None)
        start = time.perf_counter()
        log.append(record)
        took.append(time.perf_counter() - start)
    took.sort()
    assert took[500] < 0.005
    assert log.verify().records == 1000 and log.verify().problem is None


def test_verify_finds_a_tail_cut_off_against_the_snapshots(snapped):
    cas(snapped, "cat", "HEAD:a.txt")
    cas(snapped, "cat", "HEAD:a.txt")
    (snapped / "a.txt").write_text("gamma\n")
    cas(snapped, "snapshot", "-m", "two")     # saw 3 records
    head = json.loads(cas(snapped, "show", "HEAD", "--json").stdout)
    lines = log_path(snapped).read_bytes().splitlines(keepends=True)
    assert len(lines) == 4
    log_path(snapped).write_bytes(b"".join(lines[:2]))   # a chain intact in itself
    proc = cas(snapped, "audit", "verify", check=False)
    assert proc.returncode == 1, proc.stdout
    assert "record 3: missing" in proc.stdout and "cut short" in proc.stdout, (head, proc.stdout)


def test_load_weights_is_recorded(tmp_path):
    mlx = pytest.importorskip("cas.mlx")
    from .test_models_trust import make_model_dir, weights
    store = tmp_path / "store"
    cas(tmp_path, "--store", str(store), "init")
    src = make_model_dir(tmp_path / "src")
    cas(tmp_path, "--store", str(store), "model", "import", str(src), "--name", "m")
    got = mlx.load_weights("m", store=str(store))
    assert bytes(memoryview(got["w"])) == weights(1)
    last = json.loads(cas(tmp_path, "--store", str(store), "audit", "log", "--json").stdout)[-1]
    assert last["command"] == ["cas.mlx.load_weights", "m"]
    assert last["outcome"]["status"] == "ok" and last["paths"]
