"""cas diff -p and --stat: git-style patches read from the store and the
disk, binary files named, large files noted, and the library call behind them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from cas.errors import DiffContentUnreadable
from cas.model.history import History
from cas.model.tree import FILE, TreeEntry
from cas.objectid import ObjectId
from cas.ops.diff import MODIFIED, Change, compare, disk_reader, file_diff
from cas.storage.store import Store

from .conftest import cas_process, write

OLD = {"notes/todo.md": b"one\ntwo\nthree\n", "gone.txt": b"bye\n", "img.bin": b"\x89PNG\0\x01",
       "tail.txt": b"no newline"}
NEW = {"notes/todo.md": b"one\n2\nthree\nfour\n", "new.txt": b"hello\n", "img.bin": b"\x89PNG\0\x02",
       "tail.txt": b"no newline, still"}


@pytest.fixture
def root(tmp_path, cas):
    for name, data in OLD.items():
        write(tmp_path / name, data)
    assert cas("init").code == 0
    assert cas("snapshot", "-m", "old").code == 0
    (tmp_path / "gone.txt").unlink()
    for name, data in NEW.items():
        write(tmp_path / name, data)
    return tmp_path


def test_patch_between_snapshots_applies_with_git_apply(root, cas, tmp_path_factory):
    assert cas("snapshot", "-m", "new").code == 0
    r = cas_process("diff", "-p", "HEAD~1", "HEAD", cwd=root)
    assert r.returncode == 0, r.stderr
    patch = r.stdout
    assert b"Binary files a/img.bin and b/img.bin differ" in patch
    assert b"\\ No newline at end of file" in patch
    assert b"--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n" in patch
    # The text part of the patch turns the old files into the new ones.
    work = tmp_path_factory.mktemp("apply")
    for name, data in OLD.items():
        write(work / name, data)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    text_only = b"".join(part for part in (b"diff --git" + p for p in patch.split(b"diff --git")[1:])
                         if b"Binary files" not in part)
    subprocess.run(["git", "apply", "-"], input=text_only, cwd=work, check=True)
    for name in ("notes/todo.md", "new.txt", "tail.txt"):
        assert (work / name).read_bytes() == NEW[name]
    assert not (work / "gone.txt").exists()


def test_patch_against_the_working_tree_reads_the_disk(root, cas):
    r = cas("diff", "-p")
    assert r.code == 0, r.err
    assert "-two\n+2\n three\n+four\n" in r.text
    assert "deleted file mode 100644\n--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye" in r.text


def test_stat_counts_lines_per_file_and_sizes_for_binary(root, cas):
    r = cas("diff", "--stat")
    assert r.code == 0, r.err
    lines = r.text.splitlines()
    rows = {line.split("|")[0].strip(): line.split("|")[1].strip() for line in lines[:-1]}
    assert rows == {"gone.txt": "1 -", "img.bin": "Bin 6 -> 6 bytes", "new.txt": "1 +",
                    "notes/todo.md": "3 ++-", "tail.txt": "2 +-"}
    assert lines[-1] == " 5 files changed, 4 insertions(+), 3 deletions(-)"
    doc = json.loads(cas("diff", "--stat", "--json").out)
    assert doc["summary"] == {"files": 5, "insertions": 4, "deletions": 3}
    todo = next(f for f in doc["files"] if f["path"] == "notes/todo.md")
    assert (todo["added"], todo["removed"], todo["binary"]) == (2, 1, False)


def test_plain_diff_output_is_unchanged_by_the_new_flags(root, cas):
    r = cas("diff")
    assert r.text.splitlines()[0] == "D  gone.txt  (4)"
    assert isinstance(json.loads(cas("diff", "--json").out), list)


def test_a_file_over_the_cap_is_noted_not_compared(root, cas):
    write(root / "big.txt", b"line\n" * 300_000)   # 1.4 MiB of text
    assert cas("snapshot", "-m", "big").code == 0
    write(root / "big.txt", b"line\n" * 300_001)
    r = cas("diff", "-p", "--", "big.txt")
    assert r.code == 0, r.err
    assert "File big.txt is larger than 1.0 MiB: its lines are not compared" in r.text
    assert "+line" not in r.text


def test_library_compare_is_one_call(root):
    with Store.open(str(root / ".cas")) as store:
        history = History(store)
        head = history.resolve("HEAD")
        report = compare(history, head, None, [b"notes"], contents=True)
        assert [f.change.path for f in report.files] == [b"notes/todo.md"]
        assert b"+four" in report.files[0].lines()
        small = compare(history, head, None, [b"notes"], contents=True, limit=4)
        assert small.files[0].too_large and not small.files[0].patch


def test_the_working_tree_side_is_not_read_through_a_link(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    write(outside / "todo.md", b"secret\n")
    shutil.rmtree(root / "notes")
    os.symlink(outside, root / "notes")
    entry = TreeEntry(name=b"todo.md", kind=FILE, mode=0o644, mtime_ns=0, size=7,
                      oid=ObjectId.parse("0" * 64))
    read = disk_reader(str(root))
    with pytest.raises(DiffContentUnreadable):
        file_diff(Change(MODIFIED, b"notes/todo.md", entry, entry), read, read)


def test_control_characters_in_content_are_escaped_only_on_a_terminal(root, cas):
    write(root / "esc.txt", b"\x1b]0;owned\x07\tx\n")
    r = cas("diff", "-p", "--", "esc.txt")
    assert b"+\x1b]0;owned\x07\tx" in r.out   # through a pipe, the bytes as they are (for patch)
    main_fd, terminal = os.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "cas.cli", "diff", "-p", "--", "esc.txt"], cwd=root,
                              stdout=terminal, stderr=subprocess.PIPE, timeout=60)
        os.close(terminal)
        shown = b""
        while True:
            try:
                block = os.read(main_fd, 65536)
            except OSError:
                break
            if not block:
                break
            shown += block
    finally:
        os.close(main_fd)
    assert done.returncode == 0, done.stderr
    assert b"\x1b" not in shown and b"+\\x1b]0;owned\\x07\tx" in shown
