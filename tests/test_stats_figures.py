"""`cas stats`: every figure defined in --help and consistent with the others."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cas.model.history import History
from cas.ops.usage import store_usage
from cas.storage.store import Store

from .test_models_everyday import make_model


def figures(cas, cwd: Path | None = None) -> dict:
    r = cas("stats", "--json", cwd=cwd)
    assert r.code == 0, r.err
    return json.loads(r.out)


def assert_consistent(doc: dict, store_dir: Path) -> None:
    parts = ("content_stored", "metadata_stored", "unreferenced_stored", "pack_overhead")
    assert doc["stored_bytes"] == sum(doc[p] for p in parts)
    assert doc["unique_bytes"] == doc["content_bytes"] + doc["unreferenced_bytes"]
    assert doc["content_bytes"] <= doc["snapshot_bytes"]
    assert doc["disk_bytes"] == doc["stored_bytes"] + doc["view_bytes"]
    # The same total as the storage layer's own count of what is on disk.
    with Store.open(str(store_dir)) as store:
        assert doc["stored_bytes"] == store.stats().stored_bytes
        assert doc["objects"] == store.stats().objects


@pytest.fixture
def data(cas, tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    assert cas("init", cwd=d).code == 0
    return d


def test_distinct_files_dedup_one_and_unique_not_above_snapshot_bytes(cas, data):
    for i in range(5):
        (data / f"f{i}.bin").write_bytes(os.urandom(50_000 + i))
    (data / "notes").mkdir()
    (data / "notes" / "a.md").write_text("hello\n")
    assert cas("snapshot", cwd=data).code == 0
    doc = figures(cas, data)
    files = sum(p.stat().st_size for p in data.rglob("*") if p.is_file() and ".cas" not in p.parts)
    assert doc["snapshot_bytes"] == doc["content_bytes"] == doc["unique_bytes"] == files
    assert doc["dedup_ratio"] == 1.0 and doc["unreferenced_bytes"] == 0
    assert doc["metadata_bytes"] > 0          # trees and the record, in a figure of their own
    assert_consistent(doc, data / ".cas")


def test_repeated_snapshots_dedup_and_chunked_files_count_their_chunks(cas, data):
    (data / "big.bin").write_bytes(os.urandom(6 << 20))     # chunked
    (data / "copy.bin").write_bytes((data / "big.bin").read_bytes()[:100_000])
    assert cas("snapshot", cwd=data).code == 0
    (data / "small.txt").write_text("x")
    assert cas("snapshot", cwd=data).code == 0
    doc = figures(cas, data)
    content = (6 << 20) + 100_000 + 1
    assert doc["chunked_files"] >= 1
    assert doc["content_bytes"] <= content      # chunks shared with copy.bin count once
    assert doc["snapshot_bytes"] == 2 * ((6 << 20) + 100_000) + 1
    assert doc["dedup_ratio"] >= 1.9
    assert_consistent(doc, data / ".cas")


def test_objects_in_no_snapshot_are_unreferenced(cas, data):
    (data / "kept.txt").write_text("kept\n")
    assert cas("snapshot", cwd=data).code == 0
    (data / "loose.bin").write_bytes(os.urandom(30_000))
    assert cas("add", "loose.bin", cwd=data).code == 0
    doc = figures(cas, data)
    assert doc["unreferenced_bytes"] == 30_000
    assert doc["snapshot_bytes"] == doc["content_bytes"] == 5
    assert_consistent(doc, data / ".cas")


@pytest.mark.plain_only
def test_view_copies_are_counted(cas, data, tmp_path):
    src = make_model(tmp_path / "m", 21)
    assert cas("model", "import", str(src), "--name", "m", "--chunked", cwd=data).code == 0
    assert figures(cas, data)["view_bytes"] == 0
    r = cas("model", "path", "m", "--json", cwd=data)
    assert r.code == 0, r.err
    copied = json.loads(r.out)["copied_bytes"]
    assert copied > 0
    doc = figures(cas, data)
    assert doc["view_bytes"] == copied
    assert_consistent(doc, data / ".cas")
    assert "views:" in cas("stats", cwd=data).text


def test_library_and_cli_agree(cas, data):
    (data / "a.txt").write_text("a" * 1000)
    assert cas("snapshot", cwd=data).code == 0
    with Store.open(str(data / ".cas")) as store:
        lib = store_usage(History(store)).to_doc()
    assert lib == figures(cas, data)


def test_help_defines_every_printed_figure(cas, data):
    (data / "a.txt").write_text("a")
    assert cas("snapshot", cwd=data).code == 0
    text = cas("stats", "--help").text
    printed = [line.split(":")[0] for line in cas("stats", cwd=data).text.splitlines()]
    for label in printed:
        if label != "objects":
            assert f"\n  {label}" in text, label
