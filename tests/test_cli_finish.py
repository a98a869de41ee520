"""Snapshot progress with a total, gc's temp-file line, repair hints that
repair when followed, and a stored snapshot's id."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from cas.model.history import History
from cas.model.snapshot import Snapshot
from cas.objectid import ObjectId, hash_bytes
from cas.ops.models import resolve_model
from cas.ops.scan import scan
from cas.storage.store import Store

from .conftest import flip_byte, stderr_on_a_pty
from .test_models_trust import make_model_dir

MiB = 1 << 20


def test_snapshot_bar_shows_the_total_the_listing_found(tmp_path, cas):
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(3):
        (tree / f"f{i}").write_bytes(os.urandom(MiB))
    (tree / "small").write_bytes(b"x" * 10)
    assert cas("init", cwd=tree).code == 0
    err = stderr_on_a_pty(["snapshot"], tree)
    assert "/4 files" in err and "ETA" in err and re.search(r"/3\.0 MiB", err)


def test_scan_reports_what_it_will_read_once(tmp_path, store):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a" * 1000)
    (src / "b").write_bytes(b"b" * 24)
    totals: list[tuple[int, int]] = []
    with store.writer() as writer:
        scan(store, str(src), "main", writer, on_total=lambda b, f: totals.append((b, f)))
    assert totals == [(1024, 2)]


def test_gc_says_it_removed_temp_files_left_by_interrupted_writes(tmp_path, cas):
    assert cas("init").code == 0
    (tmp_path / ".cas" / "tmp" / "pack-left-by-a-kill").write_bytes(b"z" * 2048)
    out = cas("gc", "--dry-run").out.decode()
    assert "would remove 1 temp file (2.0 KiB) left by interrupted writes" in out
    assert (tmp_path / ".cas" / "tmp" / "pack-left-by-a-kill").exists()
    out = cas("gc").out.decode()
    assert "removed 1 temp file (2.0 KiB) left by interrupted writes" in out
    assert not (tmp_path / ".cas" / "tmp" / "pack-left-by-a-kill").exists()
    assert b"temp file" not in cas("gc").out


def _damage(store_path: Path, oid: ObjectId) -> None:
    """Flip a byte in the middle of an object as stored (loose or packed)."""
    with Store.open(str(store_path)) as s:
        entry = s.entry(oid)
        assert entry is not None
        path = s.layout.pack_path(entry.pack) if entry.pack else s.layout.loose_path(oid, entry.encoding)
        offset = entry.offset + entry.stored_length // 2
    flip_byte(path, offset, 0x40)


def test_following_verifys_hint_repairs(tmp_path, cas):
    tree, good = tmp_path / "tree", tmp_path / "good"
    tree.mkdir()
    good.mkdir()
    data = os.urandom(20000)
    (tree / "notes.bin").write_bytes(data)
    (good / "copy.bin").write_bytes(data)
    assert cas("init", cwd=tree).code == 0
    assert cas("snapshot", cwd=tree).code == 0
    _damage(tree / ".cas", hash_bytes(data))
    r = cas("verify", "--full", cwd=tree)
    assert r.code == 1
    hints = [line for line in r.err.splitlines() if line.startswith("to repair")]
    assert hints == ["to repair: add or import the good files again, or run "
                     "'cas repair --from DIR|STORE'"]
    command = re.search(r"'(cas repair [^']*)'", hints[0]).group(1)
    args = shlex.split(command.replace("DIR|STORE", shlex.quote(str(good))))[1:]
    assert cas(*args, cwd=tree).code == 0
    assert cas("verify", "--full", cwd=tree).code == 0


@pytest.mark.plain_only
@pytest.mark.parametrize("way", ["repair", "import"])
def test_following_model_verifys_hint_repairs(tmp_path, cas, way):
    assert cas("init").code == 0
    src = make_model_dir(tmp_path / "src")
    assert cas("model", "import", str(src), "--name", "m").code == 0
    with Store.open(str(tmp_path / ".cas")) as store:
        v = resolve_model(History(store), "m")
        path = store.plain_path(v.manifest.file("model.safetensors").id)
    assert path is not None
    flip_byte(path, 1000)
    r = cas("model", "verify", "m")
    assert r.code == 1
    hint = next(line for line in r.err.splitlines() if line.startswith("to repair m@1"))
    assert hint == f"to repair m@1: cas model import {src} --name m, or cas repair --from {src}"
    first, second = hint.split(": ", 1)[1].split(", or ")
    assert cas(*shlex.split(second if way == "repair" else first)[1:]).code == 0
    assert cas("model", "verify", "m").code == 0
    assert cas("verify", "--full").code == 0


def test_stored_id_is_the_recorded_snapshots_and_refused_for_one_not_recorded(tmp_path, cas):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"x")
    assert cas("init", cwd=tree).code == 0
    assert cas("snapshot", cwd=tree).code == 0
    with Store.open(str(tree / ".cas")) as store:
        head = History(store).resolve("HEAD")
    assert head.oid is not None and head.stored_id == head.oid
    built = Snapshot(tree=head.tree, parents=(), time_ns=0, message="", branch="main",
                     host="h", user="u", source="/")
    with pytest.raises(ValueError):
        _ = built.stored_id
