"""forget, gc, and verify's view of history."""

import json
import os

from .conftest import chunk_list_path, damage_first_chunk, write


def setup_history(tmp_path, cas):
    root = tmp_path / "tree"
    cas("init", str(root))
    write(root / "shared.bin", os.urandom(200_000))
    write(root / "a.txt", b"v1")
    ids = [cas("snapshot", "-m", "1", cwd=root).text.strip()]
    write(root / "a.txt", b"v2" * 1000)
    write(root / "only2.bin", os.urandom(50_000))
    ids.append(cas("snapshot", "-m", "2", cwd=root).text.strip())
    os.unlink(root / "only2.bin")
    write(root / "a.txt", b"v3")
    ids.append(cas("snapshot", "-m", "3", cwd=root).text.strip())
    return root, ids


def test_forget_in_the_middle_keeps_older_history_listed(tmp_path, cas):
    root, (s1, s2, s3) = setup_history(tmp_path, cas)
    cas("tag", "middle", s2, cwd=root)
    r = cas("forget", s2, cwd=root)  # a tag protects its snapshot
    assert r.code == 2 and "middle" in r.err
    assert cas("tag", "middle", "-d", cwd=root).code == 0
    r = cas("forget", s2, cwd=root)
    assert r.code == 0 and f"forgot {s2}" in r.text
    log = json.loads(cas("log", "--json", cwd=root).out)
    # History is every recorded snapshot: s1 is still listed, s3 marks the gap.
    assert [s["id"] for s in log] == [s3, s1]
    assert [s["parent_forgotten"] for s in log] == [True, False]
    assert json.loads(cas("show", "--json", "HEAD~1", cwd=root).out)["id"] == s1
    assert "~" in cas("log", "--oneline", cwd=root).text.splitlines()[0]
    assert json.loads(cas("show", "--json", s3, cwd=root).out)["parents"] == [s2]
    assert cas("verify", cwd=root).code == 0


def test_gc_removes_what_no_snapshot_reaches_and_keeps_shared_data(tmp_path, cas):
    root, (s1, s2, s3) = setup_history(tmp_path, cas)
    shared = cas("cat", f"{s1}:shared.bin", cwd=root).out
    cas("forget", s2, cwd=root)
    young = json.loads(cas("gc", "--json", cwd=root).out)
    assert young["removed_objects"] == 0  # everything is younger than the grace period
    dry = json.loads(cas("gc", "--dry-run", "--grace", "0", "--json", cwd=root).out)
    # s2's manifest, its root tree, a.txt v2 and only2.bin are unreachable now.
    assert dry["removed_objects"] + dry["kept_dead_objects"] >= 4
    before = json.loads(cas("stats", "--json", cwd=root).out)["objects"]
    assert json.loads(cas("stats", "--json", cwd=root).out)["objects"] == before  # dry run kept all
    done = json.loads(cas("gc", "--grace", "0", "--json", cwd=root).out)
    assert done["removed_objects"] == dry["removed_objects"]
    assert cas("verify", "--full", cwd=root).code == 0
    assert cas("cat", f"{s1}:shared.bin", cwd=root).out == shared
    assert cas("cat", f"{s3}:shared.bin", cwd=root).out == shared
    out = tmp_path / "r1"
    assert cas("restore", s1, "--to", str(out), cwd=root).code == 0
    assert (out / "a.txt").read_bytes() == b"v1"


def test_gc_removes_a_dead_loose_object_and_stale_stat_cache(tmp_path, cas):
    root = tmp_path / "tree"
    cas("init", str(root))
    big = os.urandom(9 << 20)  # chunked: a chunk list file plus chunks in packs
    write(root / "big.bin", big)
    write(root / "keep.txt", b"keep")
    s1 = cas("snapshot", cwd=root).text.strip()
    os.unlink(root / "big.bin")
    cas("snapshot", cwd=root)
    oid = json.loads(cas("ls", "--json", f"{s1}:big.bin", cwd=root).out)[0]["id"]
    assert chunk_list_path(root / ".cas", oid).exists()
    cas("forget", s1, cwd=root)
    r = json.loads(cas("gc", "--grace", "0", "--json", cwd=root).out)
    assert r["removed_objects"] >= 1 and r["removed_bytes"] >= len(big)
    assert not chunk_list_path(root / ".cas", oid).exists()
    # The same content comes back: it must be stored again, not trusted from a stale cache.
    write(root / "big.bin", big)
    cas("snapshot", cwd=root)
    assert cas("verify", "--full", cwd=root).code == 0
    assert cas("cat", "HEAD:big.bin", cwd=root).out == big


def test_gc_refuses_to_run_beside_another_cas_process(tmp_path, cas):
    from cas.storage.store import Store
    root, _ = setup_history(tmp_path, cas)
    with Store.open(str(root / ".cas")):
        r = cas("gc", cwd=root)
    assert r.code == 2 and "locked" in r.err


def test_verify_full_names_the_snapshots_and_paths_a_damaged_object_hurts(tmp_path, cas):
    root = tmp_path / "tree"
    cas("init", str(root))
    big = os.urandom(9 << 20)
    write(root / "models" / "w.safetensors", big)
    write(root / "notes.txt", b"n")
    s1 = cas("snapshot", cwd=root).text.strip()
    write(root / "notes.txt", b"n2")
    s2 = cas("snapshot", cwd=root).text.strip()
    oid = json.loads(cas("ls", "--json", "HEAD:models/w.safetensors", cwd=root).out)[0]["id"]
    damage_first_chunk(root / ".cas", oid)
    r = cas("verify", "--full", cwd=root)
    assert r.code == 1
    assert f"object {oid}" in r.err
    assert f"used by snapshot {s1[:12]} at models/w.safetensors" in r.err
    assert f"used by snapshot {s2[:12]} at models/w.safetensors" in r.err
    os.unlink(chunk_list_path(root / ".cas", oid))
    r = json.loads(cas("verify", "--json", cwd=root).out)
    assert not r["ok"]
    hurt = [d for d in r["damage"] if d["id"] == oid][0]
    assert {u["snapshot"] for u in hurt["used_by"]} == {s1, s2}


def test_du_and_stats_count_what_only_one_snapshot_holds(tmp_path, cas):
    root = tmp_path / "tree"
    cas("init", str(root))
    shared = os.urandom(3 << 20)
    write(root / "models" / "base.bin", shared)
    s1 = cas("snapshot", cwd=root).text.strip()
    write(root / "models" / "tuned.bin", shared + os.urandom(200_000))
    s2 = cas("snapshot", cwd=root).text.strip()
    du = json.loads(cas("du", "--json", f"{s2}:models", cwd=root).out)
    assert du["files"] == 2 and du["bytes"] == 2 * len(shared) + 200_000
    # Only the tail chunks and the new trees are unique to s2: the shared chunks are in s1 too.
    assert 0 < du["unique_bytes"] < 400_000
    stats = json.loads(cas("stats", "--json", cwd=root).out)
    assert stats["snapshot_bytes"] == len(shared) + du["bytes"]
    assert stats["dedup_ratio"] > 2.5
    added = json.loads(cas("stats", "--json", s2, cwd=root).out)
    assert added["id"] == s2 and added["new_bytes"] < 400_000
    assert cas("du", s1, cwd=root).code == 0


def test_gc_json_reports_every_figure_of_its_report(tmp_path, cas):
    """The JSON comes from the report itself, so no figure is left out
    (removed_views was)."""
    import dataclasses

    from cas.ops.gc import GcReport

    root, _ = setup_history(tmp_path, cas)
    doc = json.loads(cas("gc", "--dry-run", "--json", cwd=root).out)
    assert set(doc) == {"dry_run"} | {f.name for f in dataclasses.fields(GcReport)}
    assert doc["dry_run"] is True and doc["removed_views"] == 0
