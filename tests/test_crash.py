"""Crash safety: SIGKILL during `cas add` never leaves a store that fails to verify."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from cas.objectid import hash_bytes
from cas.storage.config import StoreConfig
from cas.storage.store import Store

from .conftest import cas_process

KILLS = 20


def kill_at_random(args: list[str], env: dict, after: float) -> bool:
    """Start cas, SIGKILL it ``after`` seconds in; True if it was still running."""
    proc = subprocess.Popen([sys.executable, "-m", "cas.cli", *args], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after)
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return running


def make_tree(root, rng):
    for d in range(40):
        for f in range(150):
            p = root / f"d{d:02}" / f"f{f:03}.txt"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(rng.randint(0, 6000)) + b"log line\n" * rng.randint(0, 300))
    for n in range(30):
        (root / f"big{n:02}.bin").write_bytes(rng.randbytes(1 << 20) * 2 + rng.randbytes(rng.randint(0, 99999)))


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_verifiable_store(tmp_path):
    rng = random.Random(4242)
    tree = tmp_path / "tree"
    make_tree(tree, rng)
    killed_mid_run = 0
    for attempt in range(KILLS):
        # Every other attempt starts afresh; the rest continue a killed store.
        if attempt % 2 == 0:
            store_path = tmp_path / f"store{attempt}"
            Store.init(str(store_path), StoreConfig(loose_min_size=1 << 20,
                                                    pack_target_size=512 << 10)).close()
        env = {"CAS_STORE": str(store_path)}
        killed_mid_run += kill_at_random(["add", str(tree)], env, rng.uniform(0.2, 0.7))
        r = cas_process("verify", "--full", "--json", cwd=tmp_path, env=env)
        report = json.loads(r.stdout)
        assert r.returncode == 0 and report["ok"], (attempt, report)
        with Store.open(str(store_path)) as s:
            for entry in s.entries():
                assert hash_bytes(s.read_object(entry.oid)) == entry.oid
    # The kills must land while cas is working, or this test proves nothing.
    assert killed_mid_run >= KILLS // 2, killed_mid_run
    # What a killed run left behind (unindexed packs, temp files) is adopted
    # or cleared by a rebuild, and the store still verifies.
    before = json.loads(cas_process("stats", "--json", cwd=tmp_path, env=env).stdout)["objects"]
    assert cas_process("index", "rebuild", cwd=tmp_path, env=env).returncode == 0
    report = json.loads(cas_process("verify", "--full", "--json", cwd=tmp_path, env=env).stdout)
    assert report["ok"] and report["temp_files"] == 0 and report["unindexed_packs"] == 0
    assert report["objects"] >= before
    r = cas_process("add", str(tree), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    with Store.open(str(store_path)) as s:
        for line in r.stdout.decode().splitlines():
            oid, path = line.split("  ", 1)
            assert s.read_object(s.resolve(oid)) == open(path, "rb").read()


def tree_digest(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".cas"]
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hash_bytes(open(p, "rb").read())
    return out


@pytest.mark.slow
def test_sigkill_during_snapshots_leaves_every_recorded_snapshot_restorable(tmp_path):
    rng = random.Random(777)
    tree = tmp_path / "tree"
    make_tree(tree, rng)
    expected = tree_digest(tree)
    store_path = tmp_path / "store"
    Store.init(str(store_path), StoreConfig(loose_min_size=1 << 20, pack_target_size=512 << 10)).close()
    env = {"CAS_STORE": str(store_path)}
    killed_mid_run = 0
    for attempt in range(10):
        # Touch some files so that every snapshot has work to do: an
        # incremental one of this tree takes about 0.4-0.6 s, start-up
        # included, and the kill must land inside it.
        for p in rng.sample(sorted(tree.rglob("*.txt")), 200):
            p.write_bytes(p.read_bytes() + b"more\n")
        expected = tree_digest(tree)
        killed_mid_run += kill_at_random(["snapshot", str(tree), "-m", f"{attempt}"], env,
                                         rng.uniform(0.1, 0.45))
        r = cas_process("verify", "--full", "--json", cwd=tmp_path, env=env)
        assert r.returncode == 0 and json.loads(r.stdout)["ok"], (attempt, r.stdout)
    assert killed_mid_run >= 4, killed_mid_run
    r = cas_process("snapshot", str(tree), "-m", "final", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    log = json.loads(cas_process("log", "--json", "tree", cwd=tmp_path, env=env).stdout)
    # Every recorded snapshot restores bit-exact; the last one equals the tree now.
    for i, snap in enumerate(log[:4]):
        out = tmp_path / f"restore{i}"
        r = cas_process("restore", snap["id"], "--to", str(out), cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        got = tree_digest(out)
        if i == 0:
            assert got == expected
        listing = json.loads(cas_process("ls", "-r", "--json", snap["id"], cwd=tmp_path, env=env).stdout)
        recorded = {e["path"]: e["id"] for e in listing if e["kind"] == "file"}
        assert {rel: d.hex for rel, d in got.items()} == recorded
