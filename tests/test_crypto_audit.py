"""The audit trail of an encrypted store: records sealed and MAC'd, read
back by audit log, checked by audit verify (a flipped byte in a sealed
field or in a MAC, a dropped record, a record re-chained without the keys,
a plain record slipped in); nothing the commands named is in the log's bytes."""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cas.cli.audit_trail import AuditNotes
from cas.errors import StoreIsEncrypted
from cas.storage.audit import (
    AuditLog,
    canonical_line,
    line_hash,
    new_record,
    record_mac,
    seal_fields,
)
from cas.storage.config import ENCRYPTION, StoreConfig
from cas.storage.store import Store

CAS = [sys.executable, "-m", "cas.cli"]
NAME = "private-diary-entry.txt"
TAG = "tag-marker-for-grep"
MARK = b"CONTENT-MARKER-7f3a"


def cas(cwd, *args, check=True):
    env = {**os.environ, "CAS_PASSWORD": "pw"}
    proc = subprocess.run([*CAS, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def log_path(root: Path) -> Path:
    return root / ".cas" / "audit" / "log"


@pytest.fixture
def sealed(tmp_path):
    """An encrypted store with four records: snapshot, cat, tag, cat."""
    root = tmp_path / "data"
    root.mkdir()
    (root / NAME).write_bytes(MARK + b"\n")
    cas(root, "init", "--encrypt")
    cas(root, "snapshot", "-m", "first")
    cas(root, "cat", f"HEAD:{NAME}")
    cas(root, "tag", TAG)
    cas(root, "cat", f"HEAD:{NAME}")
    return root


def records(root):
    return json.loads(cas(root, "audit", "log", "--json").stdout)


def test_round_trip_unseals_every_field(sealed):
    got = records(sealed)
    assert [r["command"][1:] for r in got] == [["snapshot", "-m", "first"], ["cat", f"HEAD:{NAME}"],
                                                ["tag", TAG], ["cat", f"HEAD:{NAME}"]]
    assert [r["seq"] for r in got] == [1, 2, 3, 4]
    assert got[1]["refs"] == [f"HEAD:{NAME}"] and TAG in got[2]["refs"]
    assert len(got[0]["snapshots_created"]) == 1
    assert got[0]["outcome"] == {"status": "ok", "exit_code": 0, "message": None}
    assert all(isinstance(r["mac"], str) and len(r["mac"]) == 64 and r["v"] == 2 for r in got)
    assert all(r["user"] and r["host"] and r["time_ns"] for r in got)
    assert cas(sealed, "audit", "verify").stdout.strip() == "4 records, chain intact"
    assert json.loads(cas(sealed, "audit", "log", "--since", "2100-01-01", "--json").stdout) == []
    assert "cas tag " + TAG in cas(sealed, "audit", "log", "--since", "1 hour ago").stdout


def test_the_log_shows_nothing_the_commands_named(sealed):
    snapshot_id = records(sealed)[0]["snapshots_created"][0]
    data = log_path(sealed).read_bytes()
    host, user = os.uname().nodename, records(sealed)[0]["user"]
    for word in (NAME.encode(), TAG.encode(), b"snapshot", b"first", MARK,
                 snapshot_id.encode(), bytes.fromhex(snapshot_id), b"outcome", b"command",
                 b"time_ns", host.encode() if len(host) >= 6 else b"hostname", b'"' + user.encode() + b'"'):
        assert word not in data, word
    for line in data.splitlines():
        record = json.loads(line)
        assert set(record) == {"v", "seq", "prev", "mac", "sealed"}
        # Padded: a line's length tells the command's to 128 bytes at best.
        assert (len(base64.b64decode(record["sealed"])) - 28) % 128 == 0


def _edit(root: Path, number: int, edit) -> subprocess.CompletedProcess:
    lines = log_path(root).read_bytes().splitlines(keepends=True)
    record = json.loads(lines[number - 1])
    lines[number - 1] = canonical_line(edit(record))
    log_path(root).write_bytes(b"".join(lines))
    return cas(root, "audit", "verify", check=False)


def _flip_char(text: str, at: int, alphabet: str) -> str:
    c = text[at]
    return text[:at] + alphabet[(alphabet.index(c) + 1) % len(alphabet)] + text[at + 1:]


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def test_a_flipped_byte_in_a_sealed_field_is_named(sealed):
    proc = _edit(sealed, 2, lambda r: {**r, "sealed": _flip_char(r["sealed"], 40, B64)})
    assert proc.returncode == 1
    assert "record 2: its MAC does not match" in proc.stdout, proc.stdout


def test_a_flipped_mac_is_named(sealed):
    proc = _edit(sealed, 3, lambda r: {**r, "mac": _flip_char(r["mac"], 0, "0123456789abcdef")})
    assert proc.returncode == 1 and "record 3: its MAC does not match" in proc.stdout


def test_a_dropped_record_is_named(sealed):
    lines = log_path(sealed).read_bytes().splitlines(keepends=True)
    log_path(sealed).write_bytes(b"".join(lines[:1] + lines[2:]))
    proc = cas(sealed, "audit", "verify", check=False)
    assert proc.returncode == 1 and "record 2: missing" in proc.stdout
    # audit log still shows what authenticates
    assert [r["seq"] for r in records(sealed)] == [1, 3, 4]


def test_a_record_rechained_without_the_keys_is_named(sealed):
    """Dropping record 2 and renumbering the rest keeps the hash chain whole;
    only the MAC, which needs the keys, shows it."""
    lines = log_path(sealed).read_bytes().splitlines(keepends=True)
    kept, prev = [lines[0]], line_hash(lines[0])
    for seq, line in enumerate(lines[2:], 2):
        record = {**json.loads(line), "seq": seq, "prev": prev}
        kept.append(canonical_line(record))
        prev = line_hash(kept[-1])
    log_path(sealed).write_bytes(b"".join(kept))
    proc = cas(sealed, "audit", "verify", check=False)
    assert proc.returncode == 1 and "record 2: its MAC does not match" in proc.stdout


def test_a_plain_record_in_an_encrypted_store_is_named(sealed):
    lines = log_path(sealed).read_bytes().splitlines(keepends=True)
    fake = {**new_record(["cas", "cat", "x"], refs=[], paths=[], created=[], removed=[],
                         exit_code=0, message=None),
            "v": 1, "seq": 5, "prev": line_hash(lines[-1]), "mac": None}
    log_path(sealed).write_bytes(b"".join(lines) + canonical_line(fake))
    proc = cas(sealed, "audit", "verify", check=False)
    assert proc.returncode == 1 and "record 5: not a sealed record" in proc.stdout
    assert len(records(sealed)) == 4


def test_a_moved_sealed_field_does_not_open(sealed):
    """Record 3's sealed fields in record 2's place, with a MAC made by the
    key holder: the fields are bound to their record number."""
    with Store.open(str(sealed / ".cas"), password=b"pw", with_index=False) as store:
        sealer = store.sealer
    lines = log_path(sealed).read_bytes().splitlines(keepends=True)
    third = json.loads(lines[2])

    def moved(r):
        out = {k: v for k, v in r.items() if k != "mac"}
        out["sealed"] = third["sealed"]
        return {**out, "mac": record_mac(sealer, out)}
    proc = _edit(sealed, 2, moved)
    assert proc.returncode == 1 and "record 2: its sealed fields do not open" in proc.stdout


def _encrypted_store(tmp_path) -> Store:
    path = str(tmp_path / "store")
    Store.init(path, StoreConfig(encryption=dict(ENCRYPTION)), password=b"pw").close()
    return Store.open(path, password=b"pw", with_index=False)


def test_appending_a_sealed_record_takes_a_few_milliseconds(tmp_path):
    """An append is an fsync (milliseconds, more on a loaded disk); sealing
    and the MAC, the part an encrypted store adds, take tens of microseconds."""
    with _encrypted_store(tmp_path) as store:
        log = AuditLog.of(store)
        took, sealing = [], []
        for seq in range(1, 101):
            record = new_record(["cas", "cat", "HEAD:some/path/in/the/tree.txt"],
                                refs=["HEAD:some/path/in/the/tree.txt"], paths=[], created=[],
                                removed=[], exit_code=0, message=None)
            start = time.perf_counter()
            log.append(record)
            took.append(time.perf_counter() - start)
            start = time.perf_counter()
            record_mac(store.sealer, {"v": 2, "seq": seq, "prev": "0" * 64,
                                      "sealed": seal_fields(store.sealer, seq, record)})
            sealing.append(time.perf_counter() - start)
        append, seal = statistics.median(took), statistics.median(sealing)
        print(f"median of 100: sealed append {append * 1e3:.3f} ms, of which sealing and MAC "
              f"{seal * 1e3:.3f} ms")
        assert seal < 0.001 and append < 0.02
        report = log.verify()
        assert report.records == 100 and report.problem is None


def test_a_log_without_the_store_keys_is_not_written_in_the_clear(tmp_path):
    with _encrypted_store(tmp_path) as store:
        path = store.path
    record = new_record(["cas.mlx.load_weights", "m"], refs=["m"], paths=[NAME], created=[],
                        removed=[], exit_code=0, message=None)
    with pytest.raises(StoreIsEncrypted):
        AuditLog(path).append(record)
    assert not os.path.exists(os.path.join(path, "audit", "log"))


@pytest.mark.parametrize("command, recorded", [
    (["purge"], True), (["copy"], True), (["key", "add"], True), (["key", "passwd"], True),
    (["key", "remove"], True), (["key", "list"], False), (["diff"], False), (["status"], False),
])
def test_new_commands_are_recorded_unless_they_only_list(command, recorded):
    notes = AuditNotes([])
    notes.command, notes.params = command, {}
    assert notes.recorded() is recorded


def test_diff_with_a_patch_reads_content_and_is_recorded():
    notes = AuditNotes([])
    notes.command, notes.params = ["diff"], {"patch": True, "with_stat": False}
    assert notes.recorded()


def three_snapshots_and_a_keep_last_policy(tmp_path) -> tuple:
    """A tree with three snapshots, a policy keeping the last; returns
    (tree, the ids of the two the policy will forget)."""
    root = tmp_path / "data"
    root.mkdir()
    cas(root, "init")
    for i in range(3):
        (root / "a.txt").write_text(f"v{i}\n")
        cas(root, "snapshot", "-m", f"s{i}")
    created = [r["snapshots_created"][0] for r in records(root)]
    cas(root, "policy", "set", "--keep-last", "1")
    return root, created[:2]


def test_maintain_lists_the_snapshots_its_policies_forgot(tmp_path):
    root, doomed = three_snapshots_and_a_keep_last_policy(tmp_path)
    cas(root, "maintain")
    last = records(root)[-1]
    assert last["command"][1:] == ["maintain"]
    assert sorted(last["snapshots_removed"]) == sorted(doomed)


def test_a_scheduled_maintenance_is_recorded_with_what_it_forgot(tmp_path):
    from cas.ops.maintain import run_maintenance
    root, doomed = three_snapshots_and_a_keep_last_policy(tmp_path)
    run_maintenance(str(root / ".cas"), audit_command=["cas.ops.maintain.run_maintenance", "x"])
    last = records(root)[-1]
    assert last["command"] == ["cas.ops.maintain.run_maintenance", "x"]
    assert sorted(last["snapshots_removed"]) == sorted(doomed)
    assert cas(root, "audit", "verify").returncode == 0
