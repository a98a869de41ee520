"""Which snapshot the working tree shows after a checkout, and status against it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cas.model.history import History
from cas.ops.snapshot import take_snapshot
from cas.storage.store import Store

from .conftest import cas_process, write


def _history_of_five(cas, root) -> list[str]:
    """Five snapshots of a tree, each adding a file and changing a.txt."""
    root.mkdir()
    assert cas("init", cwd=root).code == 0
    ids = []
    for i in range(5):
        write(root / "a.txt", f"version {i}\n".encode())
        write(root / f"file{i}.txt", f"file {i}\n".encode())
        r = cas("snapshot", cwd=root)
        assert r.code == 0, r.err
        ids.append(r.text.strip())
    return ids


def _status(cas, root) -> dict:
    r = cas("status", "--json", cwd=root)
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_status_after_a_checkout_names_the_snapshot_and_compares_against_it(tmp_path, cas):
    root = tmp_path / "tree"
    ids = _history_of_five(cas, root)
    assert cas("checkout", "HEAD~4", cwd=root).code == 0
    r = cas("status", cwd=root)
    assert r.code == 0
    assert r.text.splitlines() == [
        f"working tree at {ids[0][:12]} (branch main is at {ids[4][:12]}): nothing changed"]
    doc = _status(cas, root)
    assert (doc["worktree"], doc["branch_head"], doc["detached"], doc["changes"]) == \
        (ids[0], ids[4], True, [])
    write(root / "a.txt", b"edited after the checkout\n")
    doc = _status(cas, root)
    assert [(c["change"], c["path"]) for c in doc["changes"]] == [("modified", "a.txt")]


def test_a_new_snapshot_resets_the_record_without_being_told(tmp_path, cas):
    root = tmp_path / "tree"
    ids = _history_of_five(cas, root)
    assert cas("checkout", ids[1], cwd=root).code == 0
    assert _status(cas, root)["detached"] is True
    # As the watcher does: the library's snapshot call, nothing about the record.
    with Store.open(str(root / ".cas")) as store:
        made = take_snapshot(History(store), str(root), "main", allow_empty=True).snapshot
    doc = _status(cas, root)
    assert (doc["worktree"], doc["branch_head"], doc["detached"]) == \
        (made.oid.hex, made.oid.hex, False)
    assert cas("status", cwd=root).text.startswith(f"on branch main at {made.oid.short}")
    # From the CLI likewise, after another checkout.
    assert cas("checkout", ids[2], cwd=root).code == 0
    write(root / "new.txt", b"new\n")
    new = cas("snapshot", cwd=root).text.strip()
    assert _status(cas, root) == {**_status(cas, root), "worktree": new, "detached": False,
                                  "changes": []}


def test_a_path_limited_checkout_leaves_the_record_and_status_shows_the_path(tmp_path, cas):
    root = tmp_path / "tree"
    ids = _history_of_five(cas, root)
    assert cas("checkout", ids[0], cwd=root).code == 0
    assert cas("checkout", ids[4], "a.txt", cwd=root).code == 0
    doc = _status(cas, root)
    assert doc["worktree"] == ids[0]
    assert [(c["change"], c["path"]) for c in doc["changes"]] == [("modified", "a.txt")]
    # Back at the head, whole: not detached any more.
    assert cas("checkout", "--force", ids[4], cwd=root).code == 0
    doc = _status(cas, root)
    assert (doc["detached"], doc["changes"]) == (False, [])


def test_a_damaged_record_is_not_trusted(tmp_path, cas):
    root = tmp_path / "tree"
    ids = _history_of_five(cas, root)
    record = root / ".cas" / "WORKTREE"
    for damage in (b"not json", json.dumps({"snapshot": "00" * 32, "branch": "main",
                                            "branch_head": ids[4], "complete": True}).encode()):
        record.write_bytes(damage)
        doc = _status(cas, root)
        assert (doc["worktree"], doc["detached"], doc["changes"]) == (ids[4], False, [])
    record.unlink()
    os.symlink("/dev/zero", record)
    assert _status(cas, root)["worktree"] == ids[4]


# -- interrupted checkouts ---------------------------------------------------------

CRASH_AT = textwrap.dedent("""
    import os, signal, sys
    from cas.ops import checkout as co
    stage = sys.argv[1]
    real_write, real_restore = co.write_worktree_record, co.restore
    def write_record(history, record):
        if stage == "record" and record.complete:
            os.kill(os.getpid(), signal.SIGKILL)   # the data is written, the record not yet
        real_write(history, record)
    def restore(*args, **kwargs):
        if stage == "data":
            os.kill(os.getpid(), signal.SIGKILL)   # deletions done, no file written yet
        return real_restore(*args, **kwargs)
    co.write_worktree_record, co.restore = write_record, restore
    from cas.cli.main import run
    sys.exit(run(sys.argv[2:]))
""")


def _killed_checkout(root, stage: str, spec: str) -> None:
    p = subprocess.run([sys.executable, "-c", CRASH_AT, stage, "checkout", spec], cwd=root,
                       capture_output=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr


def test_a_checkout_killed_after_writing_the_tree_leaves_status_truthful(tmp_path, cas):
    root = tmp_path / "tree"
    ids = _history_of_five(cas, root)
    _killed_checkout(root, "record", ids[0])
    assert not (root / "file4.txt").exists()  # the tree is at ids[0] ...
    r = cas("status", cwd=root)
    # ... and status says so, with nothing changed against it.
    assert r.code == 0 and f"checkout of {ids[0][:12]} was interrupted" in r.text, r.text
    assert _status(cas, root)["changes"] == []
    assert cas("checkout", ids[0], cwd=root).code == 0
    assert cas("status", cwd=root).text.startswith(f"working tree at {ids[0][:12]}")


def test_a_checkout_killed_before_writing_says_where_it_was_going(tmp_path, cas):
    root = tmp_path / "tree"
    ids = _history_of_five(cas, root)
    _killed_checkout(root, "data", ids[3])
    doc = _status(cas, root)
    assert (doc["worktree"], doc["interrupted"]) == (ids[3], True)
    # Against where it was going, what is still to do: file4.txt was deleted
    # (deletions come first), a.txt not yet written.
    assert [(c["change"], c["path"]) for c in doc["changes"]] == [("modified", "a.txt")]
    assert cas("checkout", ids[3], cwd=root).code == 0
    doc = _status(cas, root)
    assert (doc["interrupted"], doc["changes"]) == (False, [])


def test_a_real_checkout_killed_mid_way_never_makes_status_fail(tmp_path, cas):
    """SIGKILL from outside, once the checkout has said where it is going."""
    root = tmp_path / "tree"
    root.mkdir()
    assert cas("init", cwd=root).code == 0
    for i in range(1500):
        write(root / f"d{i % 30}" / f"f{i}.txt", f"{i}\n".encode() * 20)
    first = cas("snapshot", cwd=root).text.strip()
    for i in range(1500):
        write(root / f"d{i % 30}" / f"f{i}.txt", f"{i} changed\n".encode())
    assert cas("snapshot", cwd=root).code == 0
    record = root / ".cas" / "WORKTREE"
    p = subprocess.Popen([sys.executable, "-m", "cas.cli", "checkout", first], cwd=root,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not record.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = cas_process("status", "--json", cwd=root)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["worktree"] == first
    if doc["interrupted"]:
        assert "interrupted" in cas("status", cwd=root).text
    else:
        assert doc["changes"] == []
    assert cas("checkout", first, cwd=root).code == 0
    doc = _status(cas, root)
    assert (doc["worktree"], doc["interrupted"], doc["changes"]) == (first, False, [])


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0,
                    reason="needs root and setpriv to drop the file-permission override")
def test_a_store_that_cannot_be_written_still_checks_out_and_says_so(tmp_path, cas):
    root = tmp_path / "tree"
    ids = _history_of_five(cas, root)
    store = root / ".cas"
    store.chmod(0o555)
    try:
        r = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                            sys.executable, "-m", "cas.cli", "checkout", ids[0]],
                           cwd=root, capture_output=True, timeout=120)
    finally:
        store.chmod(0o700)
    assert r.returncode == 1, r.stderr
    assert b"cannot record which snapshot the working tree shows" in r.stderr
    assert b"Traceback" not in r.stderr
    assert not (root / "file4.txt").exists() and not (store / "WORKTREE").exists()
    # Status compares with the branch head, as the message said.
    assert _status(cas, root)["worktree"] == ids[4]
