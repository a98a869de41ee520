"""cas log as git users read it: decorations, --stat, --name-status, and
the library calls behind them (History.log, History.at)."""

from __future__ import annotations

import json
import time

import pytest

from cas.errors import NoSnapshotAt
from cas.model.history import History, local_time
from cas.model.refs import Refs
from cas.storage.store import Store

from .conftest import cas_process, write


@pytest.fixture
def root(tmp_path, cas):
    """Four snapshots of main: a.md added, modified, deleted; c.md added.
    The second is tagged v1; branch 'side' is at the first."""
    write(tmp_path / "a.md", b"a\n")
    write(tmp_path / "b.md", b"b\n")
    assert cas("init").code == 0
    for message, change in (("one", None), ("two", ("a.md", b"a2\n")), ("three", ("a.md", None)),
                            ("four", ("c.md", b"c\n"))):
        if change and change[1] is None:
            (tmp_path / change[0]).unlink()
        elif change:
            write(tmp_path / change[0], change[1])
        assert cas("snapshot", "-m", message).code == 0
    assert cas("tag", "v1", "HEAD~2").code == 0
    assert cas("branch", "side", "HEAD~3").code == 0
    return tmp_path


def _json_log(cas, *args):
    r = cas("log", "--json", *args)
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_log_shows_branch_tag_and_head_names_beside_each_id(root, cas):
    lines = cas("log").text.splitlines()
    assert "(HEAD -> main) four" in lines[0]
    assert "(tag: v1) two" in lines[2]
    assert "(side) one" in lines[3]
    assert "(" not in lines[1]
    oneline = cas("log", "--oneline").text.splitlines()
    assert oneline[0].endswith(" (HEAD -> main) four")
    docs = _json_log(cas)
    assert [d["refs"] for d in docs] == [["HEAD -> main"], [], ["tag: v1"], ["side"]]


def test_log_stat_counts_added_modified_deleted_against_the_snapshot_before(root, cas):
    docs = _json_log(cas, "--stat")
    counts = [(d["message"], d["changes"]["added"], d["changes"]["modified"], d["changes"]["deleted"])
              for d in docs]
    assert counts == [("four", 1, 0, 0), ("three", 0, 0, 1), ("two", 0, 1, 0), ("one", 2, 0, 0)]
    text = cas("log", "--stat", "--oneline").text.splitlines()
    assert text[3].strip() == "0 added, 0 modified, 1 deleted" and text[3].startswith("    ")
    assert "changes" not in _json_log(cas)[0]   # not computed unless asked


def test_name_status_on_a_path_shows_the_snapshot_that_deleted_it(root, cas):
    r = cas("log", "--name-status", "--", "a.md")
    assert r.code == 0, r.err
    lines = r.text.splitlines()
    assert "three" in lines[0] and lines[1].strip() == "D  a.md"
    assert "two" in lines[2] and lines[3].strip() == "M  a.md"
    assert "one" in lines[4] and lines[5].strip() == "A  a.md"
    assert len(lines) == 6   # b.md and c.md are outside the filter
    docs = _json_log(cas, "--name-status", "-n", "1", "--", "a.md")
    assert [d["message"] for d in docs] == ["three"]
    assert docs[0]["paths"] == [{"change": "deleted", "path": "a.md"}]


def test_with_all_a_forks_first_snapshot_is_compared_with_its_base(root, cas):
    assert cas("branch", "--switch", "side").code == 0
    write(root / "d.md", b"d\n")
    assert cas("snapshot", "-m", "on side").code == 0
    docs = _json_log(cas, "--all", "--name-status")
    side = next(d for d in docs if d["message"] == "on side")
    # Compared with 'one', where side was forked (the working tree kept
    # main's files); without the base every file would read as added.
    assert side["paths"] == [{"change": "deleted", "path": "a.md"}, {"change": "added", "path": "c.md"},
                             {"change": "added", "path": "d.md"}]
    assert cas("log", "--all", "--", "b.md").text.count("on side") == 0


def test_history_log_is_one_library_call(root):
    with Store.open(str(root / ".cas")) as store:
        history = History(store)
        entries = history.log("HEAD", limit=2, changes=True)
        assert [e.snapshot.message for e in entries] == ["four", "three"]
        assert entries[0].refs == ("HEAD -> main",)
        assert entries[1].counts()["deleted"] == 1
        assert [c.path for c in entries[1].changes] == [b"a.md"]
        picked = history.log(paths=[b"a.md"])
        assert [e.snapshot.message for e in picked] == ["three", "two", "one"]
        assert history.log("v1")[0].snapshot.message == "two"
        assert history.log(decorate=False)[0].refs == ()


def test_decorations_read_the_refs_once_per_listing(root, monkeypatch):
    calls = []
    real = Refs.list

    def counting(self, prefix):
        calls.append(prefix)
        return real(self, prefix)

    monkeypatch.setattr(Refs, "list", counting)
    with Store.open(str(root / ".cas")) as store:
        History(store).log()
    assert sorted(calls) == ["refs/heads/", "refs/tags/"]


def test_history_at_picks_the_newest_at_or_before_and_says_when_history_begins(root):
    with Store.open(str(root / ".cas")) as store:
        history = History(store)
        entries = history.log()
        second = entries[2].snapshot
        assert history.at("main", second.time_ns).oid == second.oid
        assert history.at(None, time.time_ns() + 10**12).oid == entries[0].snapshot.oid
        first = entries[-1].snapshot
        with pytest.raises(NoSnapshotAt) as e:
            history.at("main", first.time_ns - 10**9)
        assert first.oid.short in str(e.value) and local_time(first.time_ns) in str(e.value)


def test_log_stat_in_a_subprocess_exits_cleanly(root):
    r = cas_process("log", "--stat", "--name-status", "--all", cwd=root)
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in r.stderr
