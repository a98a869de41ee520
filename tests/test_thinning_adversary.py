"""Adversarial tests of retention and maintenance: the policy engine against
an independent transcription of restic's rules, crafted policy files, forks
and tags under thinning, gc after thinning, SIGKILL of `cas maintain`, and a
real watcher thinning while forget, maintain and snapshot run beside it.

CAS_FUZZ_EXAMPLES scales the property tests (default 300).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cas.model.retention import ALL, Duration, Policy, Tier, keep_reasons

NS = 1_000_000_000
EXAMPLES = int(os.environ.get("CAS_FUZZ_EXAMPLES", "300"))
ENV = {**os.environ, "TZ": "UTC"}
ENV.pop("CAS_STORE", None)


def cas(*args: str, cwd: Path, check: bool = True, env: dict | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess."""
    r = subprocess.run([sys.executable, "-m", "cas.cli", *args], cwd=cwd, env=env or ENV,
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, (args, r.returncode, r.stderr)
    return r


def one_line_error(r: subprocess.CompletedProcess, codes=(1, 2)) -> None:
    assert r.returncode in codes, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr


def snapshot(root: Path, when: str, *extra: str) -> str:
    r = cas("--quiet", "snapshot", "--allow-empty", "--json", "--time", when, *extra, cwd=root)
    return json.loads(r.stdout)["id"]


def logged(root: Path, *extra: str) -> list[str]:
    return [s["id"] for s in json.loads(cas("log", "--json", *extra, cwd=root).stdout)]


def branches(root: Path) -> dict[str, str]:
    return {row["branch"]: row["id"] for row in json.loads(cas("branch", "--json", cwd=root).stdout)}


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and ".cas" not in p.parts}


def restored(root: Path, snap: str, dest: Path) -> dict[str, str]:
    cas("--quiet", "restore", snap, "--to", str(dest), cwd=root)
    return tree_digest(dest)


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "tree"
    r.mkdir()
    (r / "f.txt").write_text("zero\n")
    cas("--quiet", "init", cwd=r)
    return r


# -- the engine against restic's rules, transcribed independently --------------------
# internal/restic/snapshot_policy.go (restic 0.17), ApplyPolicy: newest first; a
# bucket rule keeps a snapshot when its bucket differs from the last kept one's,
# or when it is the oldest and the rule has counts left; within-rules count back
# from the newest snapshot not in the future, strictly after the cutoff.

UNIT_NAMES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def restic_bucket(unit: str, t_ns: int, tz, nr: int) -> int:
    d = datetime.fromtimestamp(t_ns // NS, tz)
    if unit == "last":
        return nr
    if unit == "hourly":
        return d.year * 1000000 + d.month * 10000 + d.day * 100 + d.hour
    if unit == "daily":
        return d.year * 10000 + d.month * 100 + d.day
    if unit == "weekly":
        year, week, _ = d.isocalendar()
        return year * 100 + week
    if unit == "monthly":
        return d.year * 100 + d.month
    return d.year


def restic_apply(times, counts, within_h, within_unit_h, tz, now_ns) -> set[int]:
    latest = max((t for t in times if t < now_ns), default=None)
    cutoff = (lambda h: None if latest is None else latest - h * 3600 * NS)
    counted = {u: [n, None] for u, n in counts.items() if n}
    last_within = {u: None for u in within_unit_h}
    keep = set()
    for nr, t in enumerate(times):
        if within_h is not None and (cutoff(within_h) is None or t > cutoff(within_h)):
            keep.add(nr)
        for u in UNIT_NAMES:
            b = counted.get(u)
            if b and (b[0] > 0 or b[0] == -1):
                val = restic_bucket(u, t, tz, nr)
                if val != b[1] or nr == len(times) - 1:
                    keep.add(nr)
                    b[1] = val
                    b[0] -= b[0] > 0
        for u, h in within_unit_h.items():
            if cutoff(h) is None or t > cutoff(h):
                val = restic_bucket(u, t, tz, nr)
                if val != last_within[u]:
                    keep.add(nr)
                    last_within[u] = val
    return keep


ZONES = ("UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Chatham",
         "Europe/Dublin", "America/St_Johns", "Pacific/Apia", "Africa/Casablanca",
         "Europe/Amsterdam", "Asia/Kathmandu")
# DST changes (US spring and fall 2021, Lord Howe's half hour, Samoa skipping
# 2011-12-30), the epoch, and a time before it.
ANCHORS = (1615705200, 1636264800, 1617458400, 1325152800, 1711846800, 0, -2_000_000_000)


@st.composite
def histories(draw):
    anchor = draw(st.sampled_from(ANCHORS))
    span = draw(st.sampled_from([120, 7200, 86400 * 3, 86400 * 60, 86400 * 800]))
    times = sorted((anchor + draw(st.integers(-span, span))) * NS + draw(st.integers(0, NS - 1))
                   for _ in range(draw(st.integers(1, 40))))[::-1]
    counts = {u: draw(st.sampled_from([None, None, 1, 2, 3, 7, ALL])) for u in UNIT_NAMES}
    within_h = draw(st.sampled_from([None, None, 1, 5, 30, 24 * 9]))
    units = draw(st.sets(st.sampled_from(UNIT_NAMES[1:])))
    within_unit_h = {u: draw(st.sampled_from([1, 3, 50, 24 * 40])) for u in units}
    now = draw(st.sampled_from([times[0] + NS, times[-1], times[len(times) // 2] + 1]))
    return times, counts, within_h, within_unit_h, draw(st.sampled_from(ZONES)), now


def _policy(counts, within_h, within_unit_h) -> Policy:
    return Policy(**{f"keep_{u}": n for u, n in counts.items() if n is not None},
                  keep_within=Duration(hours=within_h) if within_h else None,
                  **{f"keep_within_{u}": Duration(hours=h) for u, h in within_unit_h.items()})


def _expected(policy, times, counts, within_h, within_unit_h, tz, now) -> set[int]:
    if policy.is_empty:
        return set(range(len(times)))
    return restic_apply(times, counts, within_h, within_unit_h, tz, now) or {0}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(histories())
def test_engine_agrees_with_restic_in_odd_zones_and_across_dst(case):
    times, counts, within_h, within_unit_h, zone, now = case
    tz = ZoneInfo(zone)
    policy = _policy(counts, within_h, within_unit_h)
    kept = set(keep_reasons(times, policy, tz, now))
    assert kept == _expected(policy, times, counts, within_h, within_unit_h, tz, now), \
        (policy.describe(), zone)


@settings(max_examples=max(EXAMPLES // 3, 30), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(histories())
def test_engine_in_local_time_agrees_with_restic(case):
    """tz=None (what the command line uses) reads the C library's local time."""
    times, counts, within_h, within_unit_h, zone, now = case
    old = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        policy = _policy(counts, within_h, within_unit_h)
        kept = set(keep_reasons(times, policy, None, now))
    finally:
        os.environ["TZ"] = old if old is not None else "UTC"
        time.tzset()
    assert kept == _expected(policy, times, counts, within_h, within_unit_h, ZoneInfo(zone), now)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(histories(), st.sampled_from([1, 10, 60, 1440]), st.sampled_from([None, 30, 600, 20000]))
def test_keep_every_is_the_newest_of_each_local_interval(case, every_min, within_min):
    """keep_every's rule, brute force: the newest of each run of snapshots
    sharing a local interval (wall clock seconds from a Monday // interval),
    among those after the newest minus WITHIN."""
    times, _, _, _, zone, now = case
    if within_min is not None and within_min < every_min:
        within_min = every_min
    tz = ZoneInfo(zone)
    tier = Tier(Duration(minutes=every_min), Duration(minutes=within_min) if within_min else None)
    kept = set(keep_reasons(times, Policy(keep_every=(tier,)), tz, now))
    latest = max((t for t in times if t < now), default=None)
    cutoff = None if within_min is None or latest is None else latest - within_min * 60 * NS
    expected, previous = set(), object()
    for i, t in enumerate(times):
        if cutoff is not None and t <= cutoff:
            break
        seconds = t // NS
        local = seconds + int(datetime.fromtimestamp(seconds, tz).utcoffset().total_seconds())
        key = (local + 3 * 86400) // (every_min * 60)
        if key != previous:
            expected.add(i)
            previous = key
    assert kept == (expected or {0})


# -- forks and tags under thinning ---------------------------------------------------------

@pytest.fixture(scope="module")
def three_template(tmp_path_factory) -> tuple[Path, list[str]]:
    base = tmp_path_factory.mktemp("three")
    r = base / "tree"
    r.mkdir()
    cas("--quiet", "init", cwd=r)
    ids = []
    for name, hour in (("a", "09"), ("b", "10"), ("c", "11")):
        (r / "f.txt").write_text(name + "\n")
        ids.append(snapshot(r, f"2025-01-01T{hour}:00Z", "-m", name))
    return r, ids


@pytest.fixture
def three(three_template, tmp_path) -> tuple[Path, list[str]]:
    """main: a (09:00), b (10:00), c (11:00) with different contents; oldest first."""
    template, ids = three_template
    r = tmp_path / "tree"
    shutil.copytree(template, r, symlinks=True)
    return r, ids


def test_thinning_a_branch_keeps_the_snapshot_a_fork_is_on(three, tmp_path):
    root, (a, b, c) = three
    cas("branch", "fork", b, cwd=root)
    r = cas("forget", "--keep-last", "1", cwd=root)
    assert branches(root).get("fork") == b, r.stderr
    assert restored(root, "fork", tmp_path / "out") == {"f.txt": hashlib.sha256(b"b\n").hexdigest()}


def test_thinning_never_changes_what_a_fork_holds(three):
    root, (a, b, c) = three
    cas("tag", "old", a, cwd=root)
    cas("branch", "fork", b, cwd=root)
    cas("forget", "--keep-last", "1", cwd=root)
    assert branches(root).get("fork") in (b, None)  # moved to a: its content changed silently
    assert branches(root).get("fork") == b


def test_tags_survive_rules_and_their_snapshots_restore(three, tmp_path):
    root, (a, b, c) = three
    cas("tag", "keepme", a, cwd=root)
    r = cas("forget", "--keep-last", "1", "--json", cwd=root)
    doc = json.loads(r.stdout)[0]
    assert {row["id"] for row in doc["kept"]} == {a, c}
    cas("gc", "--grace", "0", cwd=root)
    assert restored(root, "keepme", tmp_path / "o") == {"f.txt": hashlib.sha256(b"a\n").hexdigest()}
    assert logged(root) == [c, a]
    cas("verify", "--full", cwd=root)


@pytest.mark.parametrize("rules", [["--keep-tag", "nosuchtag"], ["--keep-within-daily", "1h"],
                                   ["--keep-every", "1min:1min"]])
def test_a_policy_keeping_nothing_keeps_the_newest_and_says_so(three, rules):
    root, (a, b, c) = three
    # the newest snapshot is in the future: within-rules count from b
    (root / "f.txt").write_text("future\n")
    d = snapshot(root, "2999-01-01T00:00Z")
    r = cas("forget", *rules, "--json", cwd=root)
    doc = json.loads(r.stdout)[0]
    kept = [row["id"] for row in doc["kept"]]
    assert kept and kept[0] == d
    if len(kept) == 1:
        assert doc["note"] and "newest" in doc["note"]
    assert set(logged(root)) == set(kept)


def test_gc_after_thinning_frees_forgotten_data_and_keeps_live(root, tmp_path):
    blobs = {}
    for i in range(6):
        data = os.urandom(3000 + i) + f"version {i}".encode()
        (root / "f.txt").write_bytes(data)
        (root / f"big{i}.bin").write_bytes(os.urandom(300_000))  # a chunked file per version
        blobs[snapshot(root, f"2025-01-0{i + 1}T12:00Z")] = tree_digest(root)
        (root / f"big{i}.bin").unlink()
    ids = list(blobs)
    cas("forget", "--keep-last", "2", "--keep-monthly", "1", cwd=root)
    kept = logged(root)
    assert kept == [ids[5], ids[4]]
    gc = json.loads(cas("gc", "--grace", "0", "--json", cwd=root).stdout)
    assert gc["removed_objects"] > 0
    cas("verify", "--full", cwd=root)
    for i, snap in enumerate(kept):
        assert restored(root, snap, tmp_path / f"r{i}") == blobs[snap]
    for snap in ids[:4]:
        r = cas("restore", snap, "--to", str(tmp_path / "gone"), cwd=root, check=False)
        one_line_error(r)


# -- crafted policy files ------------------------------------------------------------------

def _doc(keep) -> str:
    return json.dumps({"type": "policy", "version": 1, "branch": "main", "keep": keep})


CRAFTED = {
    "not-json": lambda p: p.write_text("{not json"),
    "wrong-type": lambda p: p.write_text(_doc({"last": "3"})),
    "negative": lambda p: p.write_text(_doc({"daily": -7})),
    "float": lambda p: p.write_text(_doc({"daily": 1e400})),
    "month-interval": lambda p: p.write_text(_doc({"every": [{"every": "1m"}]})),
    "window-shorter": lambda p: p.write_text(_doc({"every": [{"every": "1h", "within": "10min"}]})),
    "other-branch": lambda p: p.write_text(_doc({"last": 1}).replace('"main"', '"other"')),
    "huge": lambda p: p.write_text(" " * (1 << 20) + _doc({"last": 1})),
    "fifo": lambda p: os.mkfifo(p),
    "directory": lambda p: p.mkdir(),
    "link-to-dev-zero": lambda p: p.symlink_to("/dev/zero"),
    "non-utf8": lambda p: p.write_bytes(b'{"type": "policy\xff"}'),
    "deep-nesting": lambda p: p.write_text("[" * 30000 + "]" * 30000),
    "deep-nesting-in-rules": lambda p: p.write_text(_doc({"tags": 0}).replace("0", "[" * 30000 + "]" * 30000)),
}


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_a_crafted_policy_file_is_a_one_line_error_and_loses_nothing(three, kind):
    root, ids = three
    policies = root / ".cas" / "policies"
    policies.mkdir(exist_ok=True)
    CRAFTED[kind](policies / "main.json")
    commands = [["policy", "show"], ["forget"]]
    if kind in ("fifo", "deep-nesting"):
        commands.append(["maintain", "--verify-sample", "0"])
    for args in commands:
        one_line_error(cas(*args, cwd=root, check=False, timeout=20))
    assert logged(root) == ids[::-1]
    if kind == "directory":
        return  # a rename cannot replace a directory; see the clear test
    # a good policy replaces it, without writing through a link
    cas("policy", "set", "--keep-last", "2", cwd=root)
    assert (policies / "main.json").is_file() and not (policies / "main.json").is_symlink()
    cas("forget", cwd=root)
    assert logged(root) == ids[:0:-1]


@pytest.mark.parametrize("kind", ["not-json", "fifo", "link-to-dev-zero", "directory"])
def test_policy_clear_removes_a_damaged_policy_as_its_error_says(three, kind):
    root, ids = three
    policies = root / ".cas" / "policies"
    policies.mkdir(exist_ok=True)
    CRAFTED[kind](policies / "main.json")
    r = cas("policy", "show", cwd=root, check=False)
    assert "cas policy clear" in r.stderr
    cas("policy", "clear", cwd=root)
    assert not os.path.lexists(policies / "main.json")


# -- SIGKILL of cas maintain -------------------------------------------------------------

def _backdate(store: Path, seconds: float = 7200) -> None:
    """Age every object and pack past gc's grace period."""
    then = time.time() - seconds
    for sub in ("objects", "packs"):
        for p in (store / sub).rglob("*"):
            os.utime(p, (then, then), follow_symlinks=False)


@pytest.fixture(scope="module")
def thinned_template(tmp_path_factory):
    """16 hourly snapshots, each changing small files (many small packs) and
    some a chunked file; a policy keeping a few; objects past gc's grace."""
    base = tmp_path_factory.mktemp("kill")
    r = base / "tree"
    r.mkdir()
    cas("--quiet", "init", cwd=r)
    rng = random.Random(12)
    contents = {}
    for i in range(16):
        for k in range(4):
            (r / f"small{k}.txt").write_bytes(rng.randbytes(rng.randrange(100, 5000)))
        if i % 5 == 0:
            (r / "big.bin").write_bytes(rng.randbytes(400_000))
        snap = snapshot(r, f"2025-03-{1 + i // 24:02d}T{i % 24:02d}:30Z")
        contents[snap] = tree_digest(r)
    cas("policy", "set", "--keep-last", "3", "--keep-daily", "2", "--keep-hourly", "5", cwd=r)
    expected = json.loads(cas("forget", "--dry-run", "--json", cwd=r).stdout)[0]
    kept = [row["id"] for row in expected["kept"]]
    _backdate(r / ".cas")
    return r, contents, kept


def _count(path: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(path))
    except FileNotFoundError:
        return 0


def _packs(store: Path) -> set[str]:
    return {p.name for p in (store / "packs").rglob("*.pack")}


# When to kill: the moment a step's first effect shows on disk, or a random time.
TRIGGERS = {
    "records-going": lambda s, start: _count(s / "snapshots") < start["snapshots"],
    "pack-removed": lambda s, start: not start["packs"] <= _packs(s),
    "pack-added": lambda s, start: bool(_packs(s) - start["packs"]),
    "temp-file": lambda s, start: _count(s / "tmp") > 0,
    "index-compacting": lambda s, start: any(p.name != "data.mdb" and p.name != "lock.mdb"
                                             for p in (s / "index").iterdir()),
}


def _kill_when(root: Path, trigger: str, delay: float) -> tuple[int, bytes]:
    store = root / ".cas"
    start = {"snapshots": _count(store / "snapshots"), "packs": _packs(store)}
    proc = subprocess.Popen([sys.executable, "-m", "cas.cli", "maintain", "--verify-sample", "30"],
                            cwd=root, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() < deadline:
        if trigger in TRIGGERS:
            if TRIGGERS[trigger](store, start):
                break
        elif time.monotonic() - t0 >= delay:
            break
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    return proc.returncode, err


@pytest.mark.parametrize("trigger", ["records-going", "pack-removed", "temp-file", "random"] +
                         (["pack-added", "index-compacting"] if EXAMPLES > 300 else []))
def test_sigkill_of_maintain_at_any_step_loses_nothing(thinned_template, tmp_path, trigger):
    template, contents, kept = thinned_template
    rng = random.Random(int(os.environ.get("CAS_FUZZ_SEED", "7")))
    rounds = int(os.environ.get("CAS_KILL_ROUNDS", "1"))
    for round_ in range(rounds):
        root = tmp_path / f"tree{round_}"
        shutil.copytree(template, root, symlinks=True)
        code, err = _kill_when(root, trigger, rng.uniform(0.3, 0.8))
        assert b"Traceback" not in err, err
        r = cas("verify", "--full", cwd=root, check=False)
        assert r.returncode == 0, (trigger, code, r.stdout, r.stderr)
        listed = logged(root)
        assert set(kept) <= set(listed) and listed[0] == kept[0], trigger
        # the next run finishes the job
        cas("maintain", "--verify-sample", "100", cwd=root)
        assert logged(root) == kept
        cas("verify", "--full", cwd=root)
        for i, snap in enumerate((kept[0], kept[-1])):
            assert restored(root, snap, tmp_path / f"r{round_}-{i}") == contents[snap], snap
        assert len(_packs(root / ".cas")) <= 3  # consolidated


# -- a real watcher thinning while forget, maintain and snapshot run beside it -----------------

def test_watcher_thinning_beside_forget_maintain_and_snapshot(root, tmp_path):
    (root / "live").mkdir()
    first = snapshot(root, "2025-01-01T00:00Z")
    cas("policy", "set", "--keep-last", "6", "--keep-every", "1min", cwd=root)
    cas("tag", "first", first, cwd=root)
    first_tree = restored(root, "first", tmp_path / "first0")
    watcher = subprocess.Popen([sys.executable, "-m", "cas.cli", "watch", "--quiet-period", "0.1s",
                                "--maintain-interval", "0"], cwd=root, env=ENV,
                               stderr=subprocess.PIPE)
    rng = random.Random(3)
    manual = []
    try:
        for i in range(int(os.environ.get("CAS_WATCH_ROUNDS", "8"))):
            (root / "live" / f"f{i % 4}.txt").write_bytes(rng.randbytes(rng.randrange(10, 20000)))
            time.sleep(0.15)
            action = i % 4
            if action == 0:
                r = cas("--quiet", "snapshot", "--allow-empty", "--json", cwd=root, check=False)
                if r.returncode == 0:
                    snap = json.loads(r.stdout)["id"]
                    cas("tag", f"t{i}", snap, cwd=root)
                    manual.append((f"t{i}", restored(root, snap, tmp_path / f"m{i}")))
                else:
                    one_line_error(r)
            elif action == 1:
                cas("forget", "--keep-last", "2", cwd=root)
            elif action == 2:
                r = cas("maintain", "--verify-sample", "50", cwd=root, check=False)
                assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
            else:
                cas("log", "-n", "3", cwd=root)
        assert watcher.poll() is None, watcher.stderr.read()
    finally:
        watcher.send_signal(signal.SIGTERM)
        _, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err[-2000:]
    assert b"Traceback" not in err
    cas("verify", "--full", cwd=root)
    cas("maintain", "--verify-sample", "100", cwd=root)
    cas("verify", "--full", cwd=root)
    assert restored(root, "first", tmp_path / "first1") == first_tree
    for name, tree in manual:
        assert restored(root, name, tmp_path / f"end-{name}") == tree, name
    listed = logged(root)
    assert first in listed
    # the head is the final snapshot and holds the tree as it is
    assert restored(root, "HEAD", tmp_path / "head") == tree_digest(root)
