"""History at scale, small: verify and gc cost follows the distinct trees and
objects, not the snapshots (tools/bench/history_scale.py times the large one)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cas.model.history import History
from cas.ops.gc import gc
from cas.ops.verify import verify
from cas.storage.store import Store

from .conftest import REPO, cas_process

sys.path.insert(0, str(REPO / "tools" / "bench"))
import history_scale  # noqa: E402

SNAPSHOTS = 2000
VARIANTS = 20
# The live file's directory and the root, per variant; the other 9 directories once.
DISTINCT_TREES = 2 * VARIANTS + history_scale.DIRS - 1


@pytest.fixture(scope="module")
def scaled(tmp_path_factory) -> tuple[Path, Path, list[int]]:
    return history_scale.build_store(tmp_path_factory.mktemp("scale"), SNAPSHOTS, VARIANTS)


class CountingHistory(History):
    """A History that counts the trees and snapshot record files it reads."""

    def __init__(self, store: Store):
        super().__init__(store)
        self.trees: list = []
        self.record_reads = 0

    def load_tree(self, oid):
        self.trees.append(oid)
        return super().load_tree(oid)

    def load_record(self, oid):
        self.record_reads += 1
        return super().load_record(oid)

    def _read_record(self, oid):
        self.record_reads += 1
        return super()._read_record(oid)


@pytest.mark.plain_only
def test_the_built_store_is_what_cas_writes(scaled):
    store_path, source, times = scaled
    log = cas_process("--store", str(store_path), "log", "--json", cwd=source)
    assert log.returncode == 0, log.stderr
    entries = json.loads(log.stdout)
    assert len(entries) == SNAPSHOTS
    assert [e["id"] for e in entries][-1] != entries[0]["id"]
    v = cas_process("--store", str(store_path), "verify", "--full", "--json", cwd=source)
    assert v.returncode == 0, v.stderr
    assert json.loads(v.stdout)["snapshots"] == SNAPSHOTS
    restored = source.parent / "restored"
    at = history_scale.time.strftime("%Y-%m-%dT%H:%M:%S",
                                     history_scale.time.localtime(times[7] // 10**9))
    r = cas_process("--store", str(store_path), "restore", "--at", at, "--to", str(restored),
                    cwd=source)
    assert r.returncode == 0, r.stderr
    assert (restored / history_scale.LIVE_FILE).read_bytes() == b"live 7\n"


@pytest.mark.plain_only
def test_verify_reads_each_distinct_tree_once_and_no_record_file(scaled):
    store_path, _, _ = scaled
    with Store.open(str(store_path)) as store:
        history = CountingHistory(store)
        report = verify(store, history=history)
        again = CountingHistory(store)
        assert verify(store, history=again).ok
    assert report.ok and report.snapshots == SNAPSHOTS
    # Each distinct tree is parsed at most once (those a snapshot stored
    # with their links, never), and a second run parses none: what each
    # tree names is in the index now.
    assert len(history.trees) == len(set(history.trees)) <= DISTINCT_TREES
    assert again.trees == []
    # The records come from the index's copy (checked against their ids), not 2,000 files.
    assert history.record_reads == 0


@pytest.mark.plain_only
def test_full_verify_still_rereads_every_record_file(scaled):
    store_path, _, _ = scaled
    with Store.open(str(store_path)) as store:
        history = CountingHistory(store)
        assert verify(store, full=True, history=history).ok
    assert history.record_reads >= SNAPSHOTS


@pytest.mark.plain_only
def test_gc_reads_each_distinct_tree_once(scaled):
    store_path, _, _ = scaled
    with Store.open(str(store_path), exclusive=True) as store:
        history = CountingHistory(store)
        report = gc(history, dry_run=True)
        again = CountingHistory(store)
        gc(again, dry_run=True)
    assert len(history.trees) == len(set(history.trees)) <= DISTINCT_TREES
    assert again.trees == []
    # Every manifest, every distinct tree, the 200 files and the live file's versions.
    assert report.live_objects == SNAPSHOTS + DISTINCT_TREES + 199 + VARIANTS
    assert report.removed_objects == 0


@pytest.mark.plain_only
def test_a_record_swapped_for_a_bigger_file_is_seen_by_quick_verify(tmp_path):
    store_path, source, _ = history_scale.build_store(tmp_path, 30, 3)
    record = sorted((store_path / "snapshots").iterdir())[5]
    record.write_bytes(record.read_bytes() + b" ")
    v = cas_process("--store", str(store_path), "verify", "--json", cwd=source)
    assert v.returncode == 1
    damage = json.loads(v.stdout)["damage"]
    assert [(d["kind"], d["id"]) for d in damage] == [("snapshot", record.name[:-5])]


@pytest.mark.plain_only
def test_the_bench_runs_and_reports_every_step(tmp_path):
    out = tmp_path / "scale.json"
    assert history_scale.main(["--snapshots", "300", "--variants", "5", "--dirs",
                               str(tmp_path / "b"), "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    big, small = results
    assert big["snapshots"] == 300 and small["snapshots"] == 10
    assert set(big["steps"]) == {"log", "restore-at", "snapshot", "verify", "gc", "forget"}
    assert set(small["steps"]) == {"snapshot"}
    for row in big["steps"].values():
        assert row["status"] in ("ok", "missing"), row
    assert big["steps"]["verify"]["status"] == big["steps"]["gc"]["status"] == "ok"
