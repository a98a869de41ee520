"""Progress bars: a bar with done/total, rate and ETA when the total is known,
a spinner with what is done and the rate when it is not."""

from __future__ import annotations

import io
import os
import re
import time

from rich.console import Console

from cas.cli.output import byte_progress

from .conftest import ESCAPES, stderr_on_a_pty

MiB = 1 << 20


def _rendered(total: int | None, files: int | None, later_total: int | None = None) -> str:
    """What the bar drew after five files of 1 MiB, control sequences removed."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140)
    with byte_progress("restore", total, True, files=files, console=console) as advance:
        if later_total is not None:
            advance.set_total(later_total, 10)
        for _ in range(5):
            advance(MiB)
            time.sleep(0.02)
        advance._progress.refresh()
        return ESCAPES.sub("", out.getvalue()).split("\r")[-1]


def test_a_known_total_shows_done_over_total_rate_and_eta():
    line = _rendered(10 * MiB, 10)
    assert "5/10 files" in line
    assert "5.0/10.0 MiB" in line
    assert re.search(r"[\d.]+ [kMG]?B/s", line)
    assert re.search(r"ETA \d+:\d\d:\d\d", line)
    assert "━" in line   # the bar


def test_an_unknown_total_shows_a_spinner_with_done_and_rate_and_no_eta():
    line = _rendered(None, None)
    assert "5 files" in line and "/" not in line.split("files")[0]
    assert "5.0 MiB" in line
    assert re.search(r"[\d.]+ [kMG]?B/s", line)
    assert "ETA" not in line and "━" not in line


def test_a_total_learnt_later_turns_the_spinner_into_a_bar():
    line = _rendered(None, None, later_total=10 * MiB)
    assert "5/10 files" in line and "ETA" in line


def test_no_terminal_no_bar():
    with byte_progress("restore", 10, False) as advance:
        assert advance is None


def test_restore_shows_its_total_from_the_tree(tmp_path, cas):
    tree = tmp_path / "tree"
    (tree / "big").mkdir(parents=True)
    for i in range(3):
        (tree / "big" / f"f{i}").write_bytes(os.urandom(MiB))
    (tree / "small").write_bytes(b"x" * 10)
    assert cas("init", cwd=tree).code == 0
    assert cas("snapshot", cwd=tree).code == 0
    whole = stderr_on_a_pty(["restore", "HEAD", "--to", str(tmp_path / "a")], tree)
    assert "/4 files" in whole and "ETA" in whole
    # Some paths: the total is theirs, read from the tree, not the snapshot's.
    some = stderr_on_a_pty(["restore", "HEAD", "big", "--to", str(tmp_path / "b")], tree)
    assert "/3 files" in some and "/3.0 MiB" in some


def test_verify_full_shows_a_total(tmp_path, cas):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(os.urandom(2 * MiB))
    assert cas("init", cwd=tree).code == 0
    assert cas("snapshot", cwd=tree).code == 0
    err = stderr_on_a_pty(["verify", "--full"], tree)
    assert "ETA" in err and re.search(r"/\d+\.\d MiB", err)
