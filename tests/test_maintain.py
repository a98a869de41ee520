"""cas maintain: policies, gc, pack consolidation, rotating verify sample,
index compaction; and SIGKILL at any moment of it."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cas.ops.packs import consolidate, rewrite_packs
from cas.storage.store import Store

from .conftest import cas_process, write

SNAPSHOTS = 24


def watched_history(tmp_path: Path, cas, count: int = SNAPSHOTS) -> tuple[Path, list[str]]:
    """A tree snapshotted ``count`` times with one small change each: one small
    pack per snapshot, as the watcher leaves them."""
    root = tmp_path / "tree"
    for d in range(4):
        for f in range(10):
            write(root / f"d{d}" / f"f{f}.txt", f"file {d}/{f}\n".encode() * 40)
    assert cas("init", cwd=root).code == 0
    ids = []
    for i in range(count):
        write(root / "live.log", b"".join(b"line %d\n" % n for n in range(i * 50)))
        ids.append(cas("snapshot", "-m", f"s{i}", cwd=root).text.strip())
    return root, ids


def pack_files(root: Path) -> list[Path]:
    return sorted((root / ".cas" / "packs").glob("*/*.pack"))


def age_store(root: Path, seconds: int = 7200) -> None:
    """Make every object and pack older than gc's grace period."""
    then = time.time() - seconds
    for sub in ("objects", "packs"):
        for path in (root / ".cas" / sub).rglob("*"):
            os.utime(path, (then, then), follow_symlinks=False)


def listed(cas, root: Path) -> list[str]:
    return [s["id"] for s in json.loads(cas("log", "--json", cwd=root).out)]


def test_maintain_rewrites_small_packs_into_one_and_keeps_every_object(tmp_path, cas):
    root, ids = watched_history(tmp_path, cas)
    before = pack_files(root)
    assert len(before) >= SNAPSHOTS
    r = cas("maintain", "--json", cwd=root)
    assert r.code == 0, r.err
    steps = {s["step"]: s for s in json.loads(r.out)["steps"]}
    assert [s for s in steps] == ["policies", "gc", "consolidate", "verify", "compact"]
    assert steps["consolidate"]["rewritten_packs"] == len(before)
    after = pack_files(root)
    assert len(after) == steps["consolidate"]["new_packs"] == 1
    assert not set(after) & set(before)
    assert cas("verify", "--full", cwd=root).code == 0
    out = tmp_path / "r"
    assert cas("restore", ids[3], "--to", str(out), cwd=root).code == 0
    assert (out / "live.log").read_bytes() == b"".join(b"line %d\n" % n for n in range(150))
    # Nothing small left to merge: a second run rewrites nothing.
    again = json.loads(cas("maintain", "--json", cwd=root).out)["steps"][2]
    assert again["rewritten_packs"] == 0 and len(pack_files(root)) == 1


def test_dry_run_changes_nothing(tmp_path, cas):
    root, ids = watched_history(tmp_path, cas, 6)
    assert cas("policy", "set", "--keep-last", "2", cwd=root).code == 0
    age_store(root)
    before = pack_files(root)
    r = cas("maintain", "--dry-run", "--json", cwd=root)
    assert r.code == 0, r.err
    steps = {s["step"]: s for s in json.loads(r.out)["steps"]}
    assert steps["policies"]["forgotten"] == 4
    assert steps["consolidate"]["rewritten_packs"] == len(before)
    assert pack_files(root) == before
    assert listed(cas, root) == ids[::-1]
    # The sample's rotation does not move either: the next run starts at the same slice.
    first = json.loads(cas("maintain", "--dry-run", "--json", cwd=root).out)["steps"][3]
    assert first["sample_from"] == steps["verify"]["sample_from"]


def test_a_consolidation_killed_after_indexing_leaves_orphans_the_next_run_removes(tmp_path, cas):
    root, _ = watched_history(tmp_path, cas, 8)
    old = pack_files(root)
    with Store.open(str(root / ".cas"), exclusive=True) as store:
        # The first half of a consolidation: new pack durable and indexed, and then the crash.
        rewrite_packs(store, [e for e in store.entries() if e.pack is not None])
    assert cas("verify", "--full", cwd=root).code == 0
    assert set(old) < set(pack_files(root))
    with Store.open(str(root / ".cas"), exclusive=True) as store:
        report = consolidate(store)
    assert report.orphan_packs == len(old)
    assert len(pack_files(root)) == 1
    assert cas("verify", "--full", cwd=root).code == 0


def test_maintain_applies_policies_then_gc_reclaims_what_they_forgot(tmp_path, cas):
    root, ids = watched_history(tmp_path, cas, 10)
    assert cas("policy", "set", "--keep-last", "3", cwd=root).code == 0
    age_store(root)
    r = cas("maintain", "--json", cwd=root)
    assert r.code == 0, r.err
    steps = {s["step"]: s for s in json.loads(r.out)["steps"]}
    assert steps["policies"]["forgotten"] == 7
    assert steps["gc"]["removed_objects"] >= 7  # at least the forgotten manifests
    assert listed(cas, root) == ids[:-4:-1]
    assert cas("verify", "--full", cwd=root).code == 0


@pytest.mark.parametrize("damage", ["not-json", "deep-nesting", "fifo"])
def test_a_damaged_policy_skips_its_branch_only_and_is_reported(tmp_path, cas, damage):
    """One branch's damaged policy costs that branch's thinning, not the
    others', nor gc and the sample: exit 1, the problem in the notes."""
    root, ids = watched_history(tmp_path, cas, 10)
    assert cas("branch", "other", ids[4], cwd=root).code == 0
    assert cas("policy", "set", "--keep-last", "3", cwd=root).code == 0
    bad = root / ".cas" / "policies" / "other.json"
    if damage == "fifo":
        os.mkfifo(bad)
    else:
        bad.write_text("{not json" if damage == "not-json" else "[" * 30000 + "]" * 30000)
    age_store(root)
    r = cas("maintain", "--json", cwd=root)
    assert r.code == 1, r.err
    doc = json.loads(r.out)
    steps = {s["step"]: s for s in doc["steps"]}
    assert steps["policies"]["forgotten"] == 6 and steps["policies"]["skipped"] == ["other"]
    assert steps["gc"]["removed_objects"] >= 6 and steps["verify"]["objects"] > 0
    assert not doc["ok"] and any("thinning of other skipped" in n and "other.json" in n
                                 for n in doc["notes"])
    assert listed(cas, root) == ids[:-4:-1] + [ids[4]]   # other's head stays
    assert cas("verify", "--full", cwd=root).code == 0


def test_compaction_shrinks_the_index_and_keeps_its_contents(tmp_path, cas):
    root, ids = watched_history(tmp_path, cas, 40)
    assert cas("forget", *ids[:35], cwd=root).code == 0
    # Give the index something to give back: a stat cache entry per file, gone again.
    for n in range(2000):
        write(root / "many" / f"{n}.txt", b"x")
    assert cas("snapshot", "-m", "many", cwd=root).code == 0
    shutil.rmtree(root / "many")
    last = cas("snapshot", "-m", "fewer", cwd=root).text.strip()
    age_store(root)
    r = cas("maintain", "--json", cwd=root)
    assert r.code == 0, r.err
    compact = json.loads(r.out)["steps"][4]
    assert compact["bytes_after"] < compact["bytes_before"]
    assert (root / ".cas" / "index" / "data.mdb").stat().st_size == compact["bytes_after"]
    assert listed(cas, root)[0] == last and len(listed(cas, root)) == 7
    assert cas("verify", "--full", cwd=root).code == 0
    assert cas("snapshot", "-m", "after", "--allow-empty", cwd=root).code == 0


def damage_one_packed_object(root: Path) -> None:
    """Flip a byte inside the first object of the largest pack (sizes stay right)."""
    pack = max(pack_files(root), key=lambda p: p.stat().st_size)
    os.chmod(pack, 0o600)
    data = bytearray(pack.read_bytes())
    data[20] ^= 0xFF
    pack.write_bytes(bytes(data))


def test_a_rotating_sample_rereads_every_object_within_its_period(tmp_path, cas):
    root, _ = watched_history(tmp_path, cas, 3)
    slices = []
    for _ in range(4):
        r = cas("verify", "--sample", "25", "--json", cwd=root)
        assert r.code == 0
        sample = json.loads(r.out)["sample"]
        slices.append((int(sample["from"], 16), int(sample["to"], 16)))
    # Four runs of 25% tile the whole digest space, each starting where the last ended.
    assert slices[0][0] == 0 and slices[-1][1] == 0
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
    damage_one_packed_object(root)
    assert cas("verify", cwd=root).code == 0  # presence and sizes: the flip is not seen
    found = [cas("verify", "--sample", "25", cwd=root).code for _ in range(4)]
    assert 1 in found, found
    assert cas("verify", "--full", cwd=root).code == 1


@pytest.mark.plain_only
def test_maintain_reports_damage_its_sample_finds(tmp_path, cas):
    root, _ = watched_history(tmp_path, cas, 3)
    damage_one_packed_object(root)
    r = cas("maintain", "--verify-sample", "100", "--json", cwd=root)
    assert r.code == 1
    assert json.loads(r.out)["damage"]
    assert cas("maintain", "--verify-sample", "101", cwd=root).code == 2


def test_a_locked_store_is_one_line_and_exit_1_or_2(tmp_path, cas):
    root, _ = watched_history(tmp_path, cas, 2)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from cas.storage.store import Store; "
        f"s = Store.open({str(root / '.cas')!r}); print('ok', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"ok"
        r = cas_process("maintain", cwd=root, timeout=60)
        assert r.returncode in (1, 2) and b"Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_sound_store_listing_every_kept_snapshot(tmp_path, cas):
    rng = random.Random(1212)
    root, ids = watched_history(tmp_path, cas, 30)
    assert cas("policy", "set", "--keep-last", "12", cwd=root).code == 0
    kept = ids[:-13:-1]
    age_store(root)
    pristine = tmp_path / "pristine"
    shutil.copytree(root / ".cas", pristine, symlinks=True)
    t0 = time.monotonic()
    assert cas_process("maintain", cwd=root).returncode == 0
    duration = time.monotonic() - t0
    killed_mid_run = 0
    for attempt in range(12):
        shutil.rmtree(root / ".cas")
        shutil.copytree(pristine, root / ".cas", symlinks=True)
        proc = subprocess.Popen([sys.executable, "-m", "cas.cli", "maintain"], cwd=root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, duration))
        killed_mid_run += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        v = cas_process("verify", "--full", cwd=root)
        assert v.returncode == 0, (attempt, v.stderr)
        shown = listed(cas, root)
        assert set(kept) <= set(shown), attempt
        assert shown[0] == ids[-1]
        # The next run finishes the job.
        assert cas_process("maintain", cwd=root).returncode == 0
        assert listed(cas, root) == kept
        assert cas_process("verify", "--full", cwd=root).returncode == 0
    assert killed_mid_run >= 4


def test_run_maintenance_opens_the_store_itself(tmp_path, cas):
    from cas.ops.maintain import MaintainOptions, run_maintenance
    root, ids = watched_history(tmp_path, cas, 3)
    report = run_maintenance(str(root), MaintainOptions(verify_sample=100))
    assert [s["step"] for s in report.steps] == ["policies", "gc", "consolidate", "verify", "compact"]
    assert report.ok and report.sampled_objects > 0 and report.new_packs == 1
    assert listed(cas, root) == ids[::-1]
