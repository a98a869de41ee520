"""Symlink races: root must never act outside the target while its directories are swapped.

An unprivileged user who can write in a restore target, a working tree or a
snapshot source exchanges its directories with symbolic links to a
root-only directory, as fast as it can, while root runs cas on it (see
tests/race_support.py). Every attempt must leave everything outside the
target exactly as it was (no file created, deleted or changed in content,
mode, owner or mtime), a snapshot must hold nothing read from outside its
source, and cas must exit 0, 1 or 2 without a traceback. An attempt counts
only if the attacker swapped while cas ran; most attempts must count.

Each case makes a few attempts so the file stays within about a minute;
``CAS_RACE_ATTEMPTS=200 pytest tests/test_races.py`` makes as many as asked.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess

import pytest

from .race_support import (LINKER, NOBODY, ON_CLOSE, SECRET_CONTENT, SECRET_NAME, SWAPPER,
                           Attacker, Attempt, World, attack, attempts, cas, cas_argv, differences,
                           fingerprint, make_secret, make_tree, make_world, remove_world,
                           run_attacked, skip_reason, verdict)

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

DIRS = 10


@pytest.fixture
def world():
    w = make_world()
    yield w
    remove_world(w)


def files(prefix: str, count: int, tag: str = "") -> dict:
    return {f"{prefix}{i:03}": f"{tag}{prefix}{i}\n".encode() for i in range(count)}


def victims(root, names, world: World, beside: bool = False) -> list:
    """(directory, where its stand-in link goes): in the attacker's space or beside it."""
    return [(root / n, (root / f".swap-{n}") if beside else (world.attacker / f"swap-{n}"))
            for n in names]


def hold(attempt: int) -> float:
    """Half the attempts toggle as fast as possible, half keep each state up to 2 ms."""
    return 0.002 * (attempt % 2)


def after_scan(attempt: int, first_deleted_in):
    """Half the checkout attempts start swapping at checkout's first deletion
    (its scan is over), the others at a random moment."""
    return first_deleted_in if attempt % 2 == 0 else None


def run_attempts(world: World, count: int, one_attempt) -> list[Attempt]:
    rng = random.Random(11)
    return [one_attempt(rng, i) for i in range(count)]


# (a) restore into a target the attacker owns, through directories it owns.


def snapshot_twice(world, work, older: dict, newer: dict) -> None:
    """A store holding ``older`` then ``newer`` as two snapshots of ``work``."""
    make_tree(work, older)
    cas(world, "init")
    cas(world, "snapshot", str(work))
    shutil.rmtree(work)
    make_tree(work, newer)
    cas(world, "snapshot", str(work))

def test_restore_into_a_hostile_target_writes_nothing_outside(world):
    names = [f"d{i}" for i in range(DIRS)]
    make_tree(world.base / "src", {n: {**files("f", 150), "sub": files("s", 50)} for n in names}, 0)
    cas(world, "init")
    cas(world, "snapshot", str(world.base / "src"))
    target = world.base / "target"

    def one(rng, i):
        make_secret(world, {"f000": b"bait\n", "sub": files("s", 3, "bait-")})
        shutil.rmtree(target, ignore_errors=True)
        make_tree(target, {n: {} for n in names})
        return attack(world, ["restore", "HEAD", "--to", str(target)],
                      victims(target, names, world), world.base,
                      (target, world.store, world.attacker), rng.uniform(0, 0.2), hold(i))

    problem = verdict(run_attempts(world, attempts(5), one), "restore")
    assert problem is None, problem


# (d) the directory modes and mtimes restore applies last.

def test_restore_never_applies_directory_metadata_through_a_swapped_link(world):
    names = [f"d{i}" for i in range(DIRS)]
    src = world.base / "src"
    make_tree(src, {n: {**files("f", 40), "sub": files("s", 10)} for n in names}, 0)
    recorded = 1_262_304_000_000_000_000   # 2010-01-01
    for n in names:
        for d in (src / n / "sub", src / n):
            os.chmod(d, 0o777)   # the secret directory is 0700: any chmod through a link shows
            os.utime(d, ns=(recorded, recorded))
    cas(world, "init")
    cas(world, "snapshot", str(src))
    target = world.base / "target"

    def one(rng, i):
        make_secret(world, {"sub": {}})
        shutil.rmtree(target, ignore_errors=True)
        make_tree(target, {})
        # The directories are restore's own (root's, 0700): the links go beside them.
        return attack(world, ["restore", "HEAD", "--to", str(target)],
                      victims(target, names, world, beside=True), world.base,
                      (target, world.store, world.attacker), rng.uniform(0, 0.15), hold(i))

    problem = verdict(run_attempts(world, attempts(5), one), "restore (directory metadata)")
    assert problem is None, problem


# (b) checkout deletes from and writes into directories the attacker swaps.

def test_checkout_in_a_hostile_working_tree_touches_nothing_outside(world):
    names = [f"p{i}" for i in range(DIRS)]
    work = world.base / "work"
    older = {n: files("f", 50) for n in names}
    newer = {n: {**files("g", 50), "x": {**files("y", 10), "z": files("y", 5)}} for n in names}
    snapshot_twice(world, work, older, newer)

    def one(rng, i):
        # Bait: the names checkout deletes (files and a whole directory).
        make_secret(world, {**files("g", 5, "bait-"), "x": files("y", 3, "bait-")})
        shutil.rmtree(work, ignore_errors=True)
        make_tree(work, newer)
        return attack(world, ["checkout", "-f", "HEAD~1"], victims(work, names, world),
                      world.base, (work, world.store, world.attacker),
                      0 if i % 2 == 0 else rng.uniform(0, 0.3), hold(i),
                      trigger=after_scan(i, work / "p0"))

    problem = verdict(run_attempts(world, attempts(5), one), "checkout")
    assert problem is None, problem


def test_checkout_removal_of_a_nested_directory_stays_in_the_tree(world):
    """shutil.rmtree(path) resolves every component but the last: a swapped parent is followed."""
    names = [f"p{i}" for i in range(DIRS)]
    work = world.base / "work"
    older = {n: {"keep": b"keep\n"} for n in names}
    newer = {n: {"keep": b"keep\n", "x": {**files("y", 30), "z": files("y", 20)}} for n in names}
    snapshot_twice(world, work, older, newer)

    def one(rng, i):
        make_secret(world, {"x": {**files("y", 3, "bait-"), "z": files("y", 2, "bait-")}})
        shutil.rmtree(work, ignore_errors=True)
        make_tree(work, newer)
        return attack(world, ["checkout", "-f", "HEAD~1"], victims(work, names, world),
                      world.base, (work, world.store, world.attacker),
                      0 if i % 2 == 0 else rng.uniform(0, 0.25), hold(i),
                      trigger=after_scan(i, work / "p0" / "x"))

    problem = verdict(run_attempts(world, attempts(5), one), "checkout (directory removal)")
    assert problem is None, problem


# (c) snapshot of a source the attacker owns.

def snapshot_leaks(world: World, branch: str, check: str) -> list[str]:
    """What of the secret directory the snapshot on ``branch`` holds: names or content."""
    listing = subprocess.run(
        cas_argv(world, "ls", "-r", branch), capture_output=True, cwd=world.base)
    if listing.returncode != 0:
        return []   # no snapshot was recorded: nothing can have leaked into one
    leaks = [f"listed: {line!r}" for line in listing.stdout.splitlines()
             if SECRET_NAME.encode() in line]
    out = world.base / check
    cas(world, "restore", branch, "--to", str(out))
    for dirpath, _, names in os.walk(out):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    if SECRET_CONTENT in f.read():
                        leaks.append(f"secret content recorded as {path}")
    shutil.rmtree(out)
    return leaks


def test_snapshot_of_a_hostile_source_records_nothing_from_outside(world):
    # Many directories: each listing is a chance to list the secret instead.
    names = [f"d{i}" for i in range(40)]
    src = world.base / "src"
    make_tree(src, {n: files("f", 50) for n in names})
    cas(world, "init")

    def one(rng, i):
        make_secret(world)
        branch = f"attempt{i}"   # a branch of its own: no stat cache, every file is read
        # From the moment the scan opens the source, each state held up to
        # 2 ms: a file leaks if its listing, lstat and open all go through
        # the link.
        attempt = attack(world, ["snapshot", "--branch", branch, str(src)],
                         victims(src, names, world), world.base,
                         (src, world.store, world.attacker), rng.uniform(0, 0.01), 0.002,
                         trigger=src, trigger_on="open")
        attempt.damage += snapshot_leaks(world, branch, f"check{i}")
        return attempt

    problem = verdict(run_attempts(world, attempts(5), one), "snapshot")
    assert problem is None, problem


# Holes the first fd-based walks still had, found by reading them as an attacker.

def test_checkout_when_the_working_tree_itself_is_swapped(world):
    """The user owns the directory holding the working tree (a home directory).

    The deletions and writes checkout chose from its scan must land in the
    directory it scanned, whatever the tree's path names by then (resolving
    the path again to delete and to write let them land in the secret).
    """
    home = world.base / "home"
    make_tree(home, {})
    work = home / "work"
    names = [f"p{i}" for i in range(4)]
    older = {n: files("f", 50) for n in names}
    newer = {**files("gone-", 100), **{n: files("g", 50) for n in names}}
    snapshot_twice(world, work, older, newer)

    def one(rng, i):
        make_secret(world, {**files("gone-", 5, "bait-"), "p0": files("g", 5, "bait-")})
        shutil.rmtree(work, ignore_errors=True)
        make_tree(work, newer)
        # No --force: every deletion checkout makes is of content it has stored.
        # The swap starts once checkout deletes (its scan is done) and holds.
        return attack(world, ["checkout", "HEAD~1"], [(work, world.attacker / "swap-work")],
                      world.base, (home, world.store, world.attacker), rng.uniform(0, 0.01),
                      0.05, trigger=work)

    problem = verdict(run_attempts(world, attempts(5), one), "checkout (tree swapped)")
    assert problem is None, problem


def test_checkout_reads_no_ignore_file_from_outside_the_tree(world):
    """Checkout scans through the tree's descriptor; the ignore rules must
    come from that directory too, not from wherever its path names later
    (rules from elsewhere decide which files checkout thinks absent)."""
    home = world.base / "home"
    make_tree(home, {})
    work = home / "work"
    make_tree(work, {f"d{i}": files("f", 100) for i in range(20)})
    old = 1_000_000_000_000_000_000
    for path in work.rglob("*"):
        os.utime(path, ns=(old, old))   # old enough for the stat cache to keep them
    cas(world, "init")
    cas(world, "snapshot", str(work))

    def one(rng, i):
        make_secret(world, {".casignore": b"*\n"})
        # Swapped from the moment checkout opens the tree (it then loads
        # its stat cache of 2,000 entries before it reads the ignore file).
        return attack(world, ["checkout", "HEAD"], [(work, world.attacker / "swap-work")],
                      world.base, (home, world.store, world.attacker), 0, 0.1,
                      watch_opens=True, trigger=work, trigger_on="open")

    problem = verdict(run_attempts(world, attempts(3), one), "checkout (ignore file)")
    assert problem is None, problem


def test_checkout_of_a_tree_replaced_by_a_link_writes_nothing_outside(world):
    """No race at all: the user who owns the tree's parent replaces the tree
    by a link to a root-only directory, then root runs ``checkout -f``."""
    home = world.base / "home"
    make_tree(home, {})
    work = home / "work"
    make_tree(work, {"passwd": b"user's version\n"})
    cas(world, "init")
    cas(world, "snapshot", str(work))
    make_secret(world, {"passwd": b"root's version\n"})
    moved = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sh", "-c",
         'mv "$1" "$1.old" && ln -s "$2" "$1"', "sh", str(work), str(world.secret)],
        capture_output=True)
    assert moved.returncode == 0, moved.stderr
    before = fingerprint(world.base, (home, world.store, world.attacker))
    proc = subprocess.run(cas_argv(world, "checkout", "-f", "HEAD"), cwd=world.base,
                          capture_output=True)
    changed = differences(before, fingerprint(world.base, (home, world.store, world.attacker)))
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert not changed, changed


def test_snapshot_opens_nothing_outside_the_source(world):
    """No open reaches outside the source, not even one refused afterwards
    by the (dev, ino) check: opening a device has effects of its own. Files
    opened by their joined path did reach the secret."""
    names = [f"d{i}" for i in range(DIRS)]
    src = world.base / "src"
    make_tree(src, {n: files("f", 200) for n in names})
    cas(world, "init")

    def one(rng, i):
        make_secret(world, files("f", 200, "bait-"))   # the names the scan opens
        return attack(world, ["snapshot", "--branch", f"attempt{i}", str(src)],
                      victims(src, names, world), world.base,
                      (src, world.store, world.attacker), rng.uniform(0, 0.15), hold(i),
                      watch_opens=True)

    problem = verdict(run_attempts(world, attempts(3), one), "snapshot (opens)")
    assert problem is None, problem


def sqlite_db(path, rows: list[str]) -> bytes:
    """The bytes of a small SQLite database holding ``rows`` (made at ``path``, then removed)."""
    db = sqlite3.connect(path)
    db.execute("create table t (v text)")
    db.executemany("insert into t values (?)", [(r,) for r in rows])
    db.commit()
    db.close()
    data = path.read_bytes()
    path.unlink()
    return data


def test_snapshot_sqlite_backup_copies_no_database_from_outside(world):
    """--sqlite-backup (and the watcher) hand SQLite a joined path, after a stat.

    The attacker swaps a directory the moment a database in it has been
    read for its header, and back 2 ms later.
    """
    names = [f"d{i}" for i in range(4)]
    dbs = [f"db{i}.db" for i in range(5)]
    public = sqlite_db(world.base / "public.db", ["public"] * 50)
    secret = sqlite_db(world.base / "secret.db", [SECRET_CONTENT.decode() + "row"] * 50)
    src = world.base / "src"
    make_tree(src, {n: {d: public for d in dbs} for n in names})
    cas(world, "init")

    def one(rng, i):
        make_secret(world, {d: secret for d in dbs})
        branch = f"attempt{i}"
        cfg = {"pairs": [(os.fspath(v), os.fspath(l)) for v, l in victims(src, names, world)],
               "link_to": os.fspath(world.secret), "suffix": ".db", "nth": 1, "hold": 0.002}
        attempt = run_attacked(world, ["snapshot", "--sqlite-backup", "--branch", branch, str(src)],
                               ON_CLOSE, cfg, world.base, (src, world.store, world.attacker))
        attempt.damage += snapshot_leaks(world, branch, f"check{i}")
        return attempt

    problem = verdict(run_attempts(world, attempts(5), one), "snapshot --sqlite-backup")
    assert problem is None, problem


def test_restore_of_links_never_changes_a_file_hard_linked_in_their_place(world):
    """A link has no descriptor: its owner and times are set by name. Where
    the user can write, that name can become a hard link to any file the
    user may write (root's, here) before root changes it; root handed such
    a file to the link's recorded owner while links were made in place."""
    src = world.base / "src"
    spec = {f"a{i}": files("f", 120) for i in range(4)}   # keeps restore's workers busy
    make_tree(src, spec)
    for i in range(400):
        os.symlink(f"target-{i}", src / f"link{i:03}")
        os.chown(src / f"link{i:03}", NOBODY, NOBODY, follow_symlinks=False)
    cas(world, "init")
    cas(world, "snapshot", str(src))
    target = world.base / "target"
    shared = world.base / "shared-file"   # root's, writable by all: linkable by the attacker

    def one(rng, i):
        make_secret(world)
        shared.write_bytes(b"root's file\n")
        os.chmod(shared, 0o666)
        os.utime(shared, ns=(10**18, 10**18))
        shutil.rmtree(target, ignore_errors=True)
        make_tree(target, {})
        cfg = {"dirs": [os.fspath(target)], "victim": os.fspath(shared),
               "prefix": ".cas-restore-"}
        return run_attacked(world, ["restore", "HEAD", "--to", str(target)], LINKER, cfg,
                            world.base, (target, world.store, world.attacker))

    problem = verdict(run_attempts(world, attempts(3), one), "restore (hard links)")
    assert problem is None, problem


def test_walks_under_attack_leak_no_file_descriptors(world):
    """Every error path of the fd walks (a link where a directory was, a
    directory replaced since it was listed) closes what it opened."""
    from cas.model.history import History
    from cas.ops.restore import restore
    from cas.ops.scan import scan
    from cas.storage.store import Store

    names = [f"d{i}" for i in range(DIRS)]
    src, target = world.base / "src", world.base / "target"
    make_tree(src, {n: {**files("f", 30), "sub": files("s", 10)} for n in names})
    cas(world, "init")
    cas(world, "snapshot", str(src))
    make_secret(world)
    make_tree(target, {n: {} for n in names})
    swapped = [*victims(target, names, world), *victims(src, names, world, beside=True)]
    cfg = {"pairs": [(os.fspath(v), os.fspath(l)) for v, l in swapped],
           "link_to": os.fspath(world.secret), "delay": 0, "hold": 0}
    problems = 0
    with Store.open(str(world.store)) as store:
        history = History(store)
        snap = history.branch_head("src")
        restore(history, snap, str(target))   # opens what stays open (index, a pack)
        open_before = len(os.listdir("/proc/self/fd"))
        attacker = Attacker(world, SWAPPER, cfg)
        try:
            for _ in range(attempts(5)):
                problems += len(restore(history, snap, str(target)).problems)
                problems += len(scan(store, str(src), "src", None).problems)
        finally:
            attacker.stop()
        open_after = len(os.listdir("/proc/self/fd"))
    assert problems > 0, "the attacker never got in the way: nothing was tested"
    assert open_after <= open_before
