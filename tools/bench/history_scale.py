#!/usr/bin/env python3
"""History at scale: cas with 100,000 recorded snapshots of a 200-file tree.

Usage::

    python3 tools/bench/history_scale.py [--snapshots 100000] [--variants 100]
        [--dirs /dev/shm/cas-hscale,/var/tmp/cas-hscale] [--cas "CMD"] [--json OUT]
        [--keep]

For each directory (tmpfs and ext4 by default) a store is built, untimed,
with library calls: a real ``cas snapshot`` of a 200-file tree (10
directories of 20 files), then N-1 snapshots that differ from their parent
by their time (``--interval`` seconds apart) and by the content of one
small file, which cycles through ``--variants`` versions, so that the
snapshots share all but a few trees (2 x variants + 9 distinct trees in
all). The records are written as ``History.record`` writes them (manifest
object, ``snapshots/<id>.json``, the branch ref), in bulk: files first,
then one sync, then the index mirror rebuilt from the files as
``cas index rebuild`` does. Then each command is timed as a child process
(peers.run_timed: wall time, user+sys CPU of the whole process tree):

    log          cas log -n 20
    restore-at   cas restore --at TIME --to DIR      (TIME: the middle of history)
    snapshot     cas snapshot of the tree with one file changed, in the N-snapshot
                 store and in a 10-snapshot store built the same way
    verify       cas verify
    gc           cas gc --dry-run
    forget       cas forget --keep-daily 7 --dry-run

A command that this cas does not have (exit 2 with "No such command" or
"no such option") is reported as missing, not as a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cas.durable import fsync_dir  # noqa: E402
from cas.model.history import SNAPSHOTS, History  # noqa: E402
from cas.model.refs import HEADS  # noqa: E402
from cas.model.tree import Tree  # noqa: E402
from cas.ops.snapshot import take_snapshot  # noqa: E402
from cas.storage.store import Store  # noqa: E402

DIRS = 10
FILES_PER_DIR = 20
LIVE_FILE = "d00/live.txt"
BRANCH = "main"
START_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
FLUSH_EVERY = 5000


def make_tree(source: Path) -> None:
    """200 small files in 10 directories; d00/live.txt is the one that changes."""
    for d in range(DIRS):
        sub = source / f"d{d:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(FILES_PER_DIR - (1 if d == 0 else 0)):
            (sub / f"f{f:02d}.txt").write_bytes(f"file {d}/{f}\n".encode() * (20 + f))
    (source / LIVE_FILE).write_bytes(b"live 0\n")


def build_store(root: Path, snapshots: int, variants: int = 100,
                interval_s: int = 30) -> tuple[Path, Path, list[int]]:
    """A store with ``snapshots`` recorded snapshots; returns (store, source, times_ns)."""
    source, store_path = root / "tree", root / "store"
    make_tree(source)
    Store.init(str(store_path)).close()
    with Store.open(str(store_path)) as store:
        history = History(store)
        first = take_snapshot(history, str(source), BRANCH).snapshot
        first = replace(first, time_ns=START_NS)  # recorded again below, at its place in time
        roots = _variant_trees(history, first.tree, variants)
        times = _record_bulk(history, first, roots, snapshots, interval_s * 10**9)
    return store_path, source, times


def _variant_trees(history: History, root_id, variants: int) -> list:
    """Root tree ids of the tree with d00/live.txt at each of its versions."""
    root = history.load_tree(root_id)
    d00 = root.get(b"d00")
    sub = history.load_tree(d00.oid)
    live = sub.get(b"live.txt")
    roots = []
    with history.store.writer() as w:
        for v in range(variants):
            data = f"live {v}\n".encode()
            entry = replace(live, oid=w.put_bytes(data), size=len(data))
            sub_v = Tree.build([entry if e.name == b"live.txt" else e for e in sub.entries])
            sub_id = w.put_bytes(sub_v.to_json())
            root_v = Tree.build([replace(e, oid=sub_id) if e.name == b"d00" else e
                                 for e in root.entries])
            roots.append(w.put_bytes(root_v.to_json()))
    return roots


def _record_bulk(history: History, first, roots: list, count: int, step_ns: int) -> list[int]:
    """Write ``count`` snapshot records as History.record would, without a
    fsync and an index transaction per record (that is what makes 100,000
    take minutes): objects flushed and indexed first, then the records,
    then one sync, then the index mirror and the branch ref."""
    store = history.store
    directory = os.path.join(store.path, SNAPSHOTS)
    for name in os.listdir(directory):  # the real first snapshot is recorded again, timed
        os.unlink(os.path.join(directory, name))
    parent, times, pending = None, [], []
    writer = store.writer()
    for i in range(count):
        snap = replace(first, tree=roots[i % len(roots)], parents=(parent,) if parent else (),
                       time_ns=START_NS + i * step_ns, oid=None)
        data = snap.to_json()
        parent = writer.put_bytes(data)
        pending.append((parent, data))
        times.append(snap.time_ns)
        if len(pending) >= FLUSH_EVERY or i == count - 1:
            writer.flush()
            _write_records(directory, pending, store.layout.modes.file)
            pending = []
    writer.close()
    # One sync for all records (a fsync each took minutes on ext4), so that
    # none of their writeback lands inside a timed step.
    os.sync()
    fsync_dir(directory)
    history.reload_index()
    history.refs.set(HEADS + BRANCH, parent)
    return times


def _write_records(directory: str, records: list, mode: int) -> None:
    for oid, data in records:
        fd = os.open(os.path.join(directory, oid.hex + ".json"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


# -- timing ----------------------------------------------------------------

def _steps(cas: str, store: Path, source: Path, times: list[int], work: Path) -> list[tuple]:
    middle = times[len(times) // 2] // 10**9
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(middle + 1))
    s = f"{cas} --store {store}"
    return [
        ("log", f"{s} log -n 20"),
        ("restore-at", f"{s} restore --at {at} --to {work / 'restored'}"),
        ("snapshot", f"echo changed-$RANDOM > {source / LIVE_FILE} && "
                     f"{s} snapshot {source} -m bench"),
        ("verify", f"{s} verify"),
        ("gc", f"{s} gc --dry-run"),
        ("forget", f"{s} forget --keep-daily 7 --dry-run"),
    ]


def _missing(log: Path) -> bool:
    text = log.read_text(errors="replace")
    return "No such command" in text or "no such option" in text.lower()


def measure(cas: str, root: Path, snapshots: int, variants: int, only: set[str] | None) -> dict:
    import peers  # the shared measuring machinery (wall time, rusage of the tree)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    store, source, times = build_store(root, snapshots, variants)
    build_s = time.perf_counter() - t0
    rows = {}
    for name, command in _steps(cas, store, source, times, root):
        if only and name not in only:
            continue
        shutil.rmtree(root / "restored", ignore_errors=True)
        wall, usage, rc = peers.run_timed(command, {}, root / f"{name}.log")
        cpu = usage.ru_utime + usage.ru_stime
        status = "ok" if rc == 0 else ("missing" if rc == 2 and _missing(root / f"{name}.log")
                                       else f"exit {rc}")
        rows[name] = {"command": command, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                      "status": status}
        print(f"  {name:<11} {wall:7.3f} s wall {cpu:7.3f} s cpu  {status}", flush=True)
    return {"fs": peers.fs_type(root), "snapshots": snapshots, "build_s": round(build_s, 1),
            "steps": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snapshots", type=int, default=100_000)
    ap.add_argument("--variants", type=int, default=100)
    ap.add_argument("--dirs", default="/dev/shm/cas-hscale,/var/tmp/cas-hscale")
    ap.add_argument("--cas", default=str(REPO_ROOT / ".venv" / "bin" / "cas"))
    ap.add_argument("--only", default="", help="comma-separated step names")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="leave the stores for inspection")
    args = ap.parse_args(argv)
    only = set(filter(None, args.only.split(","))) or None
    results = []
    for d in filter(None, args.dirs.split(",")):
        root = Path(d)
        for n in (args.snapshots, 10):
            print(f"{root} ({n} snapshots):", flush=True)
            steps = only if n != 10 else {"snapshot"} & (only or {"snapshot"})
            results.append({"dir": str(root), **measure(args.cas, root / f"n{n}", n,
                                                        args.variants, steps)})
            if not args.keep:
                shutil.rmtree(root / f"n{n}", ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
