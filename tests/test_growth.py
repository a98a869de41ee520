"""Growth you can look at: cas stats --history, its terminal chart, cas report --html."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cas.model.history import History
from cas.model.snapshot import Snapshot
from cas.model.tree import Tree
from cas.objectid import ObjectId
from cas.ops.growth import growth_rows, largest_growers
from cas.storage.store import Store

from .conftest import cas_process, write

# Tokyo has no daylight saving: a POSIX TZ string needs no tz database.
TOKYO = {"TZ": "JST-9"}


def ns(iso_utc: str) -> int:
    return int(datetime.fromisoformat(iso_utc + "+00:00").timestamp()) * 10**9


def record(history: History, branch: str, iso_utc: str, size: int, new: int, stored: int) -> Snapshot:
    """A snapshot record with hand-chosen stats (its tree is empty)."""
    with history.store.writer() as w:
        tree = w.put_bytes(Tree.build([]).to_json())
        w.flush()
        parent = history.branch_head(branch)
        snap = Snapshot(tree=tree, parents=(parent.oid,) if parent else (), time_ns=ns(iso_utc),
                        message="", branch=branch, host="h", user="u", source="/src/" + branch,
                        stats={"files": 1, "bytes": size, "new_objects": 1, "new_bytes": new,
                               "stored_bytes": stored})
        return history.record(snap, w)


@pytest.fixture
def hand_built(tmp_path) -> Path:
    """Five snapshots on two branches with known sizes. In Tokyo (UTC+9)
    the third, at 20:00 UTC on Jan 1, falls on Jan 2."""
    store = tmp_path / "store"
    with Store.init(str(store)) as s:
        h = History(s)
        record(h, "main", "2025-01-01T01:00:00", 1000, 1000, 600)
        record(h, "main", "2025-01-01T10:00:00", 1500, 500, 300)
        record(h, "main", "2025-01-01T20:00:00", 1200, 0, 0)
        record(h, "other", "2025-01-02T00:00:00", 4000, 4000, 1000)
        record(h, "main", "2025-01-05T00:00:00", 2000, 800, 400)
    return store


def cas(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return cas_process(*args, cwd=cwd, env={**TOKYO, **(env or {})})


def one_line_error(r: subprocess.CompletedProcess, code: int = 2) -> str:
    err = r.stderr.decode()
    assert r.returncode == code, (r.returncode, err)
    assert err.startswith("cas: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def history_json(store: Path, *args: str) -> dict:
    r = cas("--store", str(store), "stats", "--history", "--json", *args, cwd=store.parent)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


# -- the numbers ---------------------------------------------------------------

def test_rows_per_local_day_against_a_hand_computed_table(hand_built):
    doc = history_json(hand_built)
    assert doc["by"] == "day" and doc["branch"] is None
    got = [(r["day"], r["snapshots"], r["snapshots_total"], r["logical_bytes"], r["new_bytes"],
            r["stored_bytes"], r["store_bytes"], r["dedup_ratio"]) for r in doc["rows"]]
    # logical: main's newest plus other's newest at the day's end;
    # dedup: every snapshot's bytes up to the day over the stored bytes.
    assert got == [
        ("2025-01-01", 2, 2, 1500, 1500, 900, 900, round(2500 / 900, 4)),
        ("2025-01-02", 2, 4, 1200 + 4000, 4000, 1000, 1900, round(7700 / 1900, 4)),
        ("2025-01-05", 1, 5, 2000 + 4000, 800, 400, 2300, round(9700 / 2300, 4)),
    ]


def test_one_branch_and_the_newest_rows(hand_built):
    doc = history_json(hand_built, "--branch", "main")
    got = [(r["day"], r["snapshots"], r["snapshots_total"], r["logical_bytes"], r["store_bytes"],
            r["dedup_ratio"]) for r in doc["rows"]]
    assert got == [("2025-01-01", 2, 2, 1500, 900, round(2500 / 900, 4)),
                   ("2025-01-02", 1, 3, 1200, 900, round(3700 / 900, 4)),
                   ("2025-01-05", 1, 4, 2000, 1300, round(5700 / 1300, 4))]
    last = history_json(hand_built, "--branch", "main", "-n", "1")["rows"]
    assert [r["day"] for r in last] == ["2025-01-05"]


def test_per_snapshot_rows_and_the_json_shape(hand_built):
    doc = history_json(hand_built, "--by", "snapshot")
    rows = doc["rows"]
    assert [r["branch"] for r in rows] == ["main", "main", "main", "other", "main"]
    assert [r["stored_bytes"] for r in rows] == [600, 300, 0, 1000, 400]
    assert [r["store_bytes"] for r in rows] == [600, 900, 900, 1900, 2300]
    assert [r["snapshot_bytes"] for r in rows] == [1000, 2500, 3700, 7700, 9700]
    assert rows[0]["time"] == "2025-01-01T01:00:00.000000000Z"
    assert set(rows[0]) == {"snapshot", "branch", "time", "snapshots", "snapshots_total",
                            "logical_bytes", "new_bytes", "stored_bytes", "store_bytes",
                            "snapshot_bytes", "dedup_ratio"}
    assert all(len(r["snapshot"]) == 64 for r in rows)
    day = history_json(hand_built)["rows"][0]
    assert set(day) == {"day", "time", "snapshots", "snapshots_total", "logical_bytes",
                        "new_bytes", "stored_bytes", "store_bytes", "snapshot_bytes",
                        "dedup_ratio"}


def test_the_table_is_printed_without_a_chart_when_stdout_is_not_a_terminal(hand_built):
    r = cas("--store", str(hand_built), "stats", "--history", cwd=hand_built.parent)
    lines = r.stdout.decode().splitlines()
    assert r.returncode == 0 and lines[0].split() == ["DAY", "SNAPS", "KEPT", "LOGICAL", "NEW",
                                                      "STORED", "STORE", "DEDUP"]
    assert lines[1].split()[:3] == ["2025-01-01", "2", "2"] and len(lines) == 4
    assert "store size" not in r.stdout.decode()


def run_on_terminal(*args: str, cwd: Path) -> tuple[int, str]:
    """The CLI with stdout on a pseudo-terminal 100 columns wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 100, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "cas.cli", *args], cwd=cwd, stdout=slave,
                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                         env={**os.environ, **TOKYO})
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:   # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(timeout=60), out.decode("utf-8", "replace")


def test_a_chart_is_drawn_on_a_terminal_unless_asked_not_to(hand_built):
    code, out = run_on_terminal("--store", str(hand_built), "stats", "--history", cwd=hand_built.parent)
    assert code == 0 and "store size (STORE)" in out and "stored per day (STORED)" in out
    assert "┤" in out   # plotext's axis ticks
    code, out = run_on_terminal("--store", str(hand_built), "stats", "--history", "--no-chart",
                                cwd=hand_built.parent)
    assert code == 0 and "2025-01-05" in out and "store size" not in out
    code, out = run_on_terminal("--store", str(hand_built), "stats", "--history", "--json",
                                cwd=hand_built.parent)
    assert code == 0 and json.loads(out)["rows"][-1]["snapshots_total"] == 5


def test_one_pass_over_100000_records_is_fast():
    tree = ObjectId.parse("ab" * 32)
    snaps = [Snapshot(tree=tree, parents=(), time_ns=1_700_000_000_000_000_000 + i * 30 * 10**9,
                      message="", branch=f"b{i % 3}", host="h", user="u", source="/s",
                      stats={"bytes": 1000 + i, "new_bytes": 10, "stored_bytes": 5},
                      oid=ObjectId.parse(f"{i:064x}")) for i in range(100_000)]
    seconds = []
    for _ in range(2):   # the better of two: a busy machine is not what is measured
        start = time.perf_counter()
        rows = growth_rows(snaps)
        seconds.append(time.perf_counter() - start)
    assert rows[-1].snapshots_total == 100_000 and rows[-1].store_bytes == 500_000
    assert sum(r.snapshots for r in rows) == 100_000
    assert min(seconds) < 1.0, seconds


def test_the_store_size_starts_from_what_the_oldest_kept_snapshot_reaches(tmp_path):
    """Files stored by 'cas add', or by snapshots since forgotten, are part
    of the store the oldest kept snapshot stands on."""
    t = tmp_path / "t"
    for name in ("a.bin", "b.bin", "c.bin"):
        write(t / name, os.urandom(50_000))
    assert cas("init", str(t), cwd=tmp_path).returncode == 0
    assert cas("add", ".", cwd=t).returncode == 0
    snapshot_at(t, "2025-02-01T12:00:00")
    write(t / "c.bin", os.urandom(50_000))
    snapshot_at(t, "2025-02-02T12:00:00")
    rows = history_json(t / ".cas", "--by", "snapshot")["rows"]
    assert rows[0]["stored_bytes"] < 10_000 <= 150_000 <= rows[0]["store_bytes"] < 152_000
    assert 200_000 <= rows[1]["store_bytes"] < 203_000
    with Store.open(str(t / ".cas")) as s:
        oldest = History(s).snapshots()[0].oid.hex
    r = cas("forget", oldest, cwd=t)
    assert r.returncode == 0, r.stderr.decode()
    rows = history_json(t / ".cas", "--by", "snapshot")["rows"]
    assert len(rows) == 1 and 150_000 <= rows[0]["store_bytes"] < 152_000


# -- errors --------------------------------------------------------------------

def test_an_empty_store_and_an_unknown_branch_are_one_line_errors(tmp_path):
    assert cas("init", str(tmp_path / "t"), cwd=tmp_path).returncode == 0
    t = tmp_path / "t"
    err = one_line_error(cas("stats", "--history", cwd=t))
    assert "no recorded snapshots" in err
    one_line_error(cas("report", "--html", str(tmp_path / "r.html"), cwd=t))
    assert not (tmp_path / "r.html").exists()
    write(t / "f.txt", b"x")
    assert cas("snapshot", cwd=t).returncode == 0
    err = one_line_error(cas("stats", "--history", "--branch", "nope", cwd=t))
    assert "no branch 'nope'" in err
    one_line_error(cas("report", "--html", str(tmp_path / "r.html"), "--branch", "nope", cwd=t))
    for misuse in (["--branch", "main"], ["HEAD", "--history"]):   # click's usage errors
        r = cas("stats", *misuse, cwd=t)
        assert r.returncode == 2 and b"Traceback" not in r.stderr


def test_the_report_is_never_written_into_the_store_nor_through_a_link(hand_built, tmp_path):
    inside = hand_built / "objects" / "report.html"
    one_line_error(cas("--store", str(hand_built), "report", "--html", str(inside), cwd=tmp_path))
    assert not inside.exists()
    one_line_error(cas("--store", str(hand_built), "report", "--html", str(tmp_path), cwd=tmp_path))
    victim = write(tmp_path / "victim.txt", b"keep me")
    link = tmp_path / "report.html"
    link.symlink_to(victim)
    r = cas("--store", str(hand_built), "report", "--html", str(link), cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert victim.read_bytes() == b"keep me"
    assert not link.is_symlink() and link.read_text().startswith("<!DOCTYPE html>")
    assert link.stat().st_mode & 0o777 == 0o600   # it lists the store's file names


# -- the report ----------------------------------------------------------------

class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def assert_self_contained(page: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(page)
    names = {t for t, _ in parser.tags}
    assert not names & {"script", "img", "link", "iframe", "object", "embed", "image", "use"}, names
    for tag, attrs in parser.tags:
        for key in ("src", "href", "xlink:href", "action", "data"):
            assert key not in attrs, (tag, attrs)
    assert "url(" not in page and "@import" not in page
    assert "default-src 'none'" in page   # and the browser is told to fetch nothing
    return parser.tags


def snapshot_at(t: Path, iso: str) -> None:
    r = cas("snapshot", "--time", iso, cwd=t)
    assert r.returncode == 0, r.stderr.decode()


@pytest.fixture
def grown(tmp_path) -> Path:
    """Three snapshots of a real tree: an unchanged file, a file replaced
    twice, a file that goes back to its first version, files with hostile
    names added in the second."""
    t = tmp_path / "t"
    first, second = os.urandom(80_000), os.urandom(80_000)
    write(t / "keep.txt", b"same\n" * 1000)
    write(t / "data" / "big.bin", os.urandom(100_000))
    write(t / "flip.bin", first)
    assert cas("init", str(t), cwd=tmp_path).returncode == 0
    snapshot_at(t, "2025-02-01T12:00:00")
    write(t / "data" / "big.bin", os.urandom(150_000))
    write(t / "flip.bin", second)
    write(t / "<img src=x onerror=alert(1)>", os.urandom(60_000))
    write(t / "<script>alert(1)<" / "script>", os.urandom(60_000))
    write(Path(os.fsdecode(bytes(t / "x")) + "\udcff\n\"'&.bin"), os.urandom(60_000))
    snapshot_at(t, "2025-02-02T12:00:00")
    write(t / "data" / "big.bin", os.urandom(120_000))
    write(t / "flip.bin", first)
    snapshot_at(t, "2025-02-03T12:00:00")
    return t


def test_largest_growers_count_what_each_path_added(grown):
    with Store.open(str(grown / ".cas")) as s:
        h = History(s)
        g = largest_growers(h, h.snapshots())
    added = {p: (n, c) for _, p, n, c in g.files}
    assert g.pairs_compared == g.pairs_total == 2
    n, changes = added[b"data/big.bin"]
    assert changes == 2 and 270_000 <= n <= 272_000   # two new random versions; the first is the baseline
    n, changes = added[b"flip.bin"]
    assert changes == 2 and 80_000 <= n <= 81_000     # going back to the first version adds nothing
    assert b"keep.txt" not in added
    assert g.files[0][1] == b"data/big.bin"
    dirs = {d: n for _, d, n in g.dirs}
    assert dirs[b"data"] == added[b"data/big.bin"][0] and dirs[b""] == sum(n for n, _ in added.values())


def test_the_growers_work_is_capped_and_the_cap_said(grown):
    with Store.open(str(grown / ".cas")) as s:
        h = History(s)
        g = largest_growers(h, h.snapshots(), budget=1)
    assert g.pairs_compared == 1 and g.pairs_total == 2


def test_the_report_is_self_contained_and_escapes_every_name(grown, tmp_path):
    model = tmp_path / "model"
    write(model / "config.json", json.dumps({"model_type": "<b onmouseover=alert(2)>evil</b>"}).encode())
    head = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    write(model / "model.safetensors", struct.pack("<Q", len(head)) + head + b"\0" * 16)
    r = cas("model", "import", str(model), "--name", "m1", cwd=grown)
    assert r.returncode == 0, r.stderr.decode()
    out = tmp_path / "report.html"
    r = cas("report", "--html", str(out), cwd=grown)
    assert r.returncode == 0, r.stderr.decode()
    page = out.read_text()
    tags = assert_self_contained(page)
    assert sum(1 for t, _ in tags if t == "svg") == 3       # growth, per day, dedup
    assert "<img" not in page and "<b onmouseover" not in page and "<script>alert" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "x\\xff\\x0a&quot;&#x27;&amp;.bin" in page
    assert "&lt;b onmouseover=alert(2)&gt;evil&lt;/b&gt;" in page
    assert "m1@1" in page and "data/big.bin" in page


def test_a_report_of_one_branch_leaves_models_out(grown, tmp_path):
    out = tmp_path / "main.html"
    r = cas("report", "--html", str(out), "--branch", "main", cwd=grown)
    assert r.returncode == 0, r.stderr.decode()
    page = out.read_text()
    assert_self_contained(page)
    assert "branch main" in page and "Models by size" not in page and "2025-02-03" in page


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_under_the_report_is_one_line_and_leaves_nothing(hand_built, tmp_path,
                                                                     mount_tmpfs):
    disk = mount_tmpfs("disk", "64k")
    write(disk / "filler", b"\0" * 60_000)
    old = write(disk / "report.html", b"the previous report")
    err = one_line_error(cas("--store", str(hand_built), "report", "--html", str(old),
                             cwd=tmp_path), code=1)
    assert "report.html" in err and ".tmp" not in err
    assert old.read_bytes() == b"the previous report"
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "report.html"]
